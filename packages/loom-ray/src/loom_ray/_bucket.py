"""The pipeline-wide rate limit: one named Ray actor holding the rpm/tpm buckets.

Every ``LoomMapper`` actor of a pipeline asks this one actor for permits. A round trip per
request would cost each request a Ray call (about a millisecond on one machine, more across
machines) and make the actor a bottleneck at a few thousand requests per second, so permits
are granted **in bulk**: a client asks for about a tenth of a second's worth of the limit at
once and hands them out locally (see :mod:`._permits`). The buckets follow loom-core's
``RateLimiter``: refilled at 98 % of the limit, a burst of half a second's worth (at least one),
so a provider enforcing the same limit never sees it exceeded.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

__all__ = ["BucketGrant", "TokenBuckets"]

_RATE_FACTOR = 0.98
_BURST_SECONDS = 0.5


class _Bucket:
    """A token bucket refilled continuously; its level may go negative (an oversize debit)."""

    __slots__ = ("capacity", "level", "rate", "updated")

    def __init__(self, per_minute: float, now: float) -> None:
        self.rate = per_minute / 60.0 * _RATE_FACTOR
        self.capacity = max(1.0, per_minute / 60.0 * _BURST_SECONDS)
        self.level = self.capacity
        self.updated = now

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait_for(self, amount: float) -> float:
        missing = amount - self.level
        return 0.0 if missing <= 1e-9 else missing / self.rate


@dataclass(frozen=True, slots=True)
class BucketGrant:
    """What one ``take`` granted: requests and tokens, or the seconds to wait (nothing granted)."""

    requests: int
    tokens: int
    wait: float


class TokenBuckets:
    """The rpm and tpm buckets of a pipeline; the body of the named Ray actor.

    Plain Python (Ray runs the methods of one actor one at a time), so it is unit-tested
    without Ray.

    Args:
        rpm: Requests per minute for the whole pipeline, or ``None``.
        tpm: Tokens per minute for the whole pipeline, or ``None``.
    """

    def __init__(self, rpm: float | None, tpm: float | None) -> None:
        now = time.monotonic()
        self.rpm = rpm
        self.tpm = tpm
        self._requests = _Bucket(rpm, now) if rpm is not None else None
        self._tokens = _Bucket(tpm, now) if tpm is not None else None
        self._paused_until = now
        self.calls = 0
        self.granted_requests = 0

    def limits(self) -> tuple[float | None, float | None]:
        """The (rpm, tpm) this actor was made with (a second pipeline checks it agrees)."""
        return self.rpm, self.tpm

    def take(
        self, need_requests: int, want_requests: int, need_tokens: int, want_tokens: int
    ) -> BucketGrant:
        """Grant at least the need and up to the want of each, or nothing and a wait.

        A need larger than the tpm bucket's capacity is granted when the bucket is full and
        leaves it in debt, so a request bigger than half a second of tpm still runs.
        """
        self.calls += 1
        now = time.monotonic()
        if self._paused_until > now:
            return BucketGrant(0, 0, self._paused_until - now)
        wait = 0.0
        requests = want_requests
        tokens = want_tokens
        if self._requests is not None:
            self._requests.refill(now)
            wait = self._requests.wait_for(float(need_requests))
            requests = max(need_requests, min(want_requests, math.floor(self._requests.level)))
        if self._tokens is not None:
            self._tokens.refill(now)
            need = min(float(need_tokens), self._tokens.capacity)
            wait = max(wait, self._tokens.wait_for(need))
            tokens = max(need_tokens, min(want_tokens, math.floor(self._tokens.level)))
        if wait > 0.0:
            return BucketGrant(0, 0, wait)
        if self._requests is not None:
            self._requests.level -= requests
        if self._tokens is not None:
            self._tokens.level -= tokens
        self.granted_requests += requests
        return BucketGrant(requests, tokens, 0.0)

    def pause(self, seconds: float) -> None:
        """Grant nothing for ``seconds`` (a provider's 429 with Retry-After, seen by one actor)."""
        self._paused_until = max(self._paused_until, time.monotonic() + max(0.0, seconds))

    def stats(self) -> dict[str, float]:
        """Calls answered and requests granted, for the benchmark and the tests."""
        return {"calls": self.calls, "granted_requests": self.granted_requests}
