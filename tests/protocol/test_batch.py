"""BatchResult: access, summary, to_records flattening, to_pandas."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from pydantic import BaseModel

from loom_protocol import (
    BatchResult,
    BatchSummary,
    Error,
    ErrorCode,
    SummaryCounter,
    TaskResult,
    Usage,
)


class Verdict(BaseModel):
    label: str
    score: float


def ok(
    task_id: str, data: Any, *, cached: bool = False, usage: Usage | None = None
) -> TaskResult[Any]:
    return TaskResult[Any](
        task_id=task_id, is_success=True, data=data, cached=cached, usage=usage, attempts=1
    )


def failed(task_id: str, code: ErrorCode = ErrorCode.JSON_INVALID) -> TaskResult[Any]:
    error = Error(code=code, message=f"{task_id} went wrong")
    return TaskResult[Any](task_id=task_id, is_success=False, error=error, attempts=3)


@pytest.fixture
def batch() -> BatchResult[Any]:
    return BatchResult[Any](
        results=[
            ok(
                "t0",
                Verdict(label="pos", score=0.9),
                usage=Usage(prompt_tokens=10, completion_tokens=5),
            ),
            failed("t1"),
            ok(
                "t2",
                {"label": "neg", "score": 0.1},
                usage=Usage(prompt_tokens=7, completion_tokens=3),
            ),
            # A cache hit: its usage belongs to an earlier run and must not be counted again.
            ok(
                "t3",
                "plain text",
                cached=True,
                usage=Usage(prompt_tokens=100, completion_tokens=100),
            ),
            failed("t4", ErrorCode.PROVIDER_TIMEOUT),
        ],
        elapsed_s=2.5,
    )


def ids(results: Any) -> list[str]:
    return [r.task_id for r in results]


def test_successful_and_failed_keep_input_order(batch: BatchResult[Any]) -> None:
    assert ids(batch.successful()) == ["t0", "t2", "t3"]
    assert ids(batch.failed()) == ["t1", "t4"]


def test_len_iter_getitem(batch: BatchResult[Any]) -> None:
    assert len(batch) == 5
    assert ids(batch) == ["t0", "t1", "t2", "t3", "t4"]
    assert batch[0].task_id == "t0"
    assert batch[-1].task_id == "t4"
    assert ids(batch[1:3]) == ["t1", "t2"]
    with pytest.raises(IndexError):
        batch[5]
    assert len(BatchResult[str]()) == 0
    assert list(BatchResult[str]()) == []


def test_summary_counts_and_tokens(batch: BatchResult[Any]) -> None:
    assert batch.summary == BatchSummary(
        total=5,
        succeeded=3,
        failed=2,
        cached=1,
        prompt_tokens=17,
        completion_tokens=8,
        total_tokens=25,
        # Results made without a price: their calls cost an unknown amount, not 0.
        cost_usd=None,
        elapsed_s=2.5,
    )


def test_summary_counter_matches_the_batch_one_result_at_a_time(batch: BatchResult[Any]) -> None:
    counter = SummaryCounter()
    for done, result in enumerate(batch, start=1):
        counter.add(result)
        assert counter.done == done
    assert counter.summary(2.5) == batch.summary
    assert SummaryCounter().summary(-1.0).elapsed_s == 0.0


def test_to_records_flattens_data(batch: BatchResult[Any]) -> None:
    records = batch.to_records()
    meta = {"task_id", "is_success", "cached", "error_code", "error", "attempts"}
    assert [set(r) - meta for r in records] == [
        {"label", "score"},  # a model, by model_dump
        set(),  # failed: no data
        {"label", "score"},  # a dict, by its keys
        {"data"},  # a str, as the column "data"
        set(),
    ]
    assert records[0] == {
        "task_id": "t0",
        "is_success": True,
        "cached": False,
        "error_code": None,
        "error": None,
        "attempts": 1,
        "label": "pos",
        "score": 0.9,
    }
    assert records[1]["error_code"] == "json_invalid"
    assert records[1]["error"] == "t1 went wrong"
    assert records[1]["is_success"] is False
    assert records[3]["data"] == "plain text"
    assert records[3]["cached"] is True
    assert records[4]["error_code"] == "provider_timeout"
    json.dumps(records, allow_nan=False)


def test_to_records_renames_a_data_key_that_clashes_with_a_meta_column() -> None:
    batch = BatchResult[dict[str, Any]](
        results=[
            TaskResult[dict[str, Any]](
                task_id="t0", is_success=True, data={"task_id": "from the model", "error": "none"}
            )
        ]
    )
    (record,) = batch.to_records()
    assert record["task_id"] == "t0"
    assert record["error"] is None
    assert record["data.task_id"] == "from the model"
    assert record["data.error"] == "none"


def test_to_records_of_none_data_on_success() -> None:
    batch = BatchResult[str](results=[TaskResult[str](task_id="t", is_success=True, data=None)])
    assert batch.to_records() == [
        {
            "task_id": "t",
            "is_success": True,
            "cached": False,
            "error_code": None,
            "error": None,
            "attempts": 0,
        }
    ]


def test_to_pandas(batch: BatchResult[Any]) -> None:
    import pandas as pd

    frame = batch.to_pandas()
    assert isinstance(frame, pd.DataFrame)
    assert len(frame) == 5
    assert list(frame["task_id"]) == ["t0", "t1", "t2", "t3", "t4"]
    assert {"label", "score", "data", "error_code"} <= set(frame.columns)
    assert frame.loc[0, "label"] == "pos"
    assert frame.loc[3, "data"] == "plain text"
    assert frame.loc[4, "error_code"] == "provider_timeout"


def test_to_pandas_names_the_extra_when_pandas_is_missing() -> None:
    # A real import failure in a fresh interpreter: None in sys.modules makes `import pandas`
    # raise ModuleNotFoundError, exactly as when pandas is not installed.
    script = textwrap.dedent(
        """
        import sys
        sys.modules["pandas"] = None
        from loom_protocol import BatchResult, TaskResult
        batch = BatchResult[str](results=[TaskResult[str](task_id="t", is_success=True, data="x")])
        assert batch.to_records()  # everything but pandas still works
        try:
            batch.to_pandas()
        except ImportError as exc:
            print(type(exc).__name__, exc, sep=": ")
            print("cause:", type(exc.__cause__).__name__)
        else:
            raise SystemExit("to_pandas() did not raise")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    first, cause = proc.stdout.splitlines()
    assert first.startswith("ImportError: BatchResult.to_pandas() needs pandas")
    assert "loom-core[pandas]" in first
    assert cause == "cause: ModuleNotFoundError"


