"""RateLimiter (rpm and tpm token buckets, pause, usage correction) and estimate_tokens."""

from __future__ import annotations

import asyncio
import heapq
import math
import random
import threading
import time
from typing import Any

import pytest

from loom_core._ratelimit import RateLimiter, estimate_tokens
from loom_protocol import ChatRequest, ImagePart, LoomUsageError, Message, TextPart


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def drain(limiter: RateLimiter, clock: FakeClock, count: int, tokens: int = 0) -> float:
    """Acquire ``count`` times, advancing the fake clock by each wait; the time it took."""
    start = clock.now
    for _ in range(count):
        while (wait := limiter.try_acquire(tokens)) > 0:
            clock.advance(wait)
    return clock.now - start


# --- construction -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -5, math.nan, math.inf, True, "600"])
@pytest.mark.parametrize("name", ["rpm", "tpm"])
def test_limits_must_be_positive_numbers(name: str, bad: Any) -> None:
    with pytest.raises(LoomUsageError, match=f"{name} must be a"):
        RateLimiter(**{name: bad})


def test_disabled_limiter_never_waits() -> None:
    limiter = RateLimiter()
    assert limiter.enabled is False
    assert all(limiter.try_acquire(10**9) == 0.0 for _ in range(10_000))
    assert RateLimiter(rpm=1).enabled is True
    assert RateLimiter(tpm=1).enabled is True
    assert repr(RateLimiter(rpm=600)) == "RateLimiter(rpm=600, tpm=None)"


@pytest.mark.parametrize("tokens", [-1, 1.5, True, None])
def test_bad_token_counts(tokens: Any) -> None:
    limiter = RateLimiter(tpm=1000)
    with pytest.raises(LoomUsageError, match="tokens must be an int >= 0"):
        limiter.try_acquire(tokens)
    with pytest.raises(LoomUsageError, match="estimated must be an int >= 0"):
        limiter.record_usage(tokens, 1)
    with pytest.raises(LoomUsageError, match="actual must be an int >= 0"):
        limiter.record_usage(1, tokens)


# --- rpm ----------------------------------------------------------------------------------------


def test_burst_is_half_a_second_of_the_limit() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=600, clock=clock)
    assert [limiter.try_acquire() for _ in range(5)] == [0.0] * 5
    wait = limiter.try_acquire()
    assert wait == pytest.approx(1 / (10 * 0.98))
    # Nothing was debited by the refused call: asking again gives the same answer.
    assert limiter.try_acquire() == pytest.approx(wait)
    clock.advance(wait)
    assert limiter.try_acquire() == 0.0


def test_small_limits_burst_one_request() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=30, clock=clock)
    assert limiter.try_acquire() == 0.0
    assert limiter.try_acquire() == pytest.approx(2 / 0.98)


def test_rpm_600_hundred_acquisitions_take_at_least_9_seconds() -> None:
    clock = FakeClock()
    elapsed = drain(RateLimiter(rpm=600, clock=clock), clock, 100)
    assert 9.0 <= elapsed <= 10.0


@pytest.mark.parametrize("rpm", [10, 60, 600, 5000])
def test_rate_over_two_minutes_is_close_to_the_limit(rpm: int) -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=rpm, clock=clock)
    acquired = 0
    end = clock.now + 120.0
    while True:
        wait = limiter.try_acquire()
        if wait > 0:
            if clock.now + wait > end:
                break
            clock.advance(wait)
        else:
            acquired += 1
    allowed = rpm * 2
    assert 0.95 * allowed <= acquired <= allowed


