"""The loom-wide concurrency limit of a loom whose backend learns a limit per endpoint.

An :class:`~loom_backends.EndpointPool` given to an adaptive loom learns one
:class:`~._adaptive.ConcurrencyLimit` per endpoint (:meth:`~loom_backends.EndpointPool.adapt`):
each endpoint backs off on its own 429s, overloads and latency. A loom-wide limit learning
from the same calls would back off twice for one endpoint's 429 and hold the healthy
endpoints back with it. So the loom's limit stops learning and becomes the sum of the
endpoints' learned limits (those not taken out by their breaker): calls wait for a slot
there, before the call's timeout starts, not inside the pool.

The same holds of the providers' rate-limit headers: endpoints with keys of their own have
buckets of their own at the provider, so each endpoint gets a :class:`~._ratelimit.RateLimiter`
that learns its headers and paces the calls sent there; the loom's own limiter keeps only the
user's ``rpm``/``tpm`` caps (see docs/limits.md "Several endpoints").
"""

from __future__ import annotations

from loom_backends import EndpointPool

from ._adaptive import MAX_LIMIT, ConcurrencyLimit, _wake
from ._ratelimit import RateLimiter

__all__ = ["PoolLimit", "adapt_pool"]


class PoolLimit(ConcurrencyLimit):
    """The calls a loom may have in flight: the sum of its pool's endpoints' learned limits.

    Args:
        method: The endpoints' method (``"aimd"`` or ``"gradient"``), for the logs.
        pool: The pool, already adapted (see :func:`adapt_pool`).
    """

    def __init__(self, method: str, pool: EndpointPool) -> None:
        super().__init__(method)
        self._pool = pool
        self._limit = float(self._capacity())

    def _capacity(self) -> int:
        total = 0
        for endpoint in self._pool.status():
            if endpoint.state != "open":
                total += MAX_LIMIT if endpoint.limit is None else endpoint.limit
        # At least one: with every endpoint out, a call still goes and is told so at once.
        return max(1, min(total, MAX_LIMIT))

    def leave(self, epoch: int, latency: float | None, overload: bool) -> None:
        """Free a call's slot; the limit follows the endpoints' (the pool learned already)."""
        capacity = self._capacity()  # takes the pool's lock: not under ours
        with self._lock:
            self._limit = float(capacity)
            self._in_flight -= 1
            granted = self._grant()
        _wake(granted, self)

    def __repr__(self) -> str:
        return f"PoolLimit(method={self.method!r}, limit={self.limit}, in_flight={self.in_flight})"


def adapt_pool(pool: EndpointPool, method: str) -> None:
    """Give each endpoint of ``pool`` its own :class:`ConcurrencyLimit`, and its own
    :class:`~._ratelimit.RateLimiter` learning its server's rate-limit headers (if it has none).
    """
    pool.adapt(lambda name: ConcurrencyLimit(method, name=name), lambda _name: RateLimiter())
