"""How long to wait before retrying a failed provider call."""

from __future__ import annotations

import math
import random

from loom_protocol import LoomUsageError

__all__ = ["backoff_delay"]

# The module's own generator: seeding or reseeding the global ``random`` module elsewhere (as
# tests and notebooks often do) must not make every worker of a loom retry in lockstep.
_RNG = random.Random()


def backoff_delay(
    attempt: int,
    *,
    base: float = 0.5,
    cap: float = 20.0,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt``: exponential backoff with equal jitter.

    The ceiling grows as ``d = min(cap, base * 2 ** (attempt - 1))`` and the delay is drawn
    uniformly from ``[d / 2, d]``: half of it guarantees the backoff grows, the random half
    spreads out workers that failed together so they do not retry in lockstep.

    When the provider said how long to wait (``Retry-After``), the delay is never shorter: it is
    ``retry_after`` plus a small jitter (at most ``min(1, 0.1 * retry_after + 0.05)`` seconds), or
    the backoff above if that is longer.

    Args:
        attempt: 1 for the first retry, 2 for the second, ...
        base: The ceiling of the first retry's delay, in seconds.
        cap: The largest ceiling, in seconds.
        retry_after: Seconds the provider asked to wait, if it said.
        rng: The random generator (inject a seeded one for reproducible delays).

    Returns:
        The delay in seconds.

    Raises:
        LoomUsageError: ``attempt`` < 1, or a negative or non-finite ``base``, ``cap`` or
            ``retry_after``.
    """
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise LoomUsageError(f"attempt must be an integer >= 1, got {attempt!r}")
    for name, value in (("base", base), ("cap", cap)):
        if not math.isfinite(value) or value < 0:
            raise LoomUsageError(f"{name} must be a finite number >= 0, got {value!r}")
    if retry_after is not None and (not math.isfinite(retry_after) or retry_after < 0):
        raise LoomUsageError(f"retry_after must be a finite number >= 0, got {retry_after!r}")
    rng = rng or _RNG
    # Limit the exponent so that a large attempt number cannot overflow the float.
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 64))
    delay = ceiling / 2 + rng.uniform(0, ceiling / 2)
    if retry_after is None:
        return delay
    honoured = retry_after + rng.uniform(0, min(1.0, 0.1 * retry_after + 0.05))
    return max(honoured, delay)
