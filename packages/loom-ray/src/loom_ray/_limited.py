"""A backend that takes a pipeline-wide permit before each call.

Wrapping the backend (Loom's public ``Backend`` contract) rather than replacing the loom's own
limiter keeps loom-core unchanged: the loom still retries, backs off and pauses its own workers
on a 429; every attempt it makes (first call and retries alike) passes here and takes a permit
from the shared buckets. A 429 with ``Retry-After`` also pauses the shared buckets, so every
actor of the pipeline stops, not only the one that met it.
"""

from __future__ import annotations

from typing import Any

from loom_core import estimate_tokens
from loom_protocol import Backend, BackendError, ChatRequest, ChatResponse, ErrorCode

from ._permits import PermitPool

__all__ = ["LimitedBackend"]

# The longest pause one 429 may impose on the whole pipeline (the loom's own max_retry_wait
# decides whether its task waits at all).
_MAX_SHARED_PAUSE = 60.0


class LimitedBackend:
    """``inner`` behind the shared permits of ``pool``.

    Args:
        inner: The backend that makes the calls.
        model: The model name ``inner`` expects (``resolve_backend``'s, prefix removed).
        pool: This actor's permits.
        pause: Called with the seconds of a provider's ``Retry-After`` on a 429.
        count_tokens: Whether a tpm limit is set (estimating tokens costs a serialisation).
    """

    def __init__(
        self,
        inner: Backend,
        model: str,
        pool: PermitPool,
        pause: Any,
        *,
        count_tokens: bool,
    ) -> None:
        self.inner = inner
        self.model = model
        self.pool = pool
        self._pause = pause
        self._count_tokens = count_tokens
        # build_engine checks generation parameters against what the backend declares.
        for name in ("generation_params", "parameter_ranges"):
            if hasattr(inner, name):
                setattr(self, name, getattr(inner, name))

    async def acomplete(self, request: ChatRequest) -> ChatResponse:
        """Take a permit (and the request's estimated tokens), then call ``inner``."""
        estimate = estimate_tokens(request) if self._count_tokens else 0
        await self.pool.acquire(estimate)
        if request.model != self.model:
            request = request.model_copy(update={"model": self.model})
        try:
            response = await self.inner.acomplete(request)
        except BackendError as exc:
            if exc.code is ErrorCode.PROVIDER_RATE_LIMITED and exc.retry_after:
                self.pool.drop()
                self._pause(min(float(exc.retry_after), _MAX_SHARED_PAUSE))
            raise
        if estimate and response.usage is not None:
            self.pool.record_usage(estimate, response.usage.total_tokens)
        return response

    async def aclose(self) -> None:
        """Close ``inner`` (on the running loop)."""
        await self.inner.aclose()

    def __repr__(self) -> str:
        return f"LimitedBackend({self.inner!r})"
