"""Client-side rate limiting: requests per minute and tokens per minute, shared by a whole loom.

One :class:`RateLimiter` serves every worker of a loom, whichever event loop or thread it runs
on, so it holds no asyncio objects: its state is plain time arithmetic under a
``threading.Lock``, and :meth:`RateLimiter.acquire` sleeps on the caller's own loop.

Each limit is a token bucket that refills continuously. Its size and rate are chosen so that a
provider enforcing the same limit never sees us exceed it (see ``docs/engine-parts.md``):

* refill at 98 % of the limit: the small shortfall absorbs timing jitter (our own sleeps waking
  late, requests reaching the server bunched), which matters most for small limits where the
  server's bucket holds a single request;
* a burst capacity of half a second's worth of the limit (at least 1): a server bucket holding
  one second's worth (``max(1, limit / 60)``) then keeps half a second of slack, and ``rpm=600``
  admits 5 requests at once instead of 10.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Callable

from loom_protocol import (
    ChatRequest,
    ImagePart,
    check_int,
    check_non_negative_number,
    check_positive_number,
)

__all__ = ["RateLimiter", "estimate_tokens"]

# Tokens counted per image: about what a high-detail image costs with the major providers.
_IMAGE_TOKENS = 1000

_CHARS_PER_TOKEN = 4
_TOKENS_PER_MESSAGE = 4  # role markers and separators the provider adds around each message
_RATE_FACTOR = 0.98
_BURST_SECONDS = 0.5
# Below this a bucket counts as holding what was asked: float rounding must not turn "exactly
# enough after waiting the time we said" into another, vanishingly short wait.
_EPSILON = 1e-9


def estimate_tokens(request: ChatRequest) -> int:
    """A rough upper estimate of the tokens a request will consume, for the tpm budget.

    About one token per four characters of text (messages and the response format), a few
    tokens per message, 1,000 per image, plus ``max_tokens`` (the most
    the answer can cost). :meth:`RateLimiter.record_usage` corrects the budget once the provider
    reports the real count.
    """
    chars = 0
    images = 0
    for message in request.messages:
        if isinstance(message.content, str):
            chars += len(message.content)
            continue
        for part in message.content:
            if isinstance(part, ImagePart):
                images += 1
            else:
                chars += len(part.text)
    if request.response_format is not None:
        chars += len(json.dumps(request.response_format))
    completion = request.max_tokens
    if completion is None:
        alternative = request.params.get("max_completion_tokens")
        completion = alternative if isinstance(alternative, int) else 0
    return (
        math.ceil(chars / _CHARS_PER_TOKEN)
        + _TOKENS_PER_MESSAGE * len(request.messages)
        + _IMAGE_TOKENS * images
        + completion
    )


class _Bucket:
    """A token bucket refilled continuously; its level may go negative (debt)."""

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
        """Seconds until the bucket holds ``amount`` (0.0 if it does now)."""
        missing = amount - self.level
        return 0.0 if missing <= _EPSILON else missing / self.rate


class RateLimiter:
    """Requests-per-minute and tokens-per-minute limits shared by every worker of a loom.

    Safe to use from several threads and event loops at once. A request whose token estimate
    exceeds the tpm bucket's capacity would never fit; it is let through when the bucket is
    full and leaves the bucket in debt, so later requests wait until the debt is repaid and the
    long-run rate still holds.

    A pause (after a provider's 429 with ``Retry-After``) applies even when no limit is set.

    Args:
        rpm: Requests per minute, or ``None`` for no request limit.
        tpm: Tokens per minute, or ``None`` for no token limit.
        clock: A monotonic clock in seconds (inject a fake one in tests).

    Raises:
        LoomUsageError: ``rpm`` or ``tpm`` is given but is not a finite number > 0.

    Attributes:
        enabled: Whether any limit (rpm or tpm) is set.
    """

    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, limit in (("rpm", rpm), ("tpm", tpm)):
            if limit is not None:
                check_positive_number(name, limit)
        self._clock = clock
        self._lock = threading.Lock()
        now = clock()
        self.rpm = rpm
        self.tpm = tpm
        self._requests = _Bucket(rpm, now) if rpm is not None else None
        self._tokens = _Bucket(tpm, now) if tpm is not None else None
        self._paused_until = now
        self.enabled = rpm is not None or tpm is not None

    def set_rates(self, rpm: float | None, tpm: float | None) -> None:
        """Change the limits at run time (a task's share among its live workers).

        A limit can be changed, not added or removed: a bucket keeps its level (clamped to
        its new capacity), so a lower share takes effect at once and a higher one refills.

        Raises:
            LoomUsageError: a limit set at construction is not a finite number > 0 here.
        """
        with self._lock:
            now = self._clock()
            for bucket, limit, name in ((self._requests, rpm, "rpm"), (self._tokens, tpm, "tpm")):
                if bucket is None or limit is None:
                    continue
                check_positive_number(name, limit)
                bucket.refill(now)
                fresh = _Bucket(limit, now)
                bucket.rate, bucket.capacity = fresh.rate, fresh.capacity
                bucket.level = min(bucket.level, bucket.capacity)

    def try_acquire(self, tokens: int = 0) -> float:
        """Take one request (and ``tokens``) from the budget if it is available now.

        Args:
            tokens: The request's estimated token cost (see :func:`estimate_tokens`).

        Returns:
            0.0 when acquired (one request and ``tokens`` debited); otherwise the seconds to wait
            before trying again, with nothing debited. During a pause, the time left of it.

        Raises:
            LoomUsageError: ``tokens`` is not an integer >= 0.
        """
        check_int("tokens", tokens, 0)
        with self._lock:
            now = self._clock()
            if self._paused_until > now:
                return self._paused_until - now
            wait = 0.0
            if self._requests is not None:
                self._requests.refill(now)
                wait = self._requests.wait_for(1.0)
            if self._tokens is not None:
                self._tokens.refill(now)
                # An oversize request waits for a full bucket rather than forever.
                wait = max(wait, self._tokens.wait_for(min(float(tokens), self._tokens.capacity)))
            if wait > 0.0:
                return wait
            if self._requests is not None:
                self._requests.level -= 1.0
            if self._tokens is not None:
                self._tokens.level -= tokens
            return 0.0

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until one request (and ``tokens``) fits the budget, then take it.

        Cancellable: a cancelled wait takes nothing from the budget.
        """
        while True:
            delay = self.try_acquire(tokens)
            if delay <= 0.0:
                return
            await asyncio.sleep(delay)

    def pause(self, seconds: float) -> bool:
        """Make every acquisition wait until ``seconds`` from now (or a later pause's end).

        Returns:
            Whether this call made the pause longer (``False``: a pause already under way
            ends later), so that only the 429 that starts or extends a pause reports it.

        Raises:
            LoomUsageError: ``seconds`` is negative or not finite.
        """
        check_non_negative_number("pause seconds", seconds)
        with self._lock:
            until = self._clock() + seconds
            if until <= self._paused_until:
                return False
            self._paused_until = until
            return True

    def paused_for(self) -> float:
        """Seconds left of the current pause (0.0 when not paused)."""
        with self._lock:
            return max(0.0, self._paused_until - self._clock())

    def record_usage(self, estimated: int, actual: int) -> None:
        """Correct the token budget once a call's real token count is known.

        Args:
            estimated: The tokens acquired for the call.
            actual: The tokens the provider reported.

        Raises:
            LoomUsageError: Either count is not an integer >= 0.
        """
        check_int("estimated", estimated, 0)
        check_int("actual", actual, 0)
        if self._tokens is None:
            return
        with self._lock:
            self._tokens.refill(self._clock())
            self._tokens.level = min(self._tokens.capacity, self._tokens.level + estimated - actual)

    def __repr__(self) -> str:
        return f"RateLimiter(rpm={self.rpm!r}, tpm={self.tpm!r})"
