"""The pipeline-wide rate limit: one named Ray actor holding the rpm/tpm buckets.

Every ``LoomMapper`` actor of a pipeline asks this one actor for permits. A round trip per
request would cost each request a Ray call (about a millisecond on one machine, more across
machines) and make the actor a bottleneck at about a thousand requests per second, so
permits are granted **in bulk**: a client asks for about a tenth of a second's worth of the
limit at once and hands them out locally (see :mod:`._permits`). The buckets are loom-core's
own ``RateLimiter`` (refilled at 98 % of the limit, a burst of half a second's worth), so a
pipeline and a single loom given the same ``rpm`` behave alike towards the provider.
"""

from __future__ import annotations

from dataclasses import dataclass

from loom_core import RateLimiter

__all__ = ["BucketGrant", "TokenBuckets"]


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
        self.rpm = rpm
        self.tpm = tpm
        self._limiter = RateLimiter(rpm=rpm, tpm=tpm)
        self.calls = 0
        self.granted_requests = 0

    def limits(self) -> tuple[float | None, float | None]:
        """The (rpm, tpm) this actor was made with (a second pipeline checks it agrees)."""
        return self.rpm, self.tpm

    def take(
        self, need_requests: int, want_requests: int, need_tokens: int, want_tokens: int
    ) -> BucketGrant:
        """Grant at least the need and up to the want of each, or nothing and a wait.

        The tokens come with the first request (the limiter debits them together): the most
        wanted if they fit, else the need. A need larger than the tpm bucket is granted when
        the bucket is full and leaves it in debt, as for a single loom. More requests are then
        added one by one while the request bucket holds them.
        """
        self.calls += 1
        tokens = want_tokens
        wait = self._limiter.try_acquire(tokens)
        if wait > 0.0 and want_tokens > need_tokens:
            tokens = need_tokens
            wait = self._limiter.try_acquire(tokens)
        if wait > 0.0:
            return BucketGrant(0, 0, wait)
        requests = 1
        while requests < want_requests and self._limiter.try_acquire(0) == 0.0:
            requests += 1
        self.granted_requests += requests
        return BucketGrant(requests if self.rpm is not None else 0, tokens, 0.0)

    def pause(self, seconds: float) -> None:
        """Grant nothing for ``seconds`` (a provider's 429 with Retry-After, seen by one actor)."""
        self._limiter.pause(max(0.0, seconds))

    def stats(self) -> dict[str, float]:
        """Calls answered and requests granted, for the benchmark and the tests."""
        return {"calls": self.calls, "granted_requests": self.granted_requests}
