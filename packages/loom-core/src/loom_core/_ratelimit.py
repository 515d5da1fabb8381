"""Client-side rate limiting: requests per minute and tokens per minute, shared by a whole loom.

One :class:`RateLimiter` serves every worker of a loom, whichever event loop or thread it runs
on, so it holds no asyncio objects: its state is plain time arithmetic under a
``threading.Lock``, and :meth:`RateLimiter.acquire` sleeps on the caller's own loop. Its
buckets are sized as ``_buckets`` says; the provider's reported limits are learned as
``_learned`` says.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from loom_protocol import (
    ChatRequest,
    RateLimitInfo,
    check_int,
    check_non_negative_number,
    check_positive_number,
)

from ._buckets import Bucket
from ._learned import LearnedLimits
from ._pricing import output_tokens, prompt_tokens

__all__ = ["RateLimiter", "estimate_tokens"]


def estimate_tokens(request: ChatRequest) -> int:
    """A rough upper estimate of the tokens a request will consume, for the tpm budget.

    The prompt as :func:`~._pricing.prompt_tokens` estimates it (one token per four characters,
    a few per message, 1,000 per image), plus ``max_tokens`` (the most the answer can cost).
    :meth:`RateLimiter.record_usage` corrects the budget once the provider reports the real
    count.
    """
    return prompt_tokens(request.messages, request.response_format) + (output_tokens(request) or 0)


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
        self._requests = Bucket(rpm, now) if rpm is not None else None
        self._tokens = Bucket(tpm, now) if tpm is not None else None
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
                fresh = Bucket(limit, now)
                bucket.rate, bucket.capacity = fresh.rate, fresh.capacity
                bucket.level = min(bucket.level, bucket.capacity)

    def tokens_for(self, request: ChatRequest) -> int:
        """What ``request`` is counted for under the token budgets: :func:`estimate_tokens`
        when there is one (the user's ``tpm``, or one learned), 0 otherwise (estimating
        serialises the request: only worth it then)."""
        return estimate_tokens(request) if self.counts_tokens else 0

    def delay(self, tokens: int = 0) -> float:
        """Seconds until one request and ``tokens`` fit the budget (0.0: now), taking nothing.

        Raises:
            LoomUsageError: ``tokens`` is not an integer >= 0.
        """
        check_int("tokens", tokens, 0)
        with self._lock:
            return self._wait(tokens, self._clock())

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
            wait = self._wait(tokens, self._clock())
            if wait > 0.0:
                return wait
            if self._requests is not None:
                self._requests.level -= 1.0
            if self._tokens is not None:
                self._tokens.level -= tokens
            if self._learned is not None:
                self._learned.take(tokens)
            return 0.0

    def _wait(self, tokens: int, now: float) -> float:
        """Seconds until one request and ``tokens`` fit (called with the lock held)."""
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
        if self._learned is not None:
            wait = max(wait, self._learned.wait_for(tokens, now))
        return wait

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
        ``_learned`` for the model.

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
