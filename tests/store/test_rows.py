"""ResultRow validation: a bad row fails where it is built, with a message naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from loom_protocol import LoomUsageError
from loom_store import ResultRow


def _row(**changes: Any) -> ResultRow:
    fields: dict[str, Any] = {
        "task_name": "t",
        "task_id": "i",
        "config_fp": "c",
        "status": "succeeded",
    }
    return ResultRow(**{**fields, **changes})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"task_name": ""}, "task_name must be a non-empty string, got ''"),
        ({"task_id": None}, "task_id must be a non-empty string, got None"),
        ({"config_fp": 3}, "config_fp must be a non-empty string, got 3"),
        ({"status": "ok"}, "status must be 'succeeded' or 'failed', got 'ok'"),
        ({"data": {"a": 1}}, r"data must be a str \(JSON text\) or None, got dict"),
        ({"error": b"x"}, "error must be a str .* got bytes"),
        ({"attempts": -1}, "attempts must be an int >= 0, got -1"),
        ({"attempts": 1.5}, "attempts must be an int >= 0, got 1.5"),
        ({"attempts": True}, "attempts must be an int >= 0, got True"),
        ({"latency_ms": -3.0}, "latency_ms must be a finite number >= 0"),
        ({"latency_ms": float("nan")}, "latency_ms must be a finite number >= 0"),
        ({"latency_ms": "12"}, "latency_ms must be a finite number >= 0"),
    ],
)
def test_bad_rows_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(LoomUsageError, match=message):
        _row(**changes)


def test_numbers_and_str_subclasses_are_normalised() -> None:
    class Name(str):
        pass

    row = _row(task_name=Name("t"), latency_ms=12, attempts=2)
    assert type(row.task_name) is str and row.task_name == "t"
    assert row.latency_ms == 12.0 and type(row.latency_ms) is float
    assert _row(latency_ms=0.0).latency_ms == 0.0


def test_rows_are_frozen_values() -> None:
    row = _row()
    assert row == _row() and hash(row) == hash(_row())
    with pytest.raises(AttributeError):
        row.status = "failed"  # type: ignore[misc]
