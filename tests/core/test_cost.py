"""Cost per task and per batch, and the max_cost / max_tokens_total caps, against FakeLLMServer."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loom_backends import CallableBackend
from loom_backends.testing import FakeLLMServer, FakeReply, RecordedRequest
from loom_core import TaskLoom
from loom_protocol import (
    BUNDLED_PRICES,
    BatchEndEvent,
    ErrorCode,
    LoomUsageError,
    TaskResult,
    TaskResultEvent,
)
from loom_store import ResultStore

from .conftest import LoomFactory

PROMPT, COMPLETION = 1000, 500
#: Dollars per million tokens: one call (1,000 in, 500 out) costs $0.002.
PRICES = {"fake-model": {"input": 1.0, "output": 2.0, "cached_input": 0.25}}
CALL = 0.002
N = 40
WORKERS = 4
WINDOW = WORKERS * CALL  # the most the calls in flight can add once the cap is reached


def scripted(req: RecordedRequest) -> FakeReply:
    """Every answer reports the same usage, so a run's cost is known in advance."""
    return FakeReply(
        content=json.dumps({"text": req.last_user_text}),
        usage={"prompt_tokens": PROMPT, "completion_tokens": COMPLETION},
        delay=0.005,
    )


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(scripted) as srv:
        yield srv


def inputs(n: int = N) -> list[str]:
    return [f"input number {i}" for i in range(n)]


def spent(results: list[TaskResult[Any]]) -> float:
    """What the calls of a run cost: its new (not cached) results."""
    return sum(r.cost_usd or 0.0 for r in results if not r.cached)


def stored(db: Path, task: str) -> tuple[int, int]:
    with ResultStore(db) as store:
        stats = store.stats(task)
    return stats.succeeded, stats.failed


# -- cost on results and summaries ------------------------------------------------------------


def test_cost_per_task_and_batch_then_cached_costs_nothing_new(
    server: FakeLLMServer, make_loom: LoomFactory
) -> None:
    loom = make_loom(server, prices=PRICES)
    first = loom.map(inputs(10), task_name="cost")
    assert [r.cost_usd for r in first] == [pytest.approx(CALL)] * 10
    assert first.summary.cost_usd == pytest.approx(10 * CALL)
    again = loom.map(inputs(10), task_name="cost")
    assert all(r.cached for r in again)
    # A cached result says what it cost when it was made; the batch spent nothing new.
    assert [r.cost_usd for r in again] == [pytest.approx(CALL)] * 10
    assert again.summary.cost_usd == 0.0
    assert server.request_count == 10


def test_unknown_price_is_none_not_zero(server: FakeLLMServer, make_loom: LoomFactory) -> None:
    batch = make_loom(server).map(inputs(3))
    assert [r.cost_usd for r in batch] == [None] * 3
    assert batch.summary.cost_usd is None
    assert batch.summary.total_tokens == 3 * (PROMPT + COMPLETION)


def test_bundled_price_of_a_known_model(server: FakeLLMServer, make_loom: LoomFactory) -> None:
    result = make_loom(server, model="gpt-4o-mini").process("x")
    price = BUNDLED_PRICES["gpt-4o-mini"]
    expected = (PROMPT * price.input + COMPLETION * price.output) / 1e6
    assert result.cost_usd == pytest.approx(expected)


def test_cached_input_tokens_cost_the_cached_price(make_loom: LoomFactory) -> None:
    def cache_hit(_req: RecordedRequest) -> FakeReply:
        usage = {"prompt_tokens": PROMPT, "completion_tokens": COMPLETION, "cached_tokens": 800}
        return FakeReply(content="ok", usage=usage)

    with FakeLLMServer(cache_hit) as srv:
        result = make_loom(srv, prices=PRICES).process("x")
    assert result.usage is not None and result.usage.cached_tokens == 800
    assert result.cost_usd == pytest.approx((200 * 1.0 + 800 * 0.25 + COMPLETION * 2.0) / 1e6)


