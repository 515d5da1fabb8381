"""Calling the backend for one request, with transport retries.

A failed call is retried while the backend says it may be (``retryable``), up to
``max_retries`` transport failures per task, after an exponential backoff that honours the
provider's ``Retry-After``. A 429 with ``Retry-After`` pauses every worker of the loom (the
shared :class:`~._ratelimit.RateLimiter`); a wait above ``max_retry_wait`` is refused, and the
task fails at once. Every call goes through the rate limiter first.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import traceback

from loom_protocol import Backend, BackendError, ChatRequest, ChatResponse, Error, ErrorCode

from ._attempts import Attempts
from ._ratelimit import RateLimiter, estimate_tokens
from ._retry import asked_wait, backoff_delay

__all__ = ["BackendCaller"]

# What the engine does on its own is logged (never an input's content, never a credential).
_retry_log = logging.getLogger("loom.retry")
_pause_log = logging.getLogger("loom.ratelimit")


class _Status:
    """`` (HTTP 429)``, or nothing without a status: formatted only if the record is emitted."""

    __slots__ = ("status",)

    def __init__(self, status: int | None) -> None:
        self.status = status

    def __str__(self) -> str:
        return "" if self.status is None else f" (HTTP {self.status})"


class BackendCaller:
    """Sends requests to a backend under the loom's rate limiter, retrying transport failures.

    Args:
        backend: The backend.
        limiter: The loom's rate limiter (shared by every worker).
        timeout: The loom's timeout in seconds, or ``None``; calls get 5 s more as a safety net.
        max_retries: Transport failures allowed per task before it fails.
        max_retry_wait: The longest wait accepted, in seconds (see :func:`~._retry.asked_wait`).

    Attributes:
        retries: Calls made again after a transport failure, over the caller's life.
    """

    def __init__(
        self,
        *,
        backend: Backend,
        limiter: RateLimiter,
        timeout: float | None,
        max_retries: int,
        max_retry_wait: float,
    ) -> None:
        self.backend = backend
        self.limiter = limiter
        self.timeout = timeout
        # A safety net for backends without a timeout of their own (callables, SDK clients);
        # HTTP backends time out first, with their own, more precise error.
        self._limit = None if timeout is None else timeout + 5.0
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.retries = 0
        self._rng = random.Random()

    async def call(self, request: ChatRequest, attempts: Attempts, task_id: str) -> ChatResponse:
        """The backend's answer to ``request``, retried as the module docstring says.

        Every call is counted in ``attempts``, with its usage.

        Raises:
            BackendError: The task must fail with this error: not retryable, out of retries,
                or asking for a wait above ``max_retry_wait`` (then its message says so).
        """
        # Estimating tokens serialises the request: only worth it under a tpm limit.
        estimate = estimate_tokens(request) if self.limiter.tpm is not None else 0
        limiter = self.limiter
        while True:
            await limiter.acquire(estimate)
            try:
                async with asyncio.timeout(self._limit):
                    response = await self.backend.acomplete(request)
            except Exception as exc:
                attempts.add(None)
                delay = self._retry_delay(self._as_backend_error(exc), attempts, task_id)
            else:
                attempts.add(response.usage)
                if estimate and response.usage is not None:
                    limiter.record_usage(estimate, response.usage.total_tokens)
                return response
            await asyncio.sleep(delay)

    def _as_backend_error(self, exc: Exception) -> BackendError:
        """What a failed call raised, as a BackendError (called while handling ``exc``)."""
        if isinstance(exc, TimeoutError):
            return BackendError(
                Error(
                    code=ErrorCode.PROVIDER_TIMEOUT,
                    message=f"no answer within {self._limit:g} s",
                    retryable=True,
                )
            )
        if isinstance(exc, BackendError):
            return exc
        # Backends must raise BackendError; anything else is the backend's bug, not retried.
        return BackendError(
            Error(
                code=ErrorCode.PROVIDER_ERROR,
                message=f"backend raised {type(exc).__name__}: {exc}",
                detail=traceback.format_exc(),
            )
        )

    def _retry_delay(self, exc: BackendError, attempts: Attempts, task_id: str) -> float:
        """Seconds to wait before calling again after ``exc``; raises when not calling again."""
        attempts.transport_failures += 1
        failures = attempts.transport_failures
        if not exc.retryable:
            raise exc
        asked = asked_wait(exc.retry_after)
        if asked is not None and asked > self.max_retry_wait:
            # Waiting that long would stall the task (and, for a 429, the whole loom): this
            # task fails now, saying what was asked; a later run retries it.
            raise self._refused_wait(exc, asked, task_id)
        if failures > self.max_retries:
            _retry_log.warning(
                "task %s failed after %d attempts: %s%s; giving up",
                task_id[:12],
                attempts.calls,
                exc.code.value,
                _Status(exc.status),
            )
            raise exc
        # One 429 with Retry-After pauses every worker of the loom, not only this one
        # (reported by the 429 that starts or extends the pause).
        if exc.code is ErrorCode.PROVIDER_RATE_LIMITED and asked and self.limiter.pause(asked):
            _pause_log.warning(
                "rate limited%s with Retry-After %.3g s: every worker of this loom "
                "pauses that long before its next call",
                _Status(exc.status),
                asked,
            )
        delay = backoff_delay(
            failures,
            retry_after=asked,
            rng=self._rng,
            max_wait=self.max_retry_wait,
        )
        self.retries += 1
        _retry_log.info(
            "task %s: %s%s; retry %d of %d in %.2f s",
            task_id[:12],
            exc.code.value,
            _Status(exc.status),
            failures,
            self.max_retries,
            delay,
        )
        return delay

    def _refused_wait(self, exc: BackendError, asked: float, task_id: str) -> BackendError:
        wait = f"{asked:g} s" if math.isfinite(asked) else "without limit"
        said = (
            f"the provider asked to wait {wait}, more than "
            f"max_retry_wait={self.max_retry_wait:g} s; not waiting"
        )
        _retry_log.warning("task %s: %s%s; giving up", task_id[:12], said, _Status(exc.status))
        return BackendError(
            exc.error.model_copy(update={"message": f"{said} ({exc.error.message})"})
        )
