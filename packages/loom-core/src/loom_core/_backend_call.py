"""Calling the backend for one request, with transport retries.

A failed call is retried while the backend says it may be (``retryable``), up to
``max_retries`` transport failures per task, after an exponential backoff that honours the
provider's ``Retry-After``. A 429 with ``Retry-After`` pauses every worker of the loom (the
shared :class:`~._ratelimit.RateLimiter`); a wait above ``max_retry_wait`` is refused, and the
task fails at once. Every call goes through the rate limiter first.

An adaptive loom (the default) also holds each call to a slot of its
:class:`~._adaptive.ConcurrencyLimit`, tells it how the call went, and has its rate limiter
learn the provider's limits from the rate-limit headers of every answer and refusal (an
:class:`~loom_backends.EndpointPool` the loom adapted learns them per endpoint instead, and its
calls wait for an endpoint's budget before their timeout starts).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import traceback
from collections.abc import Awaitable, Callable

from loom_backends import EndpointPool
from loom_protocol import (
    Backend,
    BackendError,
    ChatRequest,
    ChatResponse,
    Error,
    ErrorCode,
    RateLimitInfo,
)

from ._adaptive import ConcurrencyLimit, is_overload
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
        concurrency: The adaptive concurrency limit; ``None`` for a loom with
            ``adaptive=False``, which also ignores the providers' rate-limit headers.

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
        concurrency: ConcurrencyLimit | None = None,
    ) -> None:
        self.backend = backend
        self.concurrency = concurrency
        self.limiter = limiter
        self.timeout = timeout
        # A safety net for backends without a timeout of their own (callables, SDK clients);
        # HTTP backends time out first, with their own, more precise error.
        self._limit = None if timeout is None else timeout + 5.0
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.retries = 0
        self._rng = random.Random()
        self._sent = 0  # calls started (adaptive looms): what a rate-limit report predates
        # A pool pacing each endpoint to its own headers learns them itself (a loom-wide
        # bucket would pace every endpoint to the last one's report); its calls wait for an
        # endpoint's budget before their timeout starts.
        self._ready: Callable[[ChatRequest], Awaitable[None]] | None = (
            backend.ready if isinstance(backend, EndpointPool) and backend.paced else None
        )
        #: ``await call(request, attempts, task_id)``: the backend's answer to ``request``,
        #: retried as the module docstring says; every call is counted in ``attempts``, with
        #: its usage. Raises BackendError when the task must fail with it: not retryable, out
        #: of retries, or asking for a wait above ``max_retry_wait`` (its message says so).
        #: Chosen once here, so that a fixed loom runs exactly the code it ran before.
        self.call: Callable[[ChatRequest, Attempts, str], Awaitable[ChatResponse]] = (
            self._call_fixed if concurrency is None else self._call_adaptive
        )

    async def _call_adaptive(
        self, request: ChatRequest, attempts: Attempts, task_id: str
    ) -> ChatResponse:
        """``call`` of an adaptive loom: a slot of the concurrency limit per call, and
        the provider's rate-limit headers learned."""
        limiter, gate = self.limiter, self.concurrency
        assert gate is not None  # chosen in __init__ for that case only
        while True:
            estimate = limiter.tokens_for(request)
            if not gate.try_enter():
                await gate.enter()
            epoch, latency, overload = gate.epoch, None, False
            self._sent += 1
            serial = self._sent
            try:
                await limiter.acquire(estimate)
                if self._ready is not None:
                    await self._ready(request)
                sent = time.perf_counter()
                try:
                    async with asyncio.timeout(self._limit):
                        response = await self.backend.acomplete(request)
                except Exception as exc:
                    attempts.add(None)
                    error = self._as_backend_error(exc)
                    overload = is_overload(error)
                    if error.rate_limit is not None and self._ready is None:
                        self._learn(error.rate_limit, sent, serial)
                    delay = self._retry_delay(error, attempts, task_id)
                else:
                    latency = time.perf_counter() - sent
                    attempts.add(response.usage)
                    if response.rate_limit is not None and self._ready is None:
                        self._learn(response.rate_limit, sent, serial)
                    if estimate and response.usage is not None:
                        limiter.record_usage(estimate, response.usage.total_tokens)
                    return response
            finally:
                gate.leave(epoch, latency, overload)
            await asyncio.sleep(delay)

    async def _call_fixed(
        self, request: ChatRequest, attempts: Attempts, task_id: str
    ) -> ChatResponse:
        """``call`` with ``adaptive=False``: exactly the fixed behaviour of before."""
        # Estimating tokens serialises the request: only worth it under a tpm limit.
        estimate = estimate_tokens(request) if self.limiter.tpm is not None else 0
        limiter = self.limiter
        while True:
            await limiter.acquire(estimate)
            if self._ready is not None:  # a fallback's paced pool, or one another loom adapted
                await self._ready(request)
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

    def learned(self) -> str:
        """The provider's limits learned so far, for the progress bar (``""``: none).

        A pool paced per endpoint shows each endpoint's, ``" | "`` between them.
        """
        backend = self.backend
        if self._ready is not None and isinstance(backend, EndpointPool):
            return " | ".join(e.limits for e in backend.status() if e.limits)
        return self.limiter.learned()

    def _learn(self, info: RateLimitInfo, sent: float, serial: int) -> None:
        learned = self.limiter.learn(info, time.perf_counter() - sent, self._sent - serial)
        if learned is not None:
            _pause_log.info("the provider reports its limits: %s; pacing to them", learned)

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
