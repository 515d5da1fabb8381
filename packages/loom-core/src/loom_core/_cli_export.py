"""``loom export``: a task's stored results into JSONL or CSV, optionally joined to its input.

The rows of one configuration: the latest by default, another with ``--config FP`` (a unique
prefix is enough), every one with ``--config all``. Without ``--input`` the rows are written as
the store streams them: by task id (with ``--config all``: by configuration, then task id). With
``--input FILE`` the file is read again, each record is prepared exactly as the engine prepares
it (``prepare_input``: same normalisation, same fingerprint), and one row is written per record,
in the file's order, with its ``index``; a record without a stored result gets the status
``missing``. The output is written to a temporary file and renamed over the target at the end.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
from collections.abc import Iterator, Sequence
from typing import IO, Any

from loom_protocol import Error, ErrorCode, TaskResult, data_column
from loom_store import ResultRow, ResultStore

from ._cli_files import AtomicOutput, check_not_an_input, store_file
from ._cli_io import BadRecord, InputReadError, InputSource, file_format, json_cell
from ._cli_store import CliUsageError, check_task, select_config
from ._task import PreparedInput, prepare_input

__all__ = ["check_export_paths", "export_task"]

#: Columns after the flat record's, describing where a stored row came from.
_ROW_COLUMNS = ("model", "config_fp", "created_at", "updated_at")
_dumps = json.JSONEncoder(ensure_ascii=False).encode
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


class _Entry:
    """One exported row: a stored row, a record without one, or a bad input record."""

    __slots__ = ("index", "input_data", "result", "row", "status")

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
    def of_row(cls, row: ResultRow, index: int | None = None) -> _Entry:
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
        return {key: json_cell(value) for key, value in record.items()}


def _stamp(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _stored(
    store: ResultStore, task: str, status: str | None, config_fp: str | None
) -> Iterator[_Entry]:
    for row in store.iter_results(task, status, config_fp=config_fp):
        yield _Entry.of_row(row)


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


def _joined(store: ResultStore, task: str, config_fp: str, source: InputSource) -> Iterator[_Entry]:
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
                yield _Entry(p, "failed", index=index)
            elif p.failure is not None:  # an input the engine refuses as well
                yield _Entry(p.failure, "failed", index=index)
            elif p.task_id in rows:
                entry = _Entry.of_row(rows[p.task_id], index)
                entry.result = entry.result.model_copy(update={"input_data": p.data})
                yield entry
            else:
                missing = TaskResult[Any].model_construct(
                    task_id=p.task_id, is_success=False, error=None, input_data=p.data
                )
                yield _Entry(missing, "missing", index=index)


def check_export_paths(args: argparse.Namespace) -> None:
    """Refuse an output that is an input or the store, or that exists without ``--force``.

    Called before the store is opened: nothing is read when the output is wrong.

    Raises:
        CliUsageError: The output must not be written.
    """
    path = args.output
    try:
        file_format(path, role="output")
        if args.input is not None:
            file_format(args.input, role="input")
    except ValueError as exc:
        raise CliUsageError(str(exc)) from None
    if args.input == "-":
        raise CliUsageError("--input must be a file (stdin cannot be joined)")
    problem = check_not_an_input(
        path, [("the --input file", args.input), ("the store (--db)", store_file(args.db))]
    )
    if problem is not None:
        raise CliUsageError(problem)
    if path != "-" and not args.force and os.path.lexists(path):
        raise CliUsageError(
            f"the output {path!r} exists already; pass --force to replace it "
            "(or choose another path)"
        )


def export_task(
    store: ResultStore, args: argparse.Namespace, stdout: IO[str]
) -> tuple[int, str | None]:
    """Stream a task's results into ``args.output`` (``.jsonl``, ``.csv`` or ``-``).

    The rows of one configuration (``args.config``: default the latest, ``"all"`` every
    one). A CSV needs its header first, so its data columns are collected in a first pass
    over the store (bounded memory: only the column names), then the rows are written in a
    second.

    Returns:
        The number of rows written and the configuration exported (``None``: all).

    Raises:
        CliUsageError: No such task or configuration, an unsupported extension, an output
            that is an input or exists (without ``--force``), or an ``--input`` that cannot
            be read.
    """
    check_task(store, args.task)
    config_fp = select_config(store, args.task, args.config)
    if args.input is not None and config_fp is None:
        raise CliUsageError(
            "--input joins the results of one configuration; choose one with --config FP "
            "(see `loom tasks`)"
        )
    source: InputSource | None = None
    if args.input is not None:
        try:
            source = InputSource(args.input)
        except OSError as exc:
            raise CliUsageError(
                f"cannot read --input {args.input!r}: {exc.strerror or exc}"
            ) from None
    status = args.status

    def entries() -> Iterator[_Entry]:
        if source is None or config_fp is None:
            return _stored(store, args.task, status, config_fp)
        joined = _joined(store, args.task, config_fp, source)
        return joined if status is None else (e for e in joined if e.status == status)

    atomic: AtomicOutput | None = None
    if args.output == "-":
        file = stdout
    else:
        try:
            atomic = AtomicOutput(args.output)
        except OSError as exc:
            raise CliUsageError(f"cannot write output {args.output!r}: {exc}") from None
        file = atomic.file
    written = 0
    try:
        if file_format(args.output, role="output") == "jsonl":
            for entry in entries():
                file.write(_dumps(entry.json_record()) + "\n")
                written += 1
        else:
            header = _csv_header(store, args, config_fp, source)
            writer = csv.DictWriter(file, header, restval="", extrasaction="ignore")
            writer.writeheader()
            for entry in entries():
                writer.writerow(entry.flat_record(args.include_input))
                written += 1
        if atomic is not None:
            atomic.commit()
    except InputReadError as exc:
        raise CliUsageError(f"cannot read --input {args.input!r} further: {exc}") from None
    finally:
        if atomic is not None:
            atomic.discard()  # nothing when committed
    return written, config_fp


def _csv_header(
    store: ResultStore,
    args: argparse.Namespace,
    config_fp: str | None,
    source: InputSource | None,
) -> list[str]:
    """The CSV's columns: the flat record's, the data keys found in the store, the row's."""
    data: dict[str, None] = {}
    inputs: dict[str, None] = {}
    for row in store.iter_results(args.task, args.status, config_fp=config_fp):
        value = _loads(row.data)
        if isinstance(value, dict):
            data.update(dict.fromkeys(data_column(str(key)) for key in value))
        elif value is not None:
            data["data"] = None
        if args.include_input and source is None:
            stored_input = _loads(row.input)
            if isinstance(stored_input, dict):
                inputs.update(dict.fromkeys(f"input.{key}" for key in stored_input))
    if args.include_input and source is not None:
        inputs = dict.fromkeys(f"input.{key}" for key in source.input_keys())
    meta = ["task_id", "status", "is_success", "error_code", "error", "attempts"]
    head = ["index", *meta] if source is not None else meta
    tail = [*_ROW_COLUMNS, *([] if args.include_input else ["input"])]
    return [*head, *inputs, *data, *tail]
