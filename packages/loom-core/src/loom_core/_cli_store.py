"""``loom tasks``, ``loom show`` and ``loom export``: reading what a store holds."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from typing import IO, Any

from loom_protocol import StoreError, redact_value
from loom_store import ResultRow, ResultStore

from ._cli_io import file_format, json_cell, open_output

__all__ = ["CliUsageError", "export_task", "list_tasks", "open_store", "show_task"]

_EXPORT_META = (
    "task_id",
    "is_success",
    "error_code",
    "error",
    "attempts",
    "model",
    "config_fp",
    "updated_at",
)


class CliUsageError(Exception):
    """A command-line mistake: printed as ``loom: error: ...`` with exit status 2."""


def open_store(db: str) -> ResultStore:
    """Open an existing store (a path that does not exist is an error, never created here).

    Raises:
        CliUsageError: The file does not exist or the store cannot be opened.
    """
    if "://" not in db and not os.path.exists(db):
        raise CliUsageError(f"no store at {db!r} (run `loom run` first, or pass --db PATH|URL)")
    try:
        return ResultStore(db)
    except StoreError as exc:
        raise CliUsageError(f"the store {db!r} cannot be opened: {exc}") from None


def _check_task(store: ResultStore, task: str) -> None:
    names = store.task_names()
    if task not in names:
        known = ", ".join(repr(n) for n in names[:20]) or "none"
        raise CliUsageError(f"no task {task!r} in {store.url} (tasks: {known})")


def _table(rows: list[list[str]], out: IO[str]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [
            cell.rjust(width) if i else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        out.write("  ".join(cells).rstrip() + "\n")


def list_tasks(store: ResultStore, out: IO[str]) -> None:
    """Print one line per task name: result counts and how many configurations produced them."""
    names = store.task_names()
    if not names:
        out.write(f"no tasks in {store.url}\n")
        return
    rows = [["TASK", "RESULTS", "SUCCEEDED", "FAILED", "CONFIGS"]]
    for name in names:
        stats = store.stats(name)
        rows.append(
            [
                name,
                str(stats.total),
                str(stats.succeeded),
                str(stats.failed),
                str(len(store.runs(name))),
            ]
        )
    _table(rows, out)


def _short(text: str | None, limit: int = 70) -> str:
    if text is None:
        return "-"
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 3] + "...")


def _describe_output(output: Any) -> str:
    if not isinstance(output, dict):
        return "?"
    kind = output.get("kind", "?")
    schema = output.get("schema")
    if kind == "model" and isinstance(schema, dict):
        return f"model {schema.get('title', '?')}"
    return str(kind)


def show_task(store: ResultStore, task: str, out: IO[str]) -> None:
    """Print a task's counts, failures by error code and its configuration history.

    Raises:
        CliUsageError: The store has no such task.
    """
    _check_task(store, task)
    stats = store.stats(task)
    out.write(f"task     {task}\nstore    {store.url}\n")
    out.write(f"results  {stats.total} ({stats.succeeded} succeeded, {stats.failed} failed)\n")
    if stats.failures_by_code:
        out.write("\nfailures by error code:\n")
        _table([[f"  {code}", str(n)] for code, n in stats.failures_by_code.items()], out)
    runs = store.runs(task)
    with_rows = set(stats.config_fps)
    out.write(f"\nconfigurations ({len(runs)}, oldest first):\n")
    for number, run in enumerate(runs, 1):
        # Masked again on display: a store written before the current rules may hold one.
        config = redact_value(run.config)
        params = {
            key: config.get(key)
            for key in ("temperature", "max_tokens")
            if config.get(key) is not None
        }
        params.update(config.get("params") or {})
        rows_note = "has results" if run.config_fp in with_rows else "no results stored"
        out.write(
            f"  {number}. {run.config_fp[:12]}  {run.created_at:%Y-%m-%d %H:%M:%S}  "
            f"model {config.get('model', '?')}  output {_describe_output(config.get('output'))}"
            f"  ({rows_note})\n"
        )
        out.write(f"     prompt {_short(config.get('prompt_template'))}\n")
        if config.get("system_prompt") is not None:
            out.write(f"     system {_short(config.get('system_prompt'))}\n")
        if params:
            shown = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(params.items()))
            out.write(f"     params {shown}\n")
    orphans = sorted(with_rows - {run.config_fp for run in runs})
    for fp in orphans:
        out.write(f"  -  {fp[:12]}  (results of an unregistered configuration)\n")


def _loads(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text  # keep a damaged cell visible rather than failing the whole export


def _export_record(row: ResultRow) -> dict[str, Any]:
    error = _loads(row.error)
    return {
        "task_id": row.task_id,
        "is_success": row.status == "succeeded",
        "data": _loads(row.data),
        "error": error,
        "input_data": _loads(row.input),
        "raw_output": row.raw_output,
        "reasoning": row.reasoning,
        "attempts": row.attempts,
        "usage": _loads(row.usage),
        "latency_ms": row.latency_ms,
        "model": row.model,
        "config_fp": row.config_fp,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "updated_at": row.updated_at.isoformat() if row.updated_at else None,
    }


def _csv_record(record: dict[str, Any]) -> dict[str, Any]:
    error = record["error"]
    flat: dict[str, Any] = {
        key: record[key] for key in _EXPORT_META if key not in ("error", "error_code")
    }
    flat["error_code"] = error.get("code") if isinstance(error, dict) else None
    flat["error"] = error.get("message") if isinstance(error, dict) else error
    data = record["data"]
    if isinstance(data, dict):
        for key, value in data.items():
            flat[_data_column(key)] = json_cell(value)
    elif data is not None:
        flat["data"] = json_cell(data)
    flat["input"] = json_cell(record["input_data"])
    return flat


def _data_column(key: str) -> str:
    return f"data.{key}" if key in (*_EXPORT_META, "input") else key


def export_task(
    store: ResultStore, task: str, path: str, status: str | None, stdout: IO[str]
) -> int:
    """Stream a task's stored results into ``path`` (``.jsonl``, ``.csv`` or ``-``).

    A CSV needs its header first, so its data columns are collected in a first pass over the
    store (bounded memory: only the column names), then the rows are written in a second.

    Returns:
        The number of rows written.

    Raises:
        CliUsageError: No such task, an unsupported extension, or an output that cannot be
            created.
    """
    _check_task(store, task)
    try:
        fmt = file_format(path, role="output")
        file, owned = open_output(path, stdout)
    except (ValueError, OSError) as exc:
        raise CliUsageError(str(exc)) from None
    written = 0
    try:
        if fmt == "jsonl":
            for row in store.iter_results(task, status):
                file.write(json.dumps(_export_record(row), ensure_ascii=False) + "\n")
                written += 1
        else:
            columns: dict[str, None] = {}
            for record in _records(store, task, status):
                columns.update(dict.fromkeys(_csv_record(record)))
            header = list(_EXPORT_META)
            data_columns = [c for c in columns if c not in header and c != "input"]
            writer = csv.DictWriter(file, [*header, *data_columns, "input"], restval="")
            writer.writeheader()
            for record in _records(store, task, status):
                writer.writerow(_csv_record(record))
                written += 1
        file.flush()
    finally:
        if owned:
            file.close()
    return written


def _records(store: ResultStore, task: str, status: str | None) -> Iterator[dict[str, Any]]:
    for row in store.iter_results(task, status):
        yield _export_record(row)