def _simulate_against_server(rpm: float, seed: int) -> tuple[int, int]:
    """8 eager workers behind one limiter send to a server enforcing ``rpm`` with a token bucket
    of capacity max(1, rpm/60). Wake-ups are up to 2 ms late, requests take 1-6 ms to arrive,
    and every second a 20 ms stall holds requests back and releases them together.

    Returns (requests sent, requests the server would refuse with 429).
    """
    rng = random.Random(seed)
    clock = FakeClock()
    limiter = RateLimiter(rpm=rpm, clock=clock)
    start = clock.now
    wakeups = [(start, worker) for worker in range(8)]
    sent: list[float] = []
    while wakeups:
        at, worker = heapq.heappop(wakeups)
        if at >= start + 120.0:
            continue
        clock.now = at
        wait = limiter.try_acquire()
        if wait > 0:
            heapq.heappush(wakeups, (at + wait + rng.uniform(0, 0.002), worker))
        else:
            sent.append(at)
            heapq.heappush(wakeups, (at + rng.uniform(0, 0.001), worker))
    arrivals = []
    for at in sent:
        arrival = at + 0.001 + rng.uniform(0, 0.005)
        phase = (arrival - start) % 1.0
        if phase < 0.02:
            arrival += 0.02 - phase
        arrivals.append(arrival)
    arrivals.sort()
    capacity, rate = max(1.0, rpm / 60), rpm / 60
    level, last, refused = capacity, start, 0
    for arrival in arrivals:
        level = min(capacity, level + (arrival - last) * rate)
        last = arrival
        if level >= 1.0:
            level -= 1.0
        else:
            refused += 1
    return len(sent), refused


@pytest.mark.parametrize("rpm", [20, 60, 90, 600, 3000])
def test_a_server_with_the_same_limit_almost_never_refuses(rpm: int) -> None:
    for seed in range(3):
        sent, refused = _simulate_against_server(rpm, seed)
        assert sent >= 0.95 * rpm * 2
        assert refused <= 0.005 * sent


# --- pause --------------------------------------------------------------------------------------


def test_pause_holds_every_acquisition() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=6000, clock=clock)
    limiter.pause(2.0)
    assert limiter.paused_for() == pytest.approx(2.0)
    assert limiter.try_acquire() == pytest.approx(2.0)
    clock.advance(0.5)
    assert limiter.try_acquire() == pytest.approx(1.5)
    limiter.pause(1.0)  # an earlier end does not shorten the pause
    assert limiter.paused_for() == pytest.approx(1.5)
    limiter.pause(3.0)  # a later one extends it
    assert limiter.paused_for() == pytest.approx(3.0)
    clock.advance(3.0)
    assert limiter.paused_for() == 0.0
    assert limiter.try_acquire() == 0.0


def test_pause_applies_without_limits() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    limiter.pause(1.0)
    assert limiter.try_acquire() == pytest.approx(1.0)
    clock.advance(1.0)
    assert limiter.try_acquire() == 0.0


@pytest.mark.parametrize("seconds", [-1.0, math.nan, math.inf, "1", True])
def test_bad_pause(seconds: Any) -> None:
    with pytest.raises(LoomUsageError, match="pause seconds must be"):
        RateLimiter().pause(seconds)


# --- tpm ----------------------------------------------------------------------------------------


def test_tpm_bucket_and_usage_correction() -> None:
    clock = FakeClock()
    limiter = RateLimiter(tpm=6000, clock=clock)  # 98 tokens/s, capacity 50
    assert limiter.try_acquire(30) == 0.0
    wait = limiter.try_acquire(30)
    assert wait == pytest.approx(10 / 98)
    # The call used 10 tokens, not 30: the 20 come back.
    limiter.record_usage(30, 10)
    assert limiter.try_acquire(30) == 0.0
    assert limiter.try_acquire(40) == pytest.approx(30 / 98)
    # A call that cost more than estimated puts the bucket in debt.
    limiter.record_usage(30, 130)  # 10 left - 100 more = a debt of 90
    assert limiter.try_acquire(0) == pytest.approx(90 / 98)


def test_record_usage_never_overfills_and_is_a_no_op_without_tpm() -> None:
    clock = FakeClock()
    limiter = RateLimiter(tpm=6000, clock=clock)
    limiter.record_usage(10_000, 0)
    assert limiter.try_acquire(50) == 0.0
    assert limiter.try_acquire(1) > 0
    rpm_only = RateLimiter(rpm=60, clock=clock)
    rpm_only.record_usage(0, 10**9)
    assert rpm_only.try_acquire(10**9) == 0.0


def test_oversize_request_goes_through_when_the_bucket_is_full() -> None:
    clock = FakeClock()
    limiter = RateLimiter(tpm=6000, clock=clock)  # capacity 50 tokens
    assert limiter.try_acquire(500) == 0.0
    # It left a debt of 450: the next one waits for a full bucket again.
    assert limiter.try_acquire(500) == pytest.approx(500 / 98)
    # The long-run rate still holds: 20 such requests need about 20 * 500 / 98 s.
    elapsed = drain(limiter, clock, 20, tokens=500)
    assert elapsed == pytest.approx(20 * 500 / 98, rel=0.01)


