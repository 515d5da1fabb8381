"""How long to wait before retrying a failed provider call, and when not to wait at all."""

from __future__ import annotations

import math
import random

from loom_protocol import (
    check_int,
    check_non_negative_number,
    check_positive_number,
    is_number,
)

__all__ = ["DEFAULT_MAX_RETRY_WAIT", "asked_wait", "backoff_delay", "check_max_retry_wait"]

#: The longest wait (a backoff, or the loom-wide pause after a 429) the engine accepts, seconds.
DEFAULT_MAX_RETRY_WAIT = 60.0

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
    max_wait: float | None = None,
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
        max_wait: The delay never exceeds this (the loom's ``max_retry_wait``); a
            ``retry_after`` above it is the caller's to refuse (see :func:`asked_wait`).

    Returns:
        The delay in seconds.

    Raises:
        LoomUsageError: ``attempt`` < 1, or a negative or non-finite ``base``, ``cap`` or
            ``retry_after``, or a ``max_wait`` that is not a finite number > 0.
    """
    check_int("attempt", attempt, 1)
    for name, value in (("base", base), ("cap", cap)):
        check_non_negative_number(name, value)
    if retry_after is not None:
        check_non_negative_number("retry_after", retry_after)
    if max_wait is not None:
        check_max_retry_wait(max_wait, "max_wait")
        cap = min(cap, max_wait)
    rng = rng or _RNG
    # Limit the exponent so that a large attempt number cannot overflow the float.
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 64))
    delay = ceiling / 2 + rng.uniform(0, ceiling / 2)
    if retry_after is not None:
        honoured = retry_after + rng.uniform(0, min(1.0, 0.1 * retry_after + 0.05))
        delay = max(honoured, delay)
    return delay if max_wait is None else min(delay, max_wait)


def check_max_retry_wait(value: object, name: str = "max_retry_wait") -> float:
    """``value`` as a number of seconds, checked finite and > 0 (the shared check).

    Raises:
        LoomUsageError: ``value`` is not a finite number > 0.
    """
    return check_positive_number(name, value, " of seconds")


def asked_wait(retry_after: object) -> float | None:
    """What a backend's ``retry_after`` asks for, as the engine reads it.

    Backends are third-party code: ``None``, NaN or a non-number ask nothing; a negative wait
    is 0; ``inf`` (a wait too long to write down) stays infinite, so that it is refused.
    """
    if not is_number(retry_after) or math.isnan(retry_after):
        return None
    return max(0.0, float(retry_after))
