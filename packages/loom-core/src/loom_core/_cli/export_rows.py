"""The rows of ``loom export``: stored rows read back as results, or joined to an input file."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from typing import Any

from loom_core._task import PreparedInput, prepare_input
from loom_protocol import Error, ErrorCode, TaskResult, record_columns
from loom_store import ResultRow, ResultStore

from .inputs import BadRecord, InputSource

__all__ = ["ExportRow", "export_columns", "joined_rows", "spaced_json", "stored_rows"]

#: Columns after the flat record's, describing where a stored row came from.
_ROW_COLUMNS = ("model", "config_fp", "created_at", "updated_at")
#: The JSON of ``loom export``'s lines (with spaces after ``:`` and ``,``, unlike ``loom run``).
spaced_json = json.JSONEncoder(ensure_ascii=False).encode
_CHUNK = 500


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text  # keep a damaged cell visible rather than failing the whole export


def _row_error(row: ResultRow) -> Error | None:
    if row.status == "succeeded":
        return None
    try:
        return Error.model_validate_json(row.error or "")
    except ValueError:
        return Error(code=ErrorCode.INTERNAL, message=row.error or "no error was stored")


class ExportRow:
    """One exported row: a stored row, a record without one, or a bad input record.

    The stored row is read back as a :class:`TaskResult` (never ``cached``: it is the stored
    one), so its CSV row is the flat record of ``loom_protocol``, as in ``loom run``.
    """

    __slots__ = ("index", "result", "row", "status")

    def __init__(
        self,
        result: TaskResult[Any],
        status: str,
        *,
        row: ResultRow | None = None,
        index: int | None = None,
    ) -> None:
        self.result = result
        self.status = status
        self.row = row
        self.index = index

    @classmethod
    def of_row(cls, row: ResultRow, index: int | None = None) -> ExportRow:
        stored_input = _loads(row.input)
        result = TaskResult[Any].model_construct(
            task_id=row.task_id,
            is_success=row.status == "succeeded",
            data=_loads(row.data),
            error=_row_error(row),
            input_data=stored_input if isinstance(stored_input, dict) else {},
            raw_output=row.raw_output,
            reasoning=row.reasoning,
            cached=False,
            attempts=row.attempts,
            usage=None,
            latency_ms=row.latency_ms,
            model=row.model,
        )
        return cls(result, row.status, row=row, index=index)

    def json_record(self) -> dict[str, Any]:
        """The JSONL row: the result's fields, with the stored row's status and stamps."""
        r, row = self.result, self.row
        record: dict[str, Any] = {} if self.index is None else {"index": self.index}
        record.update(
            {
                "task_id": r.task_id,
                "status": self.status,
                "is_success": r.is_success,
                "data": r.data,
                "error": r.error.model_dump(mode="json") if r.error is not None else None,
                "input_data": r.input_data,
                "raw_output": r.raw_output,
                "reasoning": r.reasoning,
                "attempts": r.attempts,
                "usage": _loads(row.usage) if row is not None else None,
                "latency_ms": r.latency_ms,
                "model": r.model,
                "config_fp": row.config_fp if row is not None else None,
                "created_at": _stamp(row.created_at) if row is not None else None,
                "updated_at": _stamp(row.updated_at) if row is not None else None,
            }
        )
        return record

    def flat_record(self, include_input: bool) -> dict[str, Any]:
        """The CSV row: the flat record, its status, the stored row's columns, the input."""
        record: dict[str, Any] = {} if self.index is None else {"index": self.index}
        flat = self.result.to_record(include_input=include_input)
        del flat["cached"]  # an exported row is always read from the store
        record.update(flat)
        row = self.row
        record["status"] = self.status
        if row is not None:
            record.update(
                model=row.model,
                config_fp=row.config_fp,
                created_at=_stamp(row.created_at),
                updated_at=_stamp(row.updated_at),
            )
        if not include_input:
            record["input"] = self.result.input_data
        return record


