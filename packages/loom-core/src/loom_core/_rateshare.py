"""A loom's rate limits shared with the other live workers of the tasks it runs.

``rpm`` and ``tpm`` given to a loom are limits for the whole task: when a batch runs as one of
``n`` live workers of its task on a shared store (known from their heartbeats in the store's
worker registry), the loom's limiter is set to ``1/n`` of each limit, recomputed at every look
at the registry (about once a second). When the loom runs several batches at once on tasks with
different numbers of workers, the most crowded one sets the share (the limiter is the loom's).
Once no batch of the loom is shared any more, the limits are the loom's own again.
"""

from __future__ import annotations

import threading

from ._ratelimit import RateLimiter

__all__ = ["RateShare"]


class RateShare:
    """Divides one loom's :class:`RateLimiter` among the live workers of its tasks.

    Args:
        limiter: The loom's limiter; its ``rpm`` and ``tpm`` are the limits of a whole task.
    """

    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter
        self._lock = threading.Lock()
        self._workers: dict[object, int] = {}
        self._divisor = 1

    @property
    def divisor(self) -> int:
        """The number of workers the limits are divided by now (1: the loom's own limits)."""
        return self._divisor

    def calls_per_s(self) -> float | None:
        """Requests a second this loom may send now (its share of ``rpm``); ``None``: no rpm."""
        rpm = self._limiter.rpm
        return None if rpm is None else rpm / self._divisor / 60.0

    def update(self, key: object, workers: int) -> None:
        """The batch ``key`` runs as one of ``workers`` live workers of its task."""
        with self._lock:
            self._workers[key] = max(1, workers)
            self._apply()

    def remove(self, key: object) -> None:
        """The batch ``key`` ended: it no longer counts."""
        with self._lock:
            self._workers.pop(key, None)
            self._apply()

    def _apply(self) -> None:
        divisor = max(self._workers.values(), default=1)
        if divisor == self._divisor or not self._limiter.enabled:
            self._divisor = divisor
            return
        self._divisor = divisor
        rpm, tpm = self._limiter.rpm, self._limiter.tpm
        self._limiter.set_rates(
            None if rpm is None else rpm / divisor, None if tpm is None else tpm / divisor
        )
