"""backoff_delay: exponential growth, cap, equal jitter, Retry-After honoured."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from loom_core._retry import backoff_delay
from loom_protocol import LoomUsageError


class HighRandom(random.Random):
    """Always draws the top of the range."""

    def uniform(self, a: float, b: float) -> float:
        return b


class LowRandom(random.Random):
    """Always draws the bottom of the range."""

    def uniform(self, a: float, b: float) -> float:
        return a


def test_ceiling_doubles_until_the_cap() -> None:
    high = [backoff_delay(n, rng=HighRandom()) for n in range(1, 10)]
    assert high == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 20.0, 20.0, 20.0]


def test_floor_is_half_the_ceiling() -> None:
    low = [backoff_delay(n, base=1.0, cap=10.0, rng=LowRandom()) for n in range(1, 7)]
    assert low == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_jitter_stays_within_bounds_and_spreads() -> None:
    rng = random.Random(1234)
    for attempt in range(1, 9):
        ceiling = min(20.0, 0.5 * 2 ** (attempt - 1))
        samples = [backoff_delay(attempt, rng=rng) for _ in range(500)]
        assert all(ceiling / 2 <= s <= ceiling for s in samples)
        # Equal jitter uses the whole upper half, so workers that failed together spread out.
        assert max(samples) - min(samples) > 0.4 * ceiling


def test_huge_attempt_does_not_overflow() -> None:
    delay = backoff_delay(10_000, rng=HighRandom())
    assert delay == 20.0


def test_default_generator_ignores_global_seeding() -> None:
    random.seed(7)
    first = backoff_delay(5)
    random.seed(7)
    second = backoff_delay(5)
    assert 4.0 <= first <= 8.0
    assert 4.0 <= second <= 8.0
    assert first != second


@pytest.mark.parametrize("retry_after", [0.0, 0.3, 1.0, 3.0, 30.0, 120.0])
def test_never_less_than_retry_after(retry_after: float) -> None:
    rng = random.Random(99)
    for attempt in (1, 2, 3):
        for _ in range(200):
            delay = backoff_delay(attempt, retry_after=retry_after, rng=rng)
            backoff_ceiling = min(20.0, 0.5 * 2 ** (attempt - 1))
            jitter = min(1.0, 0.1 * retry_after + 0.05)
            assert delay >= retry_after
            assert delay <= max(retry_after + jitter, backoff_ceiling)


def test_retry_after_jitter_is_small() -> None:
    assert backoff_delay(1, retry_after=3.0, rng=HighRandom()) == pytest.approx(3.35)
    assert backoff_delay(1, retry_after=3.0, rng=LowRandom()) == 3.0
    assert backoff_delay(1, retry_after=60.0, rng=HighRandom()) == pytest.approx(61.0)


def test_longer_backoff_wins_over_a_short_retry_after() -> None:
    assert backoff_delay(6, retry_after=0.1, rng=LowRandom()) == 8.0


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"attempt": 0}, "attempt must be an int >= 1, got 0"),
        ({"attempt": -2}, "attempt must be an int >= 1"),
        ({"attempt": 1.5}, "attempt must be an int >= 1"),
        ({"attempt": True}, "attempt must be an int >= 1"),
        ({"attempt": 1, "base": -1.0}, "base must be a finite number >= 0"),
        ({"attempt": 1, "cap": math.inf}, "cap must be a finite number >= 0"),
        ({"attempt": 1, "retry_after": -1.0}, "retry_after must be a finite number >= 0"),
        ({"attempt": 1, "retry_after": math.nan}, "retry_after must be a finite number >= 0"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], expected: str) -> None:
    attempt = kwargs.pop("attempt")
    with pytest.raises(LoomUsageError, match=expected):
        backoff_delay(attempt, **kwargs)
