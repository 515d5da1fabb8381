"""What an :class:`~._pool.EndpointPool` asks of what learns each endpoint's limits.

loom-backends does not learn limits itself (that is loom-core's adaptive concurrency and rate
limiting, and loom-backends never imports loom-core): the pool takes, through
:meth:`~._pool.EndpointPool.adapt`, one object per endpoint that says how many calls that
endpoint may have in flight and learns from how each call went (an :class:`EndpointLimit`;
loom-core's ``ConcurrencyLimit`` is one), and optionally one that paces calls to the rate
limits the endpoint's server reports in its headers (an :class:`EndpointPacer`; loom-core's
``RateLimiter`` is one). Endpoints with keys of their own have buckets of their own at the
provider: each is paced to what *its* headers say.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from loom_protocol import BackendError, ChatRequest, ErrorCode, RateLimitInfo

__all__ = ["EndpointLimit", "EndpointPacer", "is_overload"]

# HTTP statuses that mean "too much": 503 (vLLM, proxies) and Anthropic's 529 "overloaded".
_OVERLOAD_STATUS = frozenset({503, 529})


@runtime_checkable
class EndpointLimit(Protocol):
    """One endpoint's adaptive concurrency limit, as the pool uses it.

    The pool calls it under its own lock: ``try_enter`` when it sends a call there (the
    pool only sends below :attr:`limit`), and ``leave`` exactly once per call entered.
    """

    @property
    def limit(self) -> int:
        """The calls this endpoint may have in flight now (>= 1)."""
        ...

    @property
    def epoch(self) -> int:
        """A counter moved at each backoff; a call remembers the one it started in."""
        ...

    def try_enter(self) -> bool:
        """Take a slot if one is free; ``False`` (nothing taken) otherwise."""
        ...

    def leave(self, epoch: int, latency: float | None, overload: bool) -> None:
        """Free the slot of a call started in ``epoch``: answered in ``latency`` seconds
        (``None`` if it failed), or refused for too much (``overload``)."""
        ...


@runtime_checkable
class EndpointPacer(Protocol):
    """One endpoint's pacing to the rate limits its server reported, as the pool uses it.

    Safe to call under the pool's lock (it takes only its own). Until a limit is reported it
    admits everything.
    """

    def tokens_for(self, request: ChatRequest) -> int:
        """The tokens ``request`` is counted for under the token budget learned (0: none)."""
        ...

    def delay(self, tokens: int = 0) -> float:
        """Seconds until one request and ``tokens`` fit (0.0: now); nothing is taken."""
        ...

    def try_acquire(self, tokens: int = 0) -> float:
        """Take one request and ``tokens`` if they fit now (0.0); else the seconds to wait."""
        ...

    def learn(self, info: RateLimitInfo, age: float = 0.0, later: int = 0) -> str | None:
        """Take in one answer's report (``age`` seconds old, ``later`` calls sent since);
        what is learned, to be logged, when it changed (``None`` otherwise)."""
        ...

    def record_usage(self, estimated: int, actual: int) -> None:
        """Correct the token budget once a call's real token count is known."""
        ...

    def learned(self) -> str:
        """The limits learned so far (``"600 requests/min"``), or ``""``."""
        ...


def is_overload(exc: BaseException) -> bool:
    """Whether a failed call says its server has too much: 429, 503/529, or a timeout."""
    if not isinstance(exc, BackendError):
        return False
    return (
        exc.code is ErrorCode.PROVIDER_RATE_LIMITED
        or exc.code is ErrorCode.PROVIDER_TIMEOUT
        or (exc.status is not None and exc.status in _OVERLOAD_STATUS)
    )