def _stamp(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def stored_rows(
    store: ResultStore, task: str, status: str | None, config_fp: str | None
) -> Iterator[ExportRow]:
    """The stored rows of ``task`` (one configuration, or all for ``None``), as the store
    streams them."""
    for row in store.iter_results(task, status, config_fp=config_fp):
        yield ExportRow.of_row(row)


class _Joiner:
    """Looks up the stored rows of one configuration for a chunk of task ids (any status)."""

    def __init__(self, store: ResultStore, task: str, config_fp: str) -> None:
        self._store = store
        self._task = task
        self._config_fp = config_fp
        # get_many serves succeeded rows only; the failed ones are read once (they are few,
        # and a task id has one row per configuration).
        self._failed: dict[str, ResultRow] = {
            row.task_id: row for row in store.iter_results(task, "failed", config_fp=config_fp)
        }

    def lookup(self, task_ids: Sequence[str]) -> dict[str, ResultRow]:
        found = self._store.get_many(self._task, task_ids, self._config_fp)
        for task_id in task_ids:
            if task_id not in found and task_id in self._failed:
                found[task_id] = self._failed[task_id]
        return found


def joined_rows(
    store: ResultStore, task: str, config_fp: str, source: InputSource
) -> Iterator[ExportRow]:
    """One row per record of ``source``, in its order, with its stored row if there is one.

    Each record is prepared as the engine prepares it (``prepare_input``: the same
    normalisation, the same task id); one without a stored row has the status ``missing``.
    """
    joiner = _Joiner(store, task, config_fp)
    items = enumerate(source.items())
    while chunk := list(itertools.islice(items, _CHUNK)):
        prepared = [
            (index, item.result() if isinstance(item, BadRecord) else prepare_input(item))
            for index, item in chunk
        ]
        ids = [p.task_id for _, p in prepared if isinstance(p, PreparedInput) and p.failure is None]
        rows = joiner.lookup(ids) if ids else {}
        for index, p in prepared:
            if isinstance(p, TaskResult):  # a line that is not an input
                yield ExportRow(p, "failed", index=index)
            elif p.failure is not None:  # an input the engine refuses as well
                yield ExportRow(p.failure, "failed", index=index)
            elif p.task_id in rows:
                entry = ExportRow.of_row(rows[p.task_id], index)
                entry.result = entry.result.model_copy(update={"input_data": p.data})
                yield entry
            else:
                missing = TaskResult[Any].model_construct(
                    task_id=p.task_id, is_success=False, error=None, input_data=p.data
                )
                yield ExportRow(missing, "missing", index=index)


def export_columns(
    store: ResultStore,
    task: str,
    status: str | None,
    config_fp: str | None,
    *,
    include_input: bool,
    source: InputSource | None,
) -> list[str]:
    """The CSV's header: the flat record's columns (``status`` in place of ``cached``), with
    the data keys found in a pass over the store (bounded memory: only the names), then the
    stored row's columns (and ``input`` as one JSON column without ``include_input``)."""
    data: dict[str, None] = {}
    inputs: dict[str, None] = {}
    for row in store.iter_results(task, status, config_fp=config_fp):
        value = _loads(row.data)
        if isinstance(value, dict):
            data.update(dict.fromkeys(str(key) for key in value))
        elif value is not None:
            data["data"] = None
        if include_input and source is None:
            stored_input = _loads(row.input)
            if isinstance(stored_input, dict):
                inputs.update(dict.fromkeys(str(key) for key in stored_input))
    if include_input and source is not None:
        inputs = dict.fromkeys(source.input_keys())
    columns = record_columns(inputs if include_input else None, data)
    # A stored row is never cached; its status (succeeded, failed, missing) follows its id.
    columns.remove("cached")
    columns.insert(1, "status")
    head = ["index"] if source is not None else []
    return [*head, *columns, *_ROW_COLUMNS, *([] if include_input else ["input"])]
