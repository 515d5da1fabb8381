"""The token buckets of the rate limits: the user's (``rpm``/``tpm``) and the provider's mirrored.

A bucket refills continuously. Its size and rate are chosen so that a provider enforcing the
same limit never sees us exceed it (see ``docs/engine-parts.md``):

* refill at 98 % of the limit: the small shortfall absorbs timing jitter (our own sleeps waking
  late, requests reaching the server bunched), which matters most for small limits where the
  server's bucket holds a single request;
* a burst capacity of half a second's worth of the limit (at least 1): a server bucket holding
  one second's worth (``max(1, limit / 60)``) then keeps half a second of slack, and ``rpm=600``
  admits 5 requests at once instead of 10.

Everything here is plain arithmetic, called under its owner's lock.
"""

from __future__ import annotations

__all__ = ["Bucket", "Mirror"]

#: The share of a limit a bucket refills at (see the module docstring).
RATE_FACTOR = 0.98
#: Seconds of a limit a bucket holds (see the module docstring).
BURST_SECONDS = 0.5
# Below this a bucket counts as holding what was asked: float rounding must not turn "exactly
# enough after waiting the time we said" into another, vanishingly short wait.
EPSILON = 1e-9


class Bucket:
    """A token bucket refilled continuously; its level may go negative (debt)."""

    __slots__ = ("capacity", "level", "rate", "updated")

    def __init__(self, per_minute: float, now: float) -> None:
        self.rate = per_minute / 60.0 * RATE_FACTOR
        self.capacity = max(1.0, per_minute / 60.0 * BURST_SECONDS)
        self.level = self.capacity
        self.updated = now

    def refill(self, now: float) -> None:
        if now > self.updated:
            self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until the bucket holds ``amount`` (0.0 if it does now)."""
        missing = amount - self.level
        return 0.0 if missing <= EPSILON else missing / self.rate


class Mirror(Bucket):
    """A bucket mirroring one of the provider's: capacity ``limit``, refilled per minute."""

    __slots__ = ("limit",)

    def __init__(self, limit: int, now: float) -> None:
        super().__init__(float(max(1, limit)), now)
        self.limit = limit
        self.capacity = self.level = float(max(1, limit))

    def wait_for(self, amount: float) -> float:
        return super().wait_for(min(amount, self.capacity))
