"""``loom tasks`` and ``loom show``: reading what a store holds (``loom export``: _cli_export)."""

from __future__ import annotations

import json
import os
from typing import IO, Any

from loom_protocol import StoreError, redact_value
from loom_store import ConfigInfo, ResultStore

__all__ = [
    "CliUsageError",
    "check_task",
    "list_tasks",
    "open_store",
    "select_config",
    "show_task",
]


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


def _table(rows: list[list[str]], out: IO[str], left: int = 1) -> None:
    """Columns padded to their width: the first ``left`` to the left, the rest to the right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        out.write("  ".join(cells).rstrip() + "\n")


def select_config(store: ResultStore, task: str, spec: str | None) -> str | None:
    """The configuration ``--config`` names: ``None`` means all of them.

    Args:
        store: The store.
        task: A task name the store has.
        spec: ``None`` for the latest configuration, ``"all"`` for every one, or a
            fingerprint or a unique prefix of one.

    Raises:
        CliUsageError: No configuration, or more than one, starts with ``spec``.
    """
    if spec == "all":
        return None
    if spec is None:
        latest = store.latest_config(task)
        if latest is None:  # pragma: no cover - a listed task has a run or a row
            raise CliUsageError(f"task {task!r} has no configuration")
        return latest
    fps = [info.config_fp for info in store.configs(task)]
    found = [fp for fp in fps if fp.startswith(spec.lower())] if spec else []
    if len(found) == 1:
        return found[0]
    known = ", ".join(fp[:_SHORT] for fp in fps)
    if not found:
        raise CliUsageError(
            f"task {task!r} has no configuration {spec!r} (it has: {known}; or --config all)"
        )
    shown = ", ".join(fp[: len(spec) + 4] for fp in found)
    raise CliUsageError(f"--config {spec!r} is ambiguous in task {task!r}: {shown}")


_SHORT = 12


def _when(info: ConfigInfo) -> str:
    at = info.last_run_at or info.last_write_at
    return f"{at:%Y-%m-%d %H:%M:%S}" if at is not None else "-"


def _model(info: ConfigInfo) -> str:
    return str(info.config.get("model", "?")) if info.config is not None else "?"


def list_tasks(store: ResultStore, out: IO[str]) -> None:
    """Print one line per configuration of every task: short fingerprint, model, last run,
    result counts; the latest configuration of a task (what show and export use by default)
    is marked ``*``."""
    names = store.task_names()
    if not names:
        out.write(f"no tasks in {store.url}\n")
        return
    rows = [["TASK", "CONFIG", "MODEL", "LAST RUN", "RESULTS", "SUCCEEDED", "FAILED"]]
    for name in names:
        infos = store.configs(name)
        for number, info in enumerate(infos, 1):
            mark = "*" if number == len(infos) else " "
            rows.append(
                [
                    name,
                    f"{mark}{info.config_fp[:_SHORT]}",
                    _model(info),
                    _when(info),
                    str(info.total),
                    str(info.succeeded),
                    str(info.failed),
                ]
            )
    _table(rows, out, left=4)
    out.write("* the latest configuration: what `loom show` and `loom export` use by default\n")


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


def _params(config: dict[str, Any]) -> dict[str, Any]:
    params = {
        key: config.get(key) for key in ("temperature", "max_tokens") if config.get(key) is not None
    }
    params.update(config.get("params") or {})
    return params


def _describe(info: ConfigInfo, number: int, shown: bool, out: IO[str]) -> None:
    # Masked again on display: a store written before the current rules may hold a credential.
    config = redact_value(info.config) if info.config is not None else None
    mark = "*" if shown else " "
    first = f"{info.created_at:%Y-%m-%d %H:%M:%S}" if info.created_at is not None else "-"
    output = _describe_output(config.get("output")) if config is not None else "?"
    out.write(
        f"{mark} {number}. {info.config_fp[:_SHORT]}  first run {first}  last run {_when(info)}"
        f"  model {_model(info)}  output {output}\n"
        f"     results {info.total} ({info.succeeded} succeeded, {info.failed} failed)\n"
    )
    if config is None:
        out.write("     (not registered: results written without a run)\n")
        return
    out.write(f"     prompt {_short(config.get('prompt_template'))}\n")
    if config.get("system_prompt") is not None:
        out.write(f"     system {_short(config.get('system_prompt'))}\n")
    params = _params(config)
    if params:
        shown_params = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(params.items()))
        out.write(f"     params {shown_params}\n")


def show_task(store: ResultStore, task: str, config: str | None, out: IO[str]) -> None:
    """Print the counts and failures of one configuration of a task (default: the latest;
    ``"all"``: every one) and every configuration the task was run with.

    Raises:
        CliUsageError: The store has no such task, or ``config`` selects no configuration.
    """
    check_task(store, task)
    fp = select_config(store, task, config)
    infos = store.configs(task)
    stats = store.stats(task, fp)
    out.write(f"task     {task}\nstore    {store.url}\n")
    if fp is None:
        out.write(f"config   all {len(infos)}\n")
    else:
        which = "the latest" if config is None else "selected"
        out.write(
            f"config   {fp[:_SHORT]} ({which} of {len(infos)}; --config FP selects another, "
            "--config all every one)\n"
        )
    out.write(f"results  {stats.total} ({stats.succeeded} succeeded, {stats.failed} failed)\n")
    if stats.failures_by_code:
        out.write("\nfailures by error code:\n")
        _table([[f"  {code}", str(n)] for code, n in stats.failures_by_code.items()], out)
    out.write(f"\nconfigurations ({len(infos)}, oldest first; * = counted above):\n")
    for number, info in enumerate(infos, 1):
        _describe(info, number, fp is None or info.config_fp == fp, out)
