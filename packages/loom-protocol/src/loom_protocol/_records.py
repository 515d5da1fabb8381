"""Flat records of task results: the one place their columns are defined.

A flat record is one result as one dict of plain values, a row of a table: ``task_id``,
``is_success``, ``cached``, ``error_code``, ``error`` (the message), ``attempts``; with the
input, one ``input.<key>`` column per input key; then the data, flattened. Every table of
results is built here: :meth:`TaskResult.to_record` and ``BatchResult.to_records`` /
``to_pandas`` return these records, and the ``loom`` command line writes them as the rows of
its CSV files (``loom run -o x.csv`` adds the input's ``index``; ``loom export`` the stored
row's status and timestamps), under a header from :func:`record_columns`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from ._results import TaskResult

__all__ = ["data_column", "flat_record", "record_columns"]

# The columns that describe the task rather than its data, in record order.
_META_COLUMNS = ("task_id", "is_success", "cached", "error_code", "error", "attempts")

#: The prefix of the input's columns in a flat record (``include_input=True``).
INPUT_PREFIX = "input."


def data_column(key: str) -> str:
    """The flat-record column of the data key ``key``.

    A key that is also a meta column (``task_id``, ``error``...) or that starts with
    ``input.`` would collide with a column of its own record: it is written ``data.<key>``.
    The rule depends on the key only, so a header fixed in advance names the same columns.
    """
    if key in _META_COLUMNS or key.startswith(INPUT_PREFIX) or key == "index":
        return f"data.{key}"
    return key


def record_columns(
    input_keys: Iterable[str] | None = None, data_keys: Iterable[str] = ("data",)
) -> list[str]:
    """The columns of a table of flat records, in the order :func:`flat_record` writes them.

    Args:
        input_keys: The input keys that get an ``input.<key>`` column (``None``: no input).
        data_keys: The data's keys (a model's fields, the keys seen in dicts; ``"data"`` for
            data that is not flattened), each mapped by :func:`data_column`; a key that maps
            to a column already named is not repeated.
    """
    inputs = [f"{INPUT_PREFIX}{key}" for key in input_keys or ()]
    data = dict.fromkeys(data_column(key) for key in data_keys)
    return [*_META_COLUMNS, *inputs, *data]


def _flatten_data(data: Any) -> dict[str, Any]:
    if isinstance(data, BaseModel):
        return data.model_dump(mode="json")
    if isinstance(data, dict):
        return dict(data)
    return {"data": data}


def flat_record(
    result: TaskResult[Any], *, include_input: bool = False, flatten_data: bool = True
) -> dict[str, Any]:
    """``result`` as one flat record (the body of :meth:`TaskResult.to_record`).

    Args:
        result: The result.
        include_input: Add the input's keys as ``input.<key>`` columns.
        flatten_data: ``False`` keeps the data whole, in the one column ``data`` (a model as
            its JSON dump), for a table whose header is fixed before the answers are known.
    """
    error = result.error
    record: dict[str, Any] = {
        "task_id": result.task_id,
        "is_success": result.is_success,
        "cached": result.cached,
        "error_code": error.code.value if error is not None else None,
        "error": error.message if error is not None else None,
        "attempts": result.attempts,
    }
    if include_input:
        for key, value in result.input_data.items():
            record[f"{INPUT_PREFIX}{key}"] = value
    data = result.data
    if data is None:
        return record
    if not flatten_data:
        record["data"] = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
        return record
    for key, value in _flatten_data(data).items():
        record[data_column(key)] = value
    return record
