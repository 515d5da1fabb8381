"""FakeLLMServer's provider limits: rpm/tpm buckets that report themselves in headers, and a
hidden cap on requests in flight.

:class:`ServerLimits` is what a test asks for; :class:`LimitState` is its running state on the
server's loop. Like OpenAI and Anthropic, the buckets refill continuously and are counted when
a request arrives; unlike them, they hold ``burst`` seconds of the limit (1 s by default, so
that pacing shows within a short test; ``burst=60`` is the providers' full-minute bucket).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from loom_protocol import LoomUsageError, check_int, check_positive_number

from ._replies import _prompt_chars as prompt_chars

__all__ = ["LimitState", "Refusal", "ServerLimits", "format_duration"]

HeaderStyle = Literal["openai", "anthropic"]
Overload = Literal["429", "queue"]


@dataclass(frozen=True)
class ServerLimits:
    """Rate limits and a concurrency cap for :class:`~loom_backends.testing.FakeLLMServer`.

    Args:
        rpm: Requests per minute; over it, a 429 (with ``Retry-After``).
        tpm: Tokens per minute, the prompt's tokens (a quarter of its characters) counted
            when a request arrives; over it, a 429.
        headers: ``"openai"`` sends ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``
            with every answer and refusal, ``"anthropic"`` sends
            ``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}``; ``None`` sends
            none (vLLM, Ollama).
        burst: Seconds of each limit its bucket holds (``max(1, limit / 60 * burst)``).
        max_in_flight: The hidden cap: at most this many requests are served at once, and
            nothing says so in the headers.
        overload: Beyond ``max_in_flight``: ``"429"`` refuses at once (no ``Retry-After``),
            ``"queue"`` makes the request wait for a free place (answers slow down, like a
            vLLM server under load).

    Raises:
        LoomUsageError: A value out of range.
    """

    rpm: int | None = None
    tpm: int | None = None
    headers: HeaderStyle | None = None
    burst: float = 1.0
    max_in_flight: int | None = None
    overload: Overload = "429"

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "max_in_flight"):
            value = getattr(self, name)
            if value is not None:
                check_int(f"ServerLimits.{name}", value, 1)
        check_positive_number("ServerLimits.burst", self.burst, " of seconds")
        if self.headers not in (None, "openai", "anthropic"):
            raise LoomUsageError(
                f"ServerLimits.headers must be None, 'openai' or 'anthropic', got {self.headers!r}"
            )
        if self.overload not in ("429", "queue"):
            raise LoomUsageError(
                f"ServerLimits.overload must be '429' or 'queue', got {self.overload!r}"
            )


@dataclass(frozen=True)
class Refusal:
    """A request refused by the limits: a 429 with these headers."""

    headers: dict[str, str]
    message: str


class _Bucket:
    __slots__ = ("capacity", "level", "limit", "rate", "updated")

    def __init__(self, limit: int, burst: float) -> None:
        self.limit = limit
        self.rate = limit / 60.0
        self.capacity = max(1.0, self.rate * burst)
        self.level = self.capacity
        self.updated = time.monotonic()

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now

    def reset_in(self) -> float:
        """Seconds until the bucket is full again."""
        return max(0.0, (self.capacity - self.level) / self.rate)


def format_duration(seconds: float) -> str:
    """OpenAI's way of writing a reset: ``"250ms"``, ``"1.5s"``, ``"1m30s"``, ``"0s"``."""
    if seconds < 1.0:
        millis = round(seconds * 1000)
        return f"{millis}ms" if millis else "0s"
    minutes, rest = divmod(seconds, 60.0)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


class LimitState:
    """The running state of one server's :class:`ServerLimits` (on the server's loop)."""

    def __init__(self, limits: ServerLimits) -> None:
        self.limits = limits
        self.requests = _Bucket(limits.rpm, limits.burst) if limits.rpm else None
        self.tokens = _Bucket(limits.tpm, limits.burst) if limits.tpm else None
        self.in_flight = 0
        self.peak_in_flight = 0
        self._places: asyncio.Semaphore | None = None

    async def admit(self, body: dict[str, Any]) -> tuple[Refusal | None, dict[str, str]]:
        """Count one arriving request: ``(refusal, headers)``; without a refusal, the request
        holds a place until :meth:`leave`, and ``headers`` go on its answer."""
        limits = self.limits
        cap = limits.max_in_flight
        if cap is not None and limits.overload == "429" and self.in_flight >= cap:
            # The hidden cap: refused at once, and nothing in the headers says why.
            return Refusal({}, "the server is overloaded"), {}
        now = time.monotonic()
        cost = float(math.ceil(prompt_chars(body) / 4))
        waits = []
        for bucket, amount in ((self.requests, 1.0), (self.tokens, cost)):
            if bucket is not None:
                bucket.refill(now)
                needed = min(amount, bucket.capacity)  # an oversize request fits a full bucket
                if bucket.level < needed:
                    waits.append((needed - bucket.level) / bucket.rate)
        if waits:
            headers = self._headers()
            headers["Retry-After"] = str(max(1, math.ceil(max(waits))))
            return Refusal(headers, "rate limit reached (fake provider limits)"), headers
        for bucket, amount in ((self.requests, 1.0), (self.tokens, cost)):
            if bucket is not None:
                bucket.level -= amount
        headers = self._headers()
        if cap is not None and limits.overload == "queue":
            if self._places is None:
                self._places = asyncio.Semaphore(cap)
            await self._places.acquire()  # beyond the cap, answers slow down
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        return None, headers

    def leave(self) -> None:
        """A request admitted by :meth:`admit` was answered."""
        self.in_flight -= 1
        if self._places is not None:
            self._places.release()

    def _headers(self) -> dict[str, str]:
        style = self.limits.headers
        if style is None:
            return {}
        headers: dict[str, str] = {}
        for name, bucket in (("requests", self.requests), ("tokens", self.tokens)):
            if bucket is None:
                continue
            remaining = str(max(0, math.floor(bucket.level)))
            if style == "openai":
                headers[f"x-ratelimit-limit-{name}"] = str(bucket.limit)
                headers[f"x-ratelimit-remaining-{name}"] = remaining
                headers[f"x-ratelimit-reset-{name}"] = format_duration(bucket.reset_in())
            else:
                reset = datetime.fromtimestamp(time.time() + bucket.reset_in(), UTC)
                headers[f"anthropic-ratelimit-{name}-limit"] = str(bucket.limit)
                headers[f"anthropic-ratelimit-{name}-remaining"] = remaining
                headers[f"anthropic-ratelimit-{name}-reset"] = reset.strftime("%Y-%m-%dT%H:%M:%SZ")
        return headers
