"""``LearnedLimits``: the provider's own rate limits, learned from its headers (issue 15).

See the comment below for the model.
"""

from __future__ import annotations

from loom_protocol import RateLimitInfo, RateLimitWindow

from ._buckets import Mirror

__all__ = ["LearnedLimits"]


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


class LearnedLimits:
    """The request and token budgets the provider reported, as buckets (see the comment above).

    Attributes:
        requests: The request bucket, once a request limit was reported.
        tokens: The token bucket, once a token limit was reported.
    """

    __slots__ = ("requests", "tokens")

    def __init__(self) -> None:
        self.requests: Mirror | None = None
        self.tokens: Mirror | None = None

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
            bucket: Mirror | None = getattr(self, name)
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
    def _resized(bucket: Mirror | None, limit: int, now: float) -> Mirror:
        new = Mirror(limit, now)
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


def _lower_to(bucket: Mirror, window: RateLimitWindow, now: float, age: float) -> None:
    if window.remaining is None:
        return
    bucket.refill(now)
    reported = window.remaining + bucket.rate * max(0.0, age)
    if reported < bucket.level:
        bucket.level = reported
