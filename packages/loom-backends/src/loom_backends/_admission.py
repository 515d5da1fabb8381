"""``EndpointLimit``: what an :class:`~._pool.EndpointPool` asks of a per-endpoint limit.

loom-backends does not learn limits itself (that is loom-core's adaptive concurrency, and
loom-backends never imports loom-core): the pool takes, through
:meth:`~._pool.EndpointPool.adapt`, one object per endpoint that says how many calls that
endpoint may have in flight and learns from how each call went. loom-core's
``ConcurrencyLimit`` is one.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from loom_protocol import BackendError, ErrorCode

__all__ = ["EndpointLimit", "is_overload"]

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


def is_overload(exc: BaseException) -> bool:
    """Whether a failed call says its server has too much: 429, 503/529, or a timeout."""
    if not isinstance(exc, BackendError):
        return False
    return (
        exc.code is ErrorCode.PROVIDER_RATE_LIMITED
        or exc.code is ErrorCode.PROVIDER_TIMEOUT
        or (exc.status is not None and exc.status in _OVERLOAD_STATUS)
    )
