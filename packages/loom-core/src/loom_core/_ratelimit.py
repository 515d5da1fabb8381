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
import threading
import time
from collections.abc import Callable

from loom_protocol import (
    ChatRequest,
    RateLimitInfo,
    RateLimitWindow,
    check_int,
    check_non_negative_number,
    check_positive_number,
)

from ._pricing import output_tokens, prompt_tokens

__all__ = ["LearnedLimits", "RateLimiter", "estimate_tokens"]

_RATE_FACTOR = 0.98
_BURST_SECONDS = 0.5
# Below this a bucket counts as holding what was asked: float rounding must not turn "exactly
# enough after waiting the time we said" into another, vanishingly short wait.
_EPSILON = 1e-9


def estimate_tokens(request: ChatRequest) -> int:
    """A rough upper estimate of the tokens a request will consume, for the tpm budget.

    The prompt as :func:`~._pricing.prompt_tokens` estimates it (one token per four characters,
    a few per message, 1,000 per image), plus ``max_tokens`` (the most the answer can cost).
    :meth:`RateLimiter.record_usage` corrects the budget once the provider reports the real
    count.
    """
    return prompt_tokens(request.messages, request.response_format) + (output_tokens(request) or 0)


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
        # The provider's own limits, from its headers (adaptive looms only; see learn()).
        self._learned: LearnedLimits | None = None

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
            learned = self._learned
            if learned is not None:
                wait = max(wait, learned.wait_for(tokens, now))
            if wait > 0.0:
                return wait
            if self._requests is not None:
                self._requests.level -= 1.0
            if self._tokens is not None:
                self._tokens.level -= tokens
            if learned is not None:
                learned.take(tokens)
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
        if self._tokens is None and self._learned is None:
            return
        with self._lock:
            now = self._clock()
            if self._learned is not None:
                self._learned.credit(estimated - actual, now)
            if self._tokens is None:
                return
            self._tokens.refill(now)
            self._tokens.level = min(self._tokens.capacity, self._tokens.level + estimated - actual)

    @property
    def counts_tokens(self) -> bool:
        """Whether a token budget (the user's ``tpm`` or one learned) needs token estimates."""
        learned = self._learned
        return self._tokens is not None or (learned is not None and learned.tokens is not None)

    def learn(self, info: RateLimitInfo, age: float = 0.0, later: int = 0) -> str | None:
        """Pace also by the limits a provider reported (``RateLimitInfo`` from its headers).

        The user's ``rpm``/``tpm`` stay caps: a call waits for every budget. See
        the comment above ``LearnedLimits`` for the model.

        Args:
            info: What one answer's headers said.
            age: Seconds since the call that got the answer started.
            later: Calls started after it (its report does not count them).

        Returns:
            What is now learned (``"600 requests/min, …"``) when it changed, to be logged;
            ``None`` when nothing changed.
        """
        with self._lock:
            learned = self._learned
            if learned is None:
                learned = self._learned = LearnedLimits()
            if learned.update(info, self._clock(), age, later):
                return learned.describe()
            return None

    def learned(self) -> str:
        """The provider's limits learned so far, as :meth:`learn` describes them (or ``""``)."""
        with self._lock:
            return "" if self._learned is None else self._learned.describe()

    def __repr__(self) -> str:
        return f"RateLimiter(rpm={self.rpm!r}, tpm={self.tpm!r})"


# -- the provider's own limits, learned from its headers (issue 15) ----------------------------
#
# The provider's own rate limits, learned from its headers: buckets that mirror its buckets.
#
# OpenAI and Anthropic both describe their limits as token buckets refilled continuously up to
# the limit per minute, and report with every answer the limit and what remains. For each
# dimension reported (requests, and tokens — Anthropic's input tokens when it reports no total),
# :class:`LearnedLimits` keeps a bucket of capacity ``limit``, refilled at 98 % of
# ``limit / 60`` per second (the margin the user's own ``rpm`` bucket keeps too), and lowers its
# level to the ``remaining`` reported whenever that is less than it holds: the provider knows of
# spending we do not (another process on the same key), never less. The level is not raised to
# a larger ``remaining``: that report may predate calls we already sent. A report is as old as
# its call (the provider counted at arrival), so what refilled since the call started is added
# to it first: without that, taking the lesser of two equally good figures would always lean
# low, and pace below the limit.
#
# The reset times the headers carry are parsed (see ``loom_backends.parse_rate_limit_headers``)
# but not needed by this model: in a bucket refilled continuously, what remains and the rate
# say when the next call fits. Everything here is plain arithmetic, called under the
# :class:`RateLimiter`'s lock.