def test_prices_are_checked_at_construction(server: FakeLLMServer) -> None:
    with pytest.raises(LoomUsageError, match=r"prices\['fake-model'\]\['input'\]"):
        TaskLoom("fake-model", "{{ text }}", base_url=server.base_url, api_key="k",
                 prices={"fake-model": {"input": -1, "output": 1}})  # fmt: skip
    with pytest.raises(LoomUsageError, match="max_cost is an argument of map"):
        TaskLoom("fake-model", "{{ text }}", base_url=server.base_url, api_key="k", max_cost=1)


def test_prices_change_no_fingerprint(server: FakeLLMServer, make_loom: LoomFactory) -> None:
    assert make_loom(server).config_fp == make_loom(server, prices=PRICES).config_fp


# -- the caps ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "said"),
    [
        ({"max_cost": 0}, "max_cost must be a finite number of dollars > 0"),
        ({"max_cost": -1.0}, "max_cost"),
        ({"max_cost": math.nan}, "max_cost"),
        ({"max_cost": True}, "max_cost"),
        ({"max_cost": "1"}, "max_cost"),
        ({"max_tokens_total": 0}, "max_tokens_total must be an int >= 1"),
        ({"max_tokens_total": 1.5}, "max_tokens_total"),
        ({"max_tokens_total": True}, "max_tokens_total"),
    ],
)
def test_bad_caps_raise_at_the_call(
    server: FakeLLMServer, make_loom: LoomFactory, kwargs: dict[str, Any], said: str
) -> None:
    loom = make_loom(server, prices=PRICES)
    with pytest.raises(LoomUsageError, match=said):
        loom.map(["x"], **kwargs)
    with pytest.raises(LoomUsageError, match=said):
        loom.stream(["x"], **kwargs)  # at the call, not at the first next()
    assert server.request_count == 0


def test_max_cost_without_a_price_raises_at_the_call(
    server: FakeLLMServer, make_loom: LoomFactory
) -> None:
    loom = make_loom(server, model="my-local-model")
    for method in (loom.map, loom.stream, loom.stream_events):
        with pytest.raises(LoomUsageError, match="max_cost needs the price of model"):
            method(["x"], max_cost=1.0)
    # A token cap needs no price.
    assert loom.map(["x"], max_tokens_total=10**6)[0].is_success


def _check_stopped_at_half(results: list[TaskResult[Any]], cap: float, per_call: float) -> int:
    """The run stopped within one in-flight window of ``cap``; the rest is budget_exceeded."""
    done = [r for r in results if r.is_success]
    rest = [r for r in results if not r.is_success]
    assert rest, "the cap stopped nothing"
    assert {r.error.code for r in rest if r.error} == {ErrorCode.BUDGET_EXCEEDED}
    assert all(r.error and r.error.retryable for r in rest)
    assert all(r.attempts == 0 and r.usage is None for r in rest)
    total = len(done) * per_call
    window = WORKERS * per_call
    assert cap - window <= total <= cap + window, (total, cap, window)
    return len(done)


RUNNERS: dict[str, Callable[..., list[TaskResult[Any]]]] = {
    "map": lambda loom, xs, **kw: list(loom.map(xs, **kw)),
    "stream": lambda loom, xs, **kw: list(loom.stream(xs, **kw)),
    "stream_events": lambda loom, xs, **kw: [
        e.result for e in loom.stream_events(xs, **kw) if isinstance(e, TaskResultEvent)
    ],
    "amap": lambda loom, xs, **kw: list(asyncio.run(loom.amap(xs, **kw))),
    "astream": lambda loom, xs, **kw: asyncio.run(_collect(loom.astream(xs, **kw))),
}


async def _collect(results: Any) -> list[TaskResult[Any]]:
    return [r async for r in results]


