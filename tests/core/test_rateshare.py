"""A task's rpm/tpm shared among its live workers, and two looms of one process as two workers."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from loom_backends.testing import FakeBackend, FakeLLMServer, RecordedRequest
from loom_core import TaskLoom
from loom_core._ratelimit import RateLimiter
from loom_core._rateshare import RateShare
from loom_protocol import LoomUsageError
from loom_store import ResultStore

from .conftest import LoomFactory, echo_json


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _rate_per_s(limiter: RateLimiter, clock: Clock, seconds: float) -> float:
    """Requests admitted per second over ``seconds`` of the fake clock (after a full bucket)."""
    while limiter.try_acquire() == 0.0:  # empty the burst
        pass
    admitted = 0
    end = clock.now + seconds
    while clock.now < end:
        clock.now += 0.01
        while limiter.try_acquire() == 0.0:
            admitted += 1
    return admitted / seconds


def test_set_rates_changes_the_rate_at_once() -> None:
    clock = Clock()
    limiter = RateLimiter(rpm=600, clock=clock)
    assert _rate_per_s(limiter, clock, 10) == pytest.approx(9.8, abs=0.2)
    limiter.set_rates(200, None)
    assert _rate_per_s(limiter, clock, 10) == pytest.approx(3.27, abs=0.15)
    # The configured limits stay the loom's own.
    assert limiter.rpm == 600


def test_set_rates_refuses_a_bad_limit() -> None:
    limiter = RateLimiter(rpm=600, tpm=1000)
    with pytest.raises(LoomUsageError, match="rpm"):
        limiter.set_rates(0, 500)
    with pytest.raises(LoomUsageError, match="tpm"):
        limiter.set_rates(300, float("inf"))


def test_a_share_divides_by_the_most_crowded_task_and_restores() -> None:
    clock = Clock()
    limiter = RateLimiter(rpm=600, tpm=60_000, clock=clock)
    share = RateShare(limiter)
    share.update("batch-a", 3)
    share.update("batch-b", 2)
    assert share.divisor == 3
    assert _rate_per_s(limiter, clock, 10) == pytest.approx(3.27, abs=0.15)
    share.remove("batch-a")
    assert share.divisor == 2
    share.remove("batch-b")
    assert share.divisor == 1
    assert _rate_per_s(limiter, clock, 10) == pytest.approx(9.8, abs=0.2)


def test_a_share_without_limits_changes_nothing() -> None:
    limiter = RateLimiter()
    share = RateShare(limiter)
    share.update("batch", 4)
    assert share.divisor == 4
    assert limiter.try_acquire() == 0.0


async def test_two_looms_on_one_task_call_each_input_once(
    amake_loom: LoomFactory, tmp_path: Path
) -> None:
    # Two looms are two workers even in one process: the second joins, waits until the
    # first claims its inputs too, and they split the rest.
    async def slow_echo(request: RecordedRequest) -> str:
        await asyncio.sleep(0.01)
        return echo_json(request)

    slow = FakeBackend(slow_echo)
    first = amake_loom(slow, db_path=tmp_path / "shared.db")
    second = amake_loom(slow, db_path=tmp_path / "shared.db")
    inputs = [{"text": f"item {i}"} for i in range(400)]

    async def slow_map(loom: TaskLoom[Any], delay: float) -> Any:
        await asyncio.sleep(delay)
        return await loom.amap(inputs, task_name="two-looms", max_workers=4)

    one, two = await asyncio.gather(slow_map(first, 0), slow_map(second, 0.2))
    for results in (one, two):
        assert [r.data for r in results] == [f'{{"text": "item {i}"}}' for i in range(400)]
    assert len(slow.requests) == 400
    with ResultStore(tmp_path / "shared.db") as store:
        assert store.stats("two-looms").total == 400
        # Both left: no worker and no claim remains.
        assert store.workers("two-looms", first.config_fp, "nobody").peers == 0


@pytest.mark.slow
def test_a_task_rpm_is_shared_by_its_live_workers(make_loom: LoomFactory, tmp_path: Path) -> None:
    # rpm=600 for the task: two looms on it hold 10 requests a second together, not each.
    with FakeLLMServer(latency=0.01) as server:
        looms = [make_loom(server, db_path=tmp_path / "rate.db", rpm=600) for _ in range(2)]
        inputs = [{"text": f"item {i}"} for i in range(90)]

        started = time.monotonic()
        threads = [
            threading.Thread(target=loom.map, args=(inputs,), kwargs={"task_name": "rate"})
            for loom in looms
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        assert server.request_count == 90
        times = sorted(r.received_at for r in server.requests)
    # After both joined (within a second), the pair holds about 9.8 requests a second; each
    # at 9.8 alone would have finished in about 5 s.
    steady = [t for t in times if t >= times[0] + 2.0]
    rate = (len(steady) - 1) / (steady[-1] - steady[0])
    assert rate < 12.5, f"{rate:.1f} requests/s for a task limit of 10/s"
    assert elapsed > 7