class _Mirror(_Bucket):
    """A bucket mirroring one of the provider's: capacity ``limit``, refilled per minute."""

    __slots__ = ("limit",)

    def __init__(self, limit: int, now: float) -> None:
        super().__init__(float(max(1, limit)), now)
        self.limit = limit
        self.capacity = self.level = float(max(1, limit))

    def wait_for(self, amount: float) -> float:
        return super().wait_for(min(amount, self.capacity))


class LearnedLimits:
    """The request and token budgets the provider reported, as buckets (see the comment above).

    Attributes:
        requests: The request bucket, once a request limit was reported.
        tokens: The token bucket, once a token limit was reported.
    """

    __slots__ = ("requests", "tokens")

    def __init__(self) -> None:
        self.requests: _Mirror | None = None
        self.tokens: _Mirror | None = None

    def update(self, info: RateLimitInfo, now: float, age: float = 0.0, later: int = 0) -> bool:
        """Take in one answer's report, made ``age`` seconds ago at most.

        ``later`` calls were sent after the reported one: its report does not count them, and
        a bucket made from it (the first report of a limit) has them taken off.

        Returns:
            Whether a limit was learned or changed.
        """
        tokens = info.tokens or info.input_tokens
        changed = False
        for name, window in (("requests", info.requests), ("tokens", tokens)):
            if window is None:
                continue
            bucket: _Mirror | None = getattr(self, name)
            limit = window.limit
            if limit is not None and limit > 0 and (bucket is None or bucket.limit != limit):
                fresh = bucket is None
                bucket = self._resized(bucket, limit, now)
                setattr(self, name, bucket)
                changed = True
                if fresh and window.remaining is not None:
                    spent = later * (1.0 if name == "requests" else 0.0)
                    bucket.level = min(bucket.level, window.remaining - spent)
            if bucket is not None:
                _lower_to(bucket, window, now, age)
        return changed

    @staticmethod
    def _resized(bucket: _Mirror | None, limit: int, now: float) -> _Mirror:
        new = _Mirror(limit, now)
        if bucket is not None:
            bucket.refill(now)
            new.level = min(new.capacity, bucket.level)
        return new

    def wait_for(self, tokens: int, now: float) -> float:
        """Seconds until one request and ``tokens`` fit (0.0 if they do now)."""
        wait = 0.0
        if self.requests is not None:
            self.requests.refill(now)
            wait = self.requests.wait_for(1.0)
        if self.tokens is not None and tokens:
            self.tokens.refill(now)
            wait = max(wait, self.tokens.wait_for(float(tokens)))
        return wait

    def take(self, tokens: int) -> None:
        """Debit one request and ``tokens`` (after :meth:`wait_for` said they fit)."""
        if self.requests is not None:
            self.requests.level -= 1.0
        if self.tokens is not None:
            self.tokens.level -= tokens

    def credit(self, tokens: int, now: float) -> None:
        """Give back ``tokens`` (negative: take more) once a call's real usage is known."""
        if self.tokens is not None:
            self.tokens.refill(now)
            self.tokens.level = min(self.tokens.capacity, self.tokens.level + tokens)

    def describe(self) -> str:
        """``"600 requests/min, 150000 tokens/min"``, what was learned (``""``: nothing)."""
        parts = []
        if self.requests is not None:
            parts.append(f"{self.requests.limit} requests/min")
        if self.tokens is not None:
            parts.append(f"{self.tokens.limit} tokens/min")
        return ", ".join(parts)


def _lower_to(bucket: _Mirror, window: RateLimitWindow, now: float, age: float) -> None:
    if window.remaining is None:
        return
    bucket.refill(now)
    reported = window.remaining + bucket.rate * max(0.0, age)
    if reported < bucket.level:
        bucket.level = reported
