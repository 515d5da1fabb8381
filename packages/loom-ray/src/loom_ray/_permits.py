"""One actor's side of the pipeline-wide limit: permits fetched in bulk, handed out locally.

A :class:`PermitPool` lives on a ``LoomMapper``'s event loop. A call takes one request permit
(and its estimated tokens) from the pool; when the pool is short, one fetch (never several at
once: the others wait for it) asks the shared buckets for the shortfall plus a tenth of a
second's worth of the limit. Permits left unused for :data:`PERMIT_LIFETIME` are dropped, so
an actor that idles cannot save up a burst: over any window, requests sent stay within what
the buckets granted during that window and the lifetime before it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable

from ._bucket import BucketGrant

__all__ = ["PERMIT_LIFETIME", "PermitPool", "TakeFn"]

#: Seconds a fetched permit stays usable.
PERMIT_LIFETIME = 1.0
#: A fetch asks for this many seconds' worth of the limit (at least one request).
_BULK_SECONDS = 0.1

#: ``take(need_requests, want_requests, need_tokens, want_tokens)`` of the shared buckets.
TakeFn = Callable[[int, int, int, int], Awaitable[BucketGrant]]


class PermitPool:
    """Request and token permits of one actor, fetched in bulk from the shared buckets.

    Args:
        take: Asks the shared buckets for permits (a Ray actor call, or a plain coroutine in
            tests).
        rpm: The pipeline's request limit, or ``None`` (requests are then not counted).
        tpm: The pipeline's token limit, or ``None`` (tokens are then not counted).
        clock: A monotonic clock.

    Attributes:
        fetches: Round trips made to the shared buckets.
    """

    def __init__(
        self,
        take: TakeFn,
        rpm: float | None,
        tpm: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._take = take
        self._count_requests = rpm is not None
        self._count_tokens = tpm is not None
        self._bulk_requests = max(1, math.floor((rpm or 0) / 60 * _BULK_SECONDS))
        self._bulk_tokens = max(1, math.floor((tpm or 0) / 60 * _BULK_SECONDS))
        self._clock = clock
        self._requests = 0
        self._tokens = 0
        self._expires = 0.0
        self._lock: asyncio.Lock | None = None
        self.fetches = 0

    def _fits(self, tokens: int) -> bool:
        if self._clock() >= self._expires:
            self._requests = 0
            self._tokens = min(self._tokens, 0)  # a debt is kept, a surplus dropped
        return (not self._count_requests or self._requests >= 1) and (
            not self._count_tokens or self._tokens >= tokens
        )

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until one request (and ``tokens``) is available to this actor, then take it."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        while not self._fits(tokens):
            async with self._lock:
                if self._fits(tokens):
                    break
                need_r = 1 if self._count_requests and self._requests < 1 else 0
                need_t = max(0, tokens - self._tokens) if self._count_tokens else 0
                want_r = self._bulk_requests if self._count_requests else 0
                want_t = max(need_t, self._bulk_tokens) if self._count_tokens else 0
                self.fetches += 1
                grant = await self._take(need_r, max(need_r, want_r), need_t, want_t)
                if grant.wait > 0.0:
                    await asyncio.sleep(grant.wait)
                    continue
                self._requests += grant.requests
                self._tokens += grant.tokens
                self._expires = self._clock() + PERMIT_LIFETIME
        if self._count_requests:
            self._requests -= 1
        if self._count_tokens:
            self._tokens -= tokens

    def record_usage(self, estimated: int, actual: int) -> None:
        """Give back (or owe) the difference between a call's estimate and its real tokens."""
        if self._count_tokens:
            self._tokens += estimated - actual

    def drop(self) -> None:
        """Forget the permits held (after a 429: the provider wants every actor to stop)."""
        self._requests = 0
        self._tokens = min(self._tokens, 0)
