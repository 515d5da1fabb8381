"""The store's argument checks are loom_protocol's: a bool is never a number, a wait is checked."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loom_protocol import LoomUsageError
from loom_store import ResultRow, ResultStore, StoreWriter


@pytest.mark.parametrize("bad", [True, False, -1, math.nan, math.inf, "1", 86_401])
@pytest.mark.parametrize("method", ["flush", "close"])
def test_a_writer_wait_must_be_a_number_of_seconds(
    sqlite_target: Any, method: str, bad: Any
) -> None:
    with ResultStore(sqlite_target.target) as store:
        writer = store.writer()
        with pytest.raises(
            LoomUsageError, match=r"^timeout must be a finite number of seconds >= 0"
        ):
            getattr(writer, method)(timeout=bad)
        assert not writer.closed  # refused before anything was done
        writer.flush(timeout=0)  # nothing pending: no wait at all
        writer.close(timeout=5)


@pytest.mark.parametrize(
    ("call", "problem"),
    [
        (lambda s: StoreWriter(s, max_batch=True), "max_batch must be an int >= 1, got True"),
        (lambda s: list(s.iter_results("t", batch_size=True)), "batch_size must be an int >= 1"),
        (lambda s: s.stats(""), "task_name must be a non-empty string, got ''"),
        (lambda s: s.runs(None), "task_name must be a non-empty string, got None"),
    ],
)
def test_store_arguments(
    sqlite_target: Any, call: Callable[[ResultStore], object], problem: str
) -> None:
    with ResultStore(sqlite_target.target) as store, pytest.raises(LoomUsageError, match=problem):
        call(store)


def test_a_bool_busy_timeout_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        LoomUsageError, match="busy_timeout_s must be a finite number of seconds > 0"
    ):
        ResultStore(tmp_path / "x.db", busy_timeout_s=True)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"attempts": False}, "ResultRow.attempts must be an int >= 0, got False"),
        ({"latency_ms": True}, "ResultRow.latency_ms must be a finite number >= 0, got True"),
        ({"task_id": ""}, "ResultRow.task_id must be a non-empty string, got ''"),
    ],
)
def test_row_fields(changes: dict[str, Any], problem: str) -> None:
    fields: dict[str, Any] = {"task_name": "t", "task_id": "i", "config_fp": "c"}
    with pytest.raises(LoomUsageError, match=problem):
        ResultRow(**{**fields, "status": "succeeded", **changes})
