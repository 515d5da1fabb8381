"""TaskResult.to_record and BatchResult.to_records/to_pandas with the input's columns, and
record_columns, the header of a table of those records."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from loom_protocol import BatchResult, Error, ErrorCode, TaskResult, data_column, record_columns


class Answer(BaseModel):
    index: int
    label: str


def _batch() -> BatchResult[Any]:
    return BatchResult[Any](
        results=[
            TaskResult[Any](
                task_id="t0",
                is_success=True,
                data={"label": "pos", "input.text": "clash", "error": "none"},
                input_data={"text": "I like it", "lang": "en"},
            ),
            TaskResult[Any](
                task_id="t1",
                is_success=False,
                error=Error(code=ErrorCode.JSON_INVALID, message="bad"),
                input_data={"text": "meh"},
            ),
            TaskResult[Any](task_id="t2", is_success=True, data="plain", input_data={"text": "x"}),
        ]
    )


def test_to_records_with_the_input_prefixes_its_keys() -> None:
    first, second, third = _batch().to_records(include_input=True)
    assert first == {
        "task_id": "t0",
        "is_success": True,
        "cached": False,
        "error_code": None,
        "error": None,
        "attempts": 0,
        "input.text": "I like it",
        "input.lang": "en",
        "label": "pos",
        "data.input.text": "clash",  # a data key never shadows an input column
        "data.error": "none",
    }
    assert second["input.text"] == "meh" and second["error_code"] == "json_invalid"
    assert third["input.text"] == "x" and third["data"] == "plain"
    # Without the flag: no input column, the same data columns.
    assert "input.text" not in _batch().to_records()[0]
    assert _batch().to_records()[0]["data.input.text"] == "clash"


def test_to_record_keeps_data_whole_when_asked_and_renames_index() -> None:
    result = TaskResult[Answer](
        task_id="t", is_success=True, data=Answer(index=3, label="a"), input_data={"q": 1}
    )
    assert result.to_record()["data.index"] == 3
    assert result.to_record(flatten_data=False)["data"] == {"index": 3, "label": "a"}
    assert data_column("index") == "data.index"
    assert data_column("task_id") == "data.task_id"
    assert data_column("input.x") == "data.input.x"
    assert data_column("inputs") == "inputs"


def test_to_pandas_with_the_input() -> None:
    pytest.importorskip("pandas")
    frame = _batch().to_pandas(include_input=True)
    assert list(frame["input.text"]) == ["I like it", "meh", "x"]
    assert "input.text" not in _batch().to_pandas().columns


META = ["task_id", "is_success", "cached", "error_code", "error", "attempts"]


def test_record_columns_name_every_records_columns_in_record_order() -> None:
    columns = record_columns(["text", "lang"], ["label", "input.text", "error", "data"])
    assert columns == [
        *META, "input.text", "input.lang", "label", "data.input.text", "data.error", "data",
    ]  # fmt: skip
    for record in _batch().to_records(include_input=True):
        assert [column for column in columns if column in record] == list(record)
    for record in _batch().to_records():
        assert set(record) <= set(record_columns(None, ["label", "input.text", "error", "data"]))


def test_record_columns_defaults_and_a_key_renamed_onto_another() -> None:
    assert record_columns() == [*META, "data"]  # data kept whole: one column
    assert record_columns([], []) == META
    # `index` is written `data.index`: a data key spelled so is the same column, once.
    assert record_columns(None, ["index", "data.index", "name"]) == [*META, "data.index", "name"]
    result = TaskResult[Answer](task_id="t", is_success=True, data=Answer(index=1, label="a"))
    assert list(result.to_record()) == record_columns(None, Answer.model_fields)