def test_both_limits_apply_and_the_longer_wait_wins() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=600, tpm=600, clock=clock)  # 5 requests, 5 tokens of burst
    assert limiter.try_acquire(5) == 0.0
    assert limiter.try_acquire(1) == pytest.approx(1 / 9.8)  # tokens, not requests, are short
    clock.advance(1.0)  # both buckets full again
    assert [limiter.try_acquire(0) for _ in range(5)] == [0.0] * 5
    assert limiter.try_acquire(0) == pytest.approx(1 / 9.8)  # now requests are short


def test_one_budget_across_threads() -> None:
    clock = FakeClock()  # frozen: only the burst can be acquired
    limiter = RateLimiter(rpm=6000, clock=clock)  # burst of 50
    acquired: list[int] = []

    def hammer() -> None:
        count = sum(1 for _ in range(1000) if limiter.try_acquire() == 0.0)
        acquired.append(count)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(acquired) == 50


# --- real time ----------------------------------------------------------------------------------


@pytest.mark.slow
async def test_rpm_600_hundred_acquisitions_from_8_tasks_take_at_least_9_seconds() -> None:
    limiter = RateLimiter(rpm=600)
    done: list[float] = []
    queue = list(range(100))

    async def worker() -> None:
        while queue:
            queue.pop()
            await limiter.acquire()
            done.append(time.monotonic())

    start = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(8)))
    elapsed = time.monotonic() - start
    assert len(done) == 100
    assert elapsed >= 9.0
    assert elapsed < 30.0  # generous: the machine is shared


def test_two_event_loops_in_two_threads_share_one_budget() -> None:
    limiter = RateLimiter(rpm=1200)  # burst 10, then 19.6 per second
    counts: list[int] = []

    async def take(count: int) -> None:
        for _ in range(count):
            await limiter.acquire()
        counts.append(count)

    threads = [threading.Thread(target=asyncio.run, args=(take(20),)) for _ in range(2)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    assert counts == [20, 20]
    # 40 acquisitions against one budget: (40 - 10) / 19.6 ≈ 1.53 s. Two separate budgets
    # would have needed only (20 - 10) / 19.6 ≈ 0.51 s.
    assert elapsed >= 1.3
    assert elapsed < 20.0


async def test_acquire_is_cancellable() -> None:
    limiter = RateLimiter(rpm=6)  # one request, then one every ~10 s
    await limiter.acquire()
    waiting = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, timeout=5)


async def test_acquire_returns_at_once_when_available() -> None:
    limiter = RateLimiter(rpm=600, tpm=100_000)
    start = time.monotonic()
    for _ in range(5):
        await limiter.acquire(100)
    assert time.monotonic() - start < 1.0


# --- estimate_tokens ----------------------------------------------------------------------------


def test_estimate_counts_text_images_and_max_tokens() -> None:
    request = ChatRequest(
        model="m",
        messages=[
            Message(role="system", content="s" * 40),
            Message(
                role="user",
                content=[
                    TextPart(text="t" * 80),
                    ImagePart(url="https://example.com/a.png"),
                    ImagePart(url="data:image/png;base64,AAAA"),
                ],
            ),
        ],
        max_tokens=300,
    )
    # 120 chars / 4 + 4 per message + 1000 per image + max_tokens
    assert estimate_tokens(request) == 30 + 8 + 2000 + 300


def test_estimate_without_max_tokens_and_with_a_schema() -> None:
    plain = ChatRequest(model="m", messages=[Message(role="user", content="abcde")])
    assert estimate_tokens(plain) == 2 + 4
    with_completion = plain.model_copy(update={"params": {"max_completion_tokens": 50}})
    assert estimate_tokens(with_completion) == 2 + 4 + 50
    fmt = {"type": "json_schema", "json_schema": {"name": "X", "schema": {"type": "object"}}}
    with_schema = plain.model_copy(update={"response_format": fmt})
    assert estimate_tokens(with_schema) > estimate_tokens(plain)
