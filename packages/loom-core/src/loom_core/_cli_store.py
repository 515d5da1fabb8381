"""``loom tasks`` and ``loom show``: reading what a store holds (``loom export``: _cli_export)."""

from __future__ import annotations

import json
import os
from typing import IO, Any

from loom_protocol import StoreError
from loom_store import ResultStore

__all__ = ["CliUsageError", "check_task", "list_tasks", "open_store", "show_task"]


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


def check_task(store: ResultStore, task: str) -> None:
    """Raise :class:`CliUsageError` when the store has no task ``task`` (naming those it has)."""
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
    check_task(store, task)
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
        config = run.config
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
