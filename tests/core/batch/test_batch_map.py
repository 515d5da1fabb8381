"""map(..., batch=True) and the lower-level job methods against an in-process Batch API."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from loom_backends.testing import FakeBackend
from loom_core import LoomUsageError
from loom_protocol import (
    BackendError,
    ChatRequest,
    Error,
    ErrorCode,
    ProviderBatchLimits,
    ProviderBatchState,
)

from .conftest import BatchFake, LoomFactory


def _texts(n: int, prefix: str = "doc") -> list[str]:
    return [f"{prefix} {i}" for i in range(n)]


def test_map_batch_results_in_input_order_and_second_call_sends_nothing(
    provider: BatchFake, make_loom: LoomFactory
) -> None:
    loom = make_loom(provider)
    inputs = _texts(50)
    result = loom.map(inputs, task_name="t", batch=True)
    assert [r.data for r in result] == [{"text": t} for t in inputs]
    assert all(r.provider_batch and r.is_success and not r.cached for r in result)
    assert result.summary.provider_batch == 50
    assert result.summary.prompt_tokens == 150
    assert len(provider.submissions) == 1
    assert "acomplete" not in provider.calls

    again = loom.map(inputs, task_name="t", batch=True)
    assert [r.data for r in again] == [r.data for r in result]
    assert all(r.cached for r in again)
    assert again.summary.provider_batch == 0
    assert len(provider.submissions) == 1


def test_only_uncached_inputs_are_submitted(provider: BatchFake, make_loom: LoomFactory) -> None:
    loom = make_loom(provider)
    loom.map(_texts(10), task_name="t")  # online: stored
    result = loom.map(_texts(15), task_name="t", batch=True)
    assert len(result) == 15
    assert sum(r.cached for r in result) == 10
    ((_, sent),) = provider.submissions
    assert len(sent) == 5


def test_duplicates_and_invalid_inputs(provider: BatchFake, make_loom: LoomFactory) -> None:
    loom = make_loom(provider)
    inputs: list[Any] = ["a", "b", "a", 42, {"text": "b"}]
    result = loom.map(inputs, task_name="t", batch=True)
    assert [r.is_success for r in result] == [True, True, True, False, True]
    assert result[3].error is not None and result[3].error.code == ErrorCode.INPUT_INVALID
    assert result[0].data == result[2].data == {"text": "a"}
    ((_, sent),) = provider.submissions
    assert len(sent) == 2


def test_split_by_request_count_and_bytes(make_loom: LoomFactory) -> None:
    provider = BatchFake(limits=ProviderBatchLimits(max_requests=7, max_bytes=10_000))
    loom = make_loom(provider)
    result = loom.map(_texts(30), task_name="t", batch=True)
    assert all(r.is_success for r in result)
    sizes = [len(ids) for _, ids in provider.submissions]
    assert sizes == [7, 7, 7, 7, 2]
    # Every line of "doc 10".."doc 19" has the same encoded size.
    line = len(json.dumps(provider.batches["batch_00001"].lines[3]).encode()) + 1
    provider2 = BatchFake(limits=ProviderBatchLimits(max_requests=1000, max_bytes=3 * line + 2))
    loom2 = make_loom(provider2, db_path=loom._session.url + "2")
    loom2.map([f"doc {i}" for i in range(10, 20)], task_name="t", batch=True)
    assert [len(ids) for _, ids in provider2.submissions] == [3, 3, 3, 1]
    # Every custom_id is unique and embeds its batch's token.
    ids = [cid for _, batch in provider.submissions for cid in batch]
    assert len(set(ids)) == len(ids)


def test_a_request_larger_than_a_batch_fails_alone(make_loom: LoomFactory) -> None:
    provider = BatchFake(limits=ProviderBatchLimits(max_requests=10, max_bytes=400))
    loom = make_loom(provider)
    result = loom.map(["short", "x" * 1000], task_name="t", batch=True)
    assert result[0].is_success
    assert result[1].error is not None
    assert result[1].error.code == ErrorCode.PROVIDER_BAD_REQUEST
    assert "bytes" in result[1].error.message


def test_expiry_keeps_finished_answers_and_resubmits_only_the_rest(
    provider: BatchFake, make_loom: LoomFactory
) -> None:
    provider.finish_share = 0.6
    loom = make_loom(provider)
    provider_calls = provider.submissions
    provider.polls = 1
    # After the first batch, later ones finish whole.
    original = provider._finish

    def finish(batch: Any, share: float, end: ProviderBatchState) -> None:
        original(batch, share if batch.batch_id == "batch_00000" else 1.0, end)

    provider._finish = finish  # type: ignore[method-assign]
    result = loom.map(_texts(100), task_name="t", batch=True)
    assert all(r.is_success for r in result)
    assert [len(ids) for _, ids in provider_calls] == [100, 40]
    first_ids = provider_calls[0][1]
    resent = provider_calls[1][1]
    assert len(set(resent)) == 40
    status = loom.batch_status("t", refresh=False)
    assert [b.round for b in status.batches] == [0, 1]
    assert status.batches[0].counts.succeeded == 60
    assert status.batches[0].counts.expired == 40
    assert status.expired == 40 and status.succeeded == 100
    assert first_ids[0] != resent[0]


def test_expiry_beyond_max_retries_fails_the_rest(make_loom: LoomFactory) -> None:
    provider = BatchFake()
    provider.finish_share = 0.5
    loom = make_loom(provider, max_retries=2)
    result = loom.map(_texts(8), task_name="t", batch=True)
    # 4 answered in round 0, 2 in round 1, 1 in round 2; the last one never finished.
    assert sum(r.is_success for r in result) == 7
    (failed,) = result.failed()
    assert failed.error is not None and failed.error.retryable
    assert [len(ids) for _, ids in provider.submissions] == [8, 4, 2]


def test_invalid_answer_is_reasked_in_a_follow_up_batch_with_feedback(
    make_loom: LoomFactory,
) -> None:
    def answer(request: ChatRequest) -> str:
        if len(request.messages) == 1:
            return "not json at all"
        return json.dumps({"text": "fixed", "turns": len(request.messages)})

    provider = BatchFake(answer)
    loom = make_loom(provider, auto_repair_json=False)
    result = loom.map(["q1", "q2"], task_name="t", batch=True)
    assert [r.data for r in result] == [{"text": "fixed", "turns": 3}] * 2
    assert [r.attempts for r in result] == [2, 2]
    assert result[0].usage is not None and result[0].usage.prompt_tokens == 6
    assert [len(ids) for _, ids in provider.submissions] == [2, 2]
    followup = provider.batches["batch_00001"].lines[0]["body"]["messages"]
    assert followup[1] == {"role": "assistant", "content": "not json at all"}
    assert "JSON" in followup[2]["content"]


def test_truncated_answer_is_never_accepted(make_loom: LoomFactory) -> None:
    provider = BatchFake()
    loom = make_loom(provider, max_retries=0)
    original = provider._finish

    def finish(batch: Any, share: float, end: ProviderBatchState) -> None:
        original(batch, share, end)
        batch.outcomes = [
            o.model_copy(
                update={"response": o.response.model_copy(update={"finish_reason": "length"})}
            )
            for o in batch.outcomes
        ]

    provider._finish = finish  # type: ignore[method-assign]
    result = loom.map(["a"], task_name="t", batch=True)
    assert not result[0].is_success
    assert result[0].raw_output is not None


def test_errored_requests_classified(provider: BatchFake, make_loom: LoomFactory) -> None:
    provider.errors = {
        0: Error(code=ErrorCode.PROVIDER_BAD_REQUEST, message="bad request body"),
        1: Error(code=ErrorCode.PROVIDER_UNAVAILABLE, message="server error", retryable=True),
    }
    loom = make_loom(provider)
    original = provider._finish

    def finish(batch: Any, share: float, end: ProviderBatchState) -> None:
        if batch.batch_id != "batch_00000":
            provider.errors = {}
        original(batch, share, end)

    provider._finish = finish  # type: ignore[method-assign]
    result = loom.map(["a", "b", "c"], task_name="t", batch=True)
    by_text = {r.input_data["text"]: r for r in result}
    bad = [r for r in result if not r.is_success]
    assert len(bad) == 1 and bad[0].error is not None
    assert bad[0].error.code == ErrorCode.PROVIDER_BAD_REQUEST
    assert sum(r.is_success for r in by_text.values()) == 2
    assert [len(ids) for _, ids in provider.submissions] == [3, 1]


def test_polling_survives_5xx_and_network_errors(
    provider: BatchFake, make_loom: LoomFactory
) -> None:
    flaky = Error(code=ErrorCode.PROVIDER_UNAVAILABLE, message="502", retryable=True)
    provider.polls = 3
    provider.fail = {
        "aget_batch": [BackendError(flaky), BackendError(flaky)],
        "aresults": [BackendError(flaky)],
    }
    loom = make_loom(provider)
    result = loom.map(_texts(5), task_name="t", batch=True)
    assert all(r.is_success for r in result)
    assert len(provider.submissions) == 1


def test_refused_submit_fails_the_tasks(provider: BatchFake, make_loom: LoomFactory) -> None:
    refused = Error(code=ErrorCode.PROVIDER_BAD_REQUEST, message="413 file too large", status=413)
    provider.fail = {"asubmit_batch": [BackendError(refused)]}
    loom = make_loom(provider)
    result = loom.map(_texts(3), task_name="t", batch=True)
    assert all(r.error is not None and r.error.status == 413 for r in result)
    assert loom.batch_status("t", refresh=False).batches[0].state == "refused"


def test_usage_errors(provider: BatchFake, make_loom: LoomFactory) -> None:
    loom = make_loom(provider)
    with pytest.raises(LoomUsageError, match="task_name"):
        loom.map(["a"], batch=True)
    with pytest.raises(LoomUsageError, match="task_name"):
        loom.submit_batch(["a"], task_name=None)  # type: ignore[arg-type]
    with pytest.raises(LoomUsageError, match="batch must be True or False"):
        loom.map(["a"], task_name="t", batch="yes")  # type: ignore[arg-type]
    # A provider batch is paid when it runs: a cap checked before each call cannot hold it.
    with pytest.raises(LoomUsageError, match="do not apply to batch=True"):
        loom.map(["a"], task_name="t", batch=True, max_cost=1.0)
    with pytest.raises(LoomUsageError, match="do not apply to batch=True"):
        asyncio.run(loom.amap(["a"], task_name="t", batch=True, max_tokens_total=10))
    assert provider.submissions == []
    online = make_loom(FakeBackend())
    with pytest.raises(LoomUsageError, match="AnthropicBackend") as info:
        online.map(["a"], task_name="t", batch=True)
    assert "FakeBackend" in str(info.value)
    with pytest.raises(LoomUsageError, match="Batch API"):
        online.batch_status("t")


def test_submit_status_collect(provider: BatchFake, make_loom: LoomFactory) -> None:
    provider.polls = 3
    loom = make_loom(provider)
    status = loom.submit_batch(_texts(20), task_name="t")
    assert status.submitted == 20 and status.open_batches == 1
    assert loom.submit_batch(_texts(20), task_name="t").submitted == 20
    assert len(provider.submissions) == 1
    assert len(loom.collect_batch("t")) == 0  # not done yet
    status = loom.batch_status("t")
    assert status.in_progress == 20
    collected = loom.collect_batch("t", wait=True)
    assert sorted(r.input_data["text"] for r in collected) == sorted(_texts(20))
    assert loom.batch_status("t").done
    assert all(r.cached for r in loom.map(_texts(20), task_name="t", batch=True))


def test_cancel_keeps_finished_and_fails_the_rest(
    provider: BatchFake, make_loom: LoomFactory
) -> None:
    provider.polls = 100
    loom = make_loom(provider)
    loom.submit_batch(_texts(10), task_name="t")
    batch = provider.batches["batch_00000"]
    status = loom.cancel_batch("t")
    assert provider.calls["acancel_batch"] == 1
    assert status.batches[0].cancel_requested
    assert batch.state == ProviderBatchState.CANCELLED
    collected = loom.collect_batch("t", wait=True)
    assert len(collected) == 10
    assert all(r.error is not None and r.error.code == ErrorCode.CANCELLED for r in collected)
    assert len(provider.submissions) == 1
    assert loom.batch_status("t").done


async def test_async_twins(provider: BatchFake, make_loom: LoomFactory) -> None:
    loom = make_loom(provider)

    async def inputs() -> Any:
        for text in _texts(4):
            yield text

    result = await loom.amap(inputs(), task_name="t", batch=True)
    assert [r.data for r in result] == [{"text": t} for t in _texts(4)]
    status = await loom.asubmit_batch(_texts(6), task_name="t")
    assert status.submitted == 6  # the 4 stored are not sent again; 2 new in a second batch
    assert len(provider.submissions) == 2
    assert (await loom.abatch_status("t")).open_batches == 1
    assert len(await loom.acollect_batch("t", wait=True)) == 2
    assert (await loom.acancel_batch("t")).done


def test_a_batch_failed_whole_fails_its_tasks_with_the_reason(
    provider: BatchFake, make_loom: LoomFactory
) -> None:
    provider.fail_whole = Error(
        code=ErrorCode.PROVIDER_BAD_REQUEST, message="line 1: unsupported parameter"
    )
    loom = make_loom(provider)
    result = loom.map(_texts(3), task_name="t", batch=True)
    assert all(r.error is not None and "unsupported parameter" in r.error.message for r in result)
    assert len(provider.submissions) == 1


def test_progress_bar_and_inputs_that_do_not_render(
    provider: BatchFake, make_loom: LoomFactory
) -> None:
    loom = make_loom(provider, prompt_template="{{ text }} / {{ extra }}")
    result = loom.map(
        [{"text": "a", "extra": "x"}, {"text": "b"}], task_name="t", batch=True, progress=True
    )
    assert result[0].is_success
    assert result[1].error is not None and result[1].error.code == ErrorCode.TEMPLATE_ERROR
    ((_, sent),) = provider.submissions
    assert len(sent) == 1


def test_rate_limits_do_not_throttle_batch_submission(
    provider: BatchFake, make_loom: LoomFactory
) -> None:
    import time

    # One request a minute online; a whole batch of 200 is not held back by it.
    loom = make_loom(provider, rpm=1, tpm=10)
    started = time.monotonic()
    result = loom.map(_texts(200), task_name="t", batch=True)
    assert all(r.is_success for r in result)
    assert time.monotonic() - started < 20
    assert "acomplete" not in provider.calls