@pytest.mark.parametrize("how", sorted(RUNNERS))
def test_max_cost_at_half_stops_within_one_window_then_a_higher_cap_continues(
    server: FakeLLMServer, make_loom: LoomFactory, tmp_path: Path, how: str
) -> None:
    loom = make_loom(server, prices=PRICES, max_tokens=COMPLETION)
    run = RUNNERS[how]
    cap = N * CALL / 2
    first = run(loom, inputs(), task_name="half", max_workers=WORKERS, max_cost=cap)
    assert len(first) == N
    done = _check_stopped_at_half(first, cap, CALL)
    assert spent(first) == pytest.approx(done * CALL)
    assert server.request_count == done  # no call was made for a budget_exceeded task
    # Not stored as failures of the task: only the successes are in the store.
    assert stored(tmp_path / "loom.db", "half") == (done, 0)
    second = run(loom, inputs(), task_name="half", max_workers=WORKERS, max_cost=1.0)
    assert all(r.is_success for r in second)
    assert sum(r.cached for r in second) == done
    assert server.request_count == N
    assert spent(second) == pytest.approx((N - done) * CALL)


def test_max_tokens_total_at_half(
    server: FakeLLMServer, make_loom: LoomFactory, tmp_path: Path
) -> None:
    loom = make_loom(server, max_tokens=COMPLETION)  # no price: tokens need none
    per_call = PROMPT + COMPLETION
    cap = N * per_call // 2
    first = loom.map(inputs(), task_name="tok", max_workers=WORKERS, max_tokens_total=cap)
    done = _check_stopped_at_half(list(first), cap, per_call)
    assert first.summary.total_tokens == done * per_call
    assert "max_tokens_total=" in str(first.failed()[0].error)
    assert stored(tmp_path / "loom.db", "tok") == (done, 0)
    rest = loom.map(inputs(), task_name="tok", max_workers=WORKERS, max_tokens_total=10**9)
    assert rest.summary.succeeded == N and rest.summary.cached == done


def test_without_max_tokens_the_mean_answer_is_the_estimate(
    server: FakeLLMServer, make_loom: LoomFactory
) -> None:
    # No max_tokens: the first calls assume DEFAULT_OUTPUT_TOKENS, later ones the mean seen.
    # Calls that do not fit while others are in flight wait for them rather than end the
    # batch: a cautious estimate does not stop the run a whole window short of the cap.
    loom = make_loom(server, prices=PRICES)
    cap = N * CALL / 2
    results = list(loom.map(inputs(), max_workers=WORKERS, max_cost=cap))
    done = _check_stopped_at_half(results, cap, CALL)
    assert done * CALL >= cap - 2 * CALL


def test_a_cap_below_one_call_calls_nothing(server: FakeLLMServer, make_loom: LoomFactory) -> None:
    loom = make_loom(server, prices=PRICES, max_tokens=COMPLETION)
    batch = loom.map(inputs(5), max_cost=CALL / 10)
    assert [r.error.code for r in batch if r.error] == [ErrorCode.BUDGET_EXCEEDED] * 5
    assert "max_cost=$0.0002 reached" in str(batch[0].error)
    assert server.request_count == 0
    assert batch.summary.cost_usd == 0.0


def test_cached_results_use_no_budget(server: FakeLLMServer, make_loom: LoomFactory) -> None:
    loom = make_loom(server, prices=PRICES, max_tokens=COMPLETION)
    loom.map(inputs(10), task_name="warm")
    # Ten cached, ten new: a cap of about six calls lets the cached through and stops the new.
    batch = loom.map(inputs(20), task_name="warm", max_workers=1, max_cost=6.5 * CALL)
    assert sum(r.cached for r in batch) == 10
    new_done = sum(r.is_success and not r.cached for r in batch)
    assert 5 <= new_done <= 7
    assert batch.summary.cost_usd == pytest.approx(new_done * CALL)


