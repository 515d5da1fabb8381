"""Adaptive limits (issue 15): the concurrency limit, the limits learned from headers, and a
loom finding the provider's limits by itself — or, with ``adaptive=False``, keeping the fixed
ones of before."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
from typing import Any

import pytest

from loom_backends.testing import FakeLLMServer, RecordedRequest, ServerLimits
from loom_core._adaptive import ConcurrencyLimit, is_overload
from loom_core._delivery import ResultCollector
from loom_core._ratelimit import RateLimiter
from loom_protocol import (
    BackendError,
    Error,
    ErrorCode,
    LoomUsageError,
    RateLimitInfo,
    RateLimitWindow,
)

from .conftest import LoomFactory, echo_json


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _fill(limit: ConcurrencyLimit) -> None:
    while limit.try_enter():
        pass


# -- the concurrency limit ------------------------------------------------------------------


def test_slow_start_doubles_then_leaving_it_halves() -> None:
    limit = ConcurrencyLimit()
    assert limit.limit == 8
    _fill(limit)
    assert limit.in_flight == 8
    for _ in range(8):  # every answer while the limit binds adds one
        limit.leave(limit.epoch, 0.05, overload=False)
        _fill(limit)
    assert limit.limit == 16
    limit.leave(limit.epoch, None, overload=True)
    assert limit.limit == 8  # slow start overshoots: halved when it ends
    assert limit.epoch == 1
    _fill(limit)
    limit.leave(limit.epoch, None, overload=True)
    assert limit.limit == 7  # later backoffs take a tenth


def test_no_growth_while_the_limit_does_not_bind() -> None:
    limit = ConcurrencyLimit()
    for _ in range(50):
        assert limit.try_enter()
        limit.leave(limit.epoch, 0.05, overload=False)
    assert limit.limit == 8


def test_failures_of_calls_started_before_the_last_backoff_are_ignored() -> None:
    limit = ConcurrencyLimit(initial=40)
    _fill(limit)
    limit.leave(limit.epoch, None, overload=True)  # out of slow start: 20
    _fill(limit)
    started_in = limit.epoch
    limit.leave(started_in, None, overload=True)  # the first refusal of a burst backs off
    assert limit.limit == 18
    for _ in range(10):  # the rest of the burst, sent under the old limit: ignored
        limit.leave(started_in, None, overload=True)
    assert limit.limit == 18
    assert limit.backoffs == 2  # leaving slow start, then this burst's first refusal
    limit.leave(limit.epoch, None, overload=True)  # a call sent after it counts
    assert limit.limit == 16


def test_after_a_backoff_it_holds_below_the_refusal_then_probes() -> None:
    limit = ConcurrencyLimit(initial=40)
    _fill(limit)
    limit.leave(limit.epoch, None, overload=True)  # out of slow start: 20
    _fill(limit)
    limit.leave(limit.epoch, None, overload=True)  # refused at 20: 18

    def answers(n: int) -> None:
        for _ in range(n):
            _fill(limit)
            limit.leave(limit.epoch, 0.05, overload=False)

    answers(19)  # one round trip's worth of answers: one more, up to 19 (not refused)
    assert limit.limit == 19
    answers(300)  # held there...
    assert limit.limit == 19
    answers(100)  # ...for 20 round trips (380 answers), then one probe higher
    assert limit.limit == 20
    _fill(limit)
    limit.leave(limit.epoch, None, overload=True)  # the probe refused: back below it
    assert limit.limit == 18
    answers(40)
    assert limit.limit == 19


def test_aimd_backs_off_when_latency_doubles() -> None:
    limit = ConcurrencyLimit(initial=10)
    _fill(limit)
    for _ in range(200):
        limit.leave(limit.epoch, 0.05, overload=False)
        _fill(limit)
    grown = limit.limit
    for _ in range(30):
        limit.leave(limit.epoch, 0.5, overload=False)
        _fill(limit)
    assert limit.limit < grown
    assert limit.backoffs >= 1


def test_gradient_shrinks_as_latency_grows_and_grows_while_it_holds() -> None:
    limit = ConcurrencyLimit("gradient", initial=10)
    _fill(limit)
    for _ in range(100):
        limit.leave(limit.epoch, 0.05, overload=False)
        _fill(limit)
    grown = limit.limit
    assert grown > 10
    for _ in range(40):
        limit.leave(limit.epoch, 0.4, overload=False)
        _fill(limit)
    assert limit.limit < grown


def test_unknown_method_is_refused() -> None:
    with pytest.raises(LoomUsageError, match="adaptive must be"):
        ConcurrencyLimit("vegas")


def test_what_counts_as_overload() -> None:
    def error(code: ErrorCode, status: int | None = None) -> BackendError:
        return BackendError(Error(code=code, message="x", status=status, retryable=True))

    assert is_overload(error(ErrorCode.PROVIDER_RATE_LIMITED, 429))
    assert is_overload(error(ErrorCode.PROVIDER_TIMEOUT))
    assert is_overload(error(ErrorCode.PROVIDER_UNAVAILABLE, 503))
    assert is_overload(error(ErrorCode.PROVIDER_UNAVAILABLE, 529))
    assert not is_overload(error(ErrorCode.PROVIDER_UNAVAILABLE, 500))
    assert not is_overload(error(ErrorCode.PROVIDER_UNAVAILABLE))  # connection refused
    assert not is_overload(error(ErrorCode.PROVIDER_BAD_REQUEST, 400))


async def test_waiters_get_freed_slots_in_order_and_cancelled_ones_give_theirs_back() -> None:
    limit = ConcurrencyLimit(initial=1)
    assert limit.try_enter()
    order: list[int] = []

    async def wait(i: int) -> None:
        await limit.enter()
        order.append(i)

    first = asyncio.create_task(wait(1))
    cancelled = asyncio.create_task(wait(2))
    third = asyncio.create_task(wait(3))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    limit.leave(limit.epoch, 0.01, overload=False)
    await first
    limit.leave(limit.epoch, 0.01, overload=False)
    await third
    assert order == [1, 3]
    assert limit.in_flight == 1


async def test_a_slot_freed_on_another_thread_wakes_the_waiter() -> None:
    limit = ConcurrencyLimit(initial=1)
    assert limit.try_enter()
    waiter = asyncio.create_task(limit.enter())
    await asyncio.sleep(0)
    thread = threading.Thread(target=limit.leave, args=(0, 0.01, False))
    thread.start()
    await asyncio.wait_for(waiter, 5)
    thread.join()
    assert limit.in_flight == 1


# -- limits learned from headers --------------------------------------------------------------


def test_learned_limits_pace_to_what_remains() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    info = RateLimitInfo(requests=RateLimitWindow(limit=60, remaining=2, reset_s=58.0))
    assert limiter.learn(info) == "60 requests/min"
    assert limiter.learn(info) is None  # nothing new: nothing to log
    assert limiter.try_acquire() == 0.0
    assert limiter.try_acquire() == 0.0
    wait = limiter.try_acquire()
    assert wait == pytest.approx(1 / 0.98)  # 60/min refills one a second (98 %)
    clock.now += wait
    assert limiter.try_acquire() == 0.0


def test_a_report_of_less_remaining_lowers_the_budget_never_raises_it() -> None:
    clock = FakeClock()
    limiter = RateLimiter(clock=clock)
    limiter.learn(RateLimitInfo(requests=RateLimitWindow(limit=600, remaining=5)))
    limiter.learn(RateLimitInfo(requests=RateLimitWindow(limit=600, remaining=500)))
    taken = 0
    while limiter.try_acquire() == 0.0:
        taken += 1
    assert taken == 5
    limiter.learn(RateLimitInfo(requests=RateLimitWindow(limit=600, remaining=0)))
    assert limiter.try_acquire() > 0


def test_learned_tokens_and_the_users_caps_both_hold() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=60, clock=clock)  # the user's cap: 1 a second
    assert not limiter.counts_tokens
    limiter.learn(RateLimitInfo(tokens=RateLimitWindow(limit=600, remaining=150)))
    assert limiter.counts_tokens
    assert limiter.learned() == "600 tokens/min"
    assert limiter.try_acquire(100) == 0.0
    assert limiter.try_acquire(100) > 0  # the user's rpm bucket (half a second's worth: 1)
    clock.now += 1.1
    assert limiter.try_acquire(100) > 0  # the provider's tokens: 50 + 1.1 s x 9.8 left
    limiter.record_usage(100, 10)  # the first call used 10 of its 100
    assert limiter.try_acquire(100) == 0.0


def test_anthropic_input_tokens_stand_for_tokens() -> None:
    limiter = RateLimiter()
    limiter.learn(RateLimitInfo(input_tokens=RateLimitWindow(limit=40000, remaining=40000)))
    assert limiter.learned() == "40000 tokens/min"


# -- a loom against servers with limits -------------------------------------------------------


def _texts(n: int, prefix: str = "t") -> list[str]:
    return [f"{prefix} {i}" for i in range(n)]


def test_a_loom_paces_to_the_openai_headers(
    make_loom: LoomFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="loom")
    limits = ServerLimits(rpm=3000, headers="openai")  # 50 a second, a bucket of 50
    with FakeLLMServer(echo_json, latency=0.02, limits=limits) as server:
        loom = make_loom(server, response_model=dict)
        batch = loom.map(_texts(200))
        counts = server.status_counts
        collector = ResultCollector(
            False, None, loom._engine.runner, loom._engine.limiter, loom._engine.concurrency
        )
    assert len(batch.successful()) == 200
    assert counts.get(429, 0) <= 4, counts  # paced, not refused (a first burst at most)
    assert batch.elapsed_s >= (200 - 50) / 50 * 0.9  # it did wait for the budget
    lines = [r.getMessage() for r in caplog.records if r.name == "loom.ratelimit"]
    assert "the provider reports its limits: 3000 requests/min; pacing to them" in lines
    assert collector.postfix()["limits"] == "3000 requests/min"


async def test_an_async_loom_paces_to_the_anthropic_headers(amake_loom: LoomFactory) -> None:
    limits = ServerLimits(rpm=1200, headers="anthropic")  # 20 a second, a bucket of 20
    with FakeLLMServer(echo_json, latency=0.02, limits=limits) as server:
        loom = amake_loom(
            server, model="claude-test", base_url=server.anthropic_base_url, response_model=dict
        )
        batch = await loom.amap(_texts(70))
        counts = server.status_counts
    assert len(batch.successful()) == 70
    assert counts.get(429, 0) <= 3, counts
    assert batch.elapsed_s >= (70 - 20) / 20 * 0.9


def test_a_loom_finds_a_hidden_concurrency_cap(
    make_loom: LoomFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="loom.adaptive")
    limits = ServerLimits(max_in_flight=6)
    with FakeLLMServer(echo_json, latency=0.03, limits=limits) as server:
        loom = make_loom(server, response_model=dict)
        results = list(loom.stream(_texts(400)))  # the sync stream, this time
        counts = server.status_counts
    assert sum(r.is_success for r in results) == 400
    assert counts.get(429, 0) < 0.05 * 400, counts
    concurrency = loom._engine.concurrency
    assert concurrency is not None and 4 <= concurrency.limit <= 7
    assert any("concurrency" in r.getMessage() for r in caplog.records)


class SlowingHandler:
    """Answers in 20 ms for the first ``fast`` requests, then in 1 s (a server under load)."""

    def __init__(self, fast: int) -> None:
        self.fast = fast
        self.seen = 0

    async def __call__(self, request: RecordedRequest) -> str:
        self.seen += 1
        await asyncio.sleep(0.02 if self.seen <= self.fast else 1.0)
        return json.dumps({"text": request.last_user_text})


def test_a_server_that_slows_down_is_given_less(make_loom: LoomFactory) -> None:
    # No refusals: only the latency says the server has too much (vLLM queueing under load).
    with FakeLLMServer(SlowingHandler(fast=300)) as server:
        loom = make_loom(server, response_model=dict)
        batch = loom.map(_texts(600))
        counts = server.status_counts
    assert len(batch.successful()) == 600 and counts == {200: 600}
    concurrency = loom._engine.concurrency
    assert concurrency is not None and concurrency.backoffs >= 1
    assert concurrency.limit < 64


class PeakHandler:
    """Answers after ``delay``, counting the requests in flight at the server."""

    def __init__(self, delay: float = 0.03) -> None:
        self.delay = delay
        self.now = self.peak = 0

    async def __call__(self, request: RecordedRequest) -> str:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.now -= 1
        return json.dumps({"text": request.last_user_text})


def test_adaptive_false_is_the_fixed_behaviour_of_before(make_loom: LoomFactory) -> None:
    handler = PeakHandler()
    limits = ServerLimits(rpm=60_000, headers="openai")
    with FakeLLMServer(handler, limits=limits) as server:
        fixed = make_loom(server, response_model=dict, adaptive=False)
        assert len(fixed.map(_texts(60)).successful()) == 60
        assert handler.peak == 5  # the fixed default, from the first call on
        handler.peak = 0
        assert len(fixed.map(_texts(60, "u"), max_workers=12).successful()) == 60
        assert handler.peak == 12
        engine = fixed._engine
        assert engine.concurrency is None
        assert engine.limiter.learned() == ""  # the headers were not even read
        assert engine.runner.caller.call == engine.runner.caller._call_fixed
        collector = ResultCollector(False, None, engine.runner, engine.limiter, None)
        assert "conc" not in collector.postfix()
        handler.peak = 0
        adaptive = make_loom(server, response_model=dict)
        assert len(adaptive.map(_texts(300, "v")).successful()) == 300
        assert handler.peak > 12  # grew towards its ceiling of 64
        assert adaptive._engine.limiter.learned() == "60000 requests/min"


def test_adaptive_false_does_not_back_off(make_loom: LoomFactory) -> None:
    handler = PeakHandler(0.05)
    with FakeLLMServer(handler, limits=ServerLimits(max_in_flight=4)) as server:
        loom = make_loom(server, response_model=dict, adaptive=False, max_retries=10)
        batch = loom.map(_texts(40), max_workers=8)
        counts = server.status_counts
    assert len(batch.successful()) == 40
    assert counts.get(429, 0) > 4  # it kept sending 8 at a time into a cap of 4


@pytest.mark.parametrize("bad", ["fast", 1, None, 0.5])
def test_a_bad_adaptive_is_refused_at_construction(make_loom: LoomFactory, bad: Any) -> None:
    with FakeLLMServer() as server, pytest.raises(LoomUsageError, match="adaptive must be"):
        make_loom(server, adaptive=bad)


def test_concurrency_settings_do_not_change_the_fingerprint(make_loom: LoomFactory) -> None:
    with FakeLLMServer() as server:
        fps = {
            make_loom(server, adaptive=True).config_fp,
            make_loom(server, adaptive=False).config_fp,
            make_loom(server, adaptive="gradient", rpm=100, tpm=1000).config_fp,
        }
    assert len(fps) == 1


def test_the_progress_postfix_shows_concurrency(make_loom: LoomFactory) -> None:
    with FakeLLMServer(echo_json) as server:
        loom = make_loom(server, response_model=dict)
        loom.map(_texts(20))
        engine = loom._engine
        collector = ResultCollector(False, None, engine.runner, engine.limiter, engine.concurrency)
        shown = collector.postfix()
    assert shown["conc"] == f"0/{engine.concurrency.limit}"  # type: ignore[union-attr]
    assert "limits" not in shown  # nothing reported, nothing shown


def test_a_trickle_of_random_refusals_does_not_ratchet_the_limit_down_to_one() -> None:
    # 15 % of calls refused at random, whatever the load (the chaos scenario): AIMD settles
    # where its growth meets its cuts; only the first refusals and failed probes set the
    # ceiling it holds below.
    rng = random.Random(1)
    limit = ConcurrencyLimit()
    seen = []
    for _ in range(5000):
        _fill(limit)
        refused = rng.random() < 0.15
        limit.leave(limit.epoch, None if refused else 0.05, overload=refused)
        seen.append(limit.limit)
    assert min(seen[1000:]) >= 2