# -- tokens are counted once per call, not once per position -----------------------------------


def called(task_id: str, latency_ms: float, tokens: tuple[int, int]) -> TaskResult[Any]:
    return TaskResult[Any](
        task_id=task_id,
        is_success=True,
        data="x",
        attempts=1,
        latency_ms=latency_ms,
        usage=Usage(prompt_tokens=tokens[0], completion_tokens=tokens[1]),
    )


def test_one_call_delivered_to_five_positions_counts_once() -> None:
    # The engine asks duplicate inputs once and hands the same result to every position.
    shared = called("dup", 12.5, (10, 5))
    other = called("other", 3.0, (1, 1))
    batch = BatchResult[Any](results=[shared, shared, other, shared, shared, shared])
    summary = batch.summary
    assert (summary.total, summary.succeeded, summary.cached) == (6, 6, 0)
    assert (summary.prompt_tokens, summary.completion_tokens, summary.total_tokens) == (11, 6, 17)
    counter = SummaryCounter()
    for result in batch:
        counter.add(result)
    assert counter.summary(batch.elapsed_s) == summary
    # Equal copies (as after a JSON round trip, e.g. on an SSE consumer) are the same call.
    copies = BatchResult[Any].model_validate_json(batch.model_dump_json())
    assert copies.summary == summary
    # One row per position, whatever the tokens say.
    assert len(batch.to_records()) == 6
    assert len(batch.to_pandas()) == 6


def test_a_task_called_again_counts_again() -> None:
    # The same input asked twice in two calls (no store, far apart) is paid twice.
    first = called("again", 12.5, (10, 5))
    second = called("again", 40.0, (10, 5))
    assert BatchResult[Any](results=[first, second]).summary.total_tokens == 30


def test_cached_results_count_no_tokens_but_count_as_cached() -> None:
    hit = called("hit", 12.5, (10, 5)).model_copy(update={"cached": True})
    summary = BatchResult[Any](results=[hit, hit]).summary
    assert (summary.total, summary.cached, summary.total_tokens) == (2, 2, 0)


def test_a_streaming_counter_remembers_a_bounded_number_of_calls() -> None:
    counter = SummaryCounter(remember=2)
    shared = called("dup", 1.0, (1, 0))
    counter.add(shared)
    for i in range(3):
        counter.add(called(f"t{i}", 1.0, (1, 0)))
    counter.add(shared)  # forgotten by now: counted again, never less than once
    assert counter.summary().prompt_tokens == 5
    assert len(counter._calls) == 2