def test_stream_events_summary_carries_the_cost(
    server: FakeLLMServer, make_loom: LoomFactory
) -> None:
    loom = make_loom(server, prices=PRICES, max_tokens=COMPLETION)
    events = list(loom.stream_events(inputs(6), max_cost=1.0))
    end = events[-1]
    assert isinstance(end, BatchEndEvent)
    assert end.summary.cost_usd == pytest.approx(6 * CALL)
    assert json.loads(end.model_dump_json())["summary"]["cost_usd"] == pytest.approx(6 * CALL)


# -- attacks ----------------------------------------------------------------------------------


def test_leaving_a_capped_stream_while_calls_wait_does_not_hang(
    server: FakeLLMServer, make_loom: LoomFactory
) -> None:
    # A cap of about two calls: the other workers wait for room when the consumer leaves.
    loom = make_loom(server, prices=PRICES, max_tokens=COMPLETION)
    stream = loom.stream(inputs(), max_workers=8, max_cost=2.5 * CALL)
    first = next(stream)
    stream.close()
    assert first.is_success or first.error is not None
    # The loom is still usable and the next capped batch has a budget of its own.
    assert loom.map(inputs(2), max_cost=1.0).summary.succeeded == 2


def test_a_reask_the_budget_refuses_keeps_what_was_spent(make_loom: LoomFactory) -> None:
    answers = iter(["not json at all", json.dumps({"ok": True})])

    def once_bad(_req: RecordedRequest) -> FakeReply:
        usage = {"prompt_tokens": PROMPT, "completion_tokens": COMPLETION}
        return FakeReply(content=next(answers), usage=usage)

    with FakeLLMServer(once_bad) as srv:
        loom = make_loom(srv, prices=PRICES, response_model=dict, max_tokens=COMPLETION)
        # Room for the first call (estimated ~$0.001, costs $0.002), not for the re-ask.
        batch = loom.map(["x"], task_name="reask", max_cost=1.5 * CALL)
        assert srv.request_count == 1
    result = batch[0]
    assert result.error is not None and result.error.code is ErrorCode.BUDGET_EXCEEDED
    assert result.attempts == 1
    assert result.cost_usd == pytest.approx(CALL)
    assert batch.summary.cost_usd == pytest.approx(CALL)


def test_failed_calls_cost_nothing_against_the_cap(make_loom: LoomFactory) -> None:
    def refused(_req: RecordedRequest) -> FakeReply:
        return FakeReply(content="no", status=400)

    with FakeLLMServer(refused) as srv:
        loom = make_loom(srv, prices=PRICES, max_tokens=COMPLETION)
        batch = loom.map(inputs(10), max_workers=2, max_cost=3 * CALL)
    assert {r.error.code for r in batch if r.error} == {ErrorCode.PROVIDER_BAD_REQUEST}
    assert srv.request_count == 10


def test_answers_without_usage_count_their_estimate(tmp_path: Path) -> None:
    backend = CallableBackend(lambda _req: "answer")  # a plain str: no usage reported
    loom: TaskLoom[Any] = TaskLoom(
        "fake-model", "{{ text }}", backend=backend, db_path=tmp_path / "x.db", max_tokens=100
    )
    batch = loom.map(inputs(20), max_workers=2, max_tokens_total=500)
    done = batch.summary.succeeded
    # Each call is estimated at ~(prompt + 100) tokens and, with no usage, counted so.
    assert 1 <= done <= 5
    assert all(r.cost_usd is None for r in batch)
    assert {r.error.code for r in batch.failed() if r.error} == {ErrorCode.BUDGET_EXCEEDED}
    loom.close()


def test_duplicates_are_called_and_paid_once(server: FakeLLMServer, make_loom: LoomFactory) -> None:
    loom = make_loom(server, prices=PRICES, max_tokens=COMPLETION)
    batch = loom.map(["same"] * 10 + ["other"], max_cost=1.0)
    assert server.request_count == 2
    assert batch.summary.cost_usd == pytest.approx(2 * CALL)
