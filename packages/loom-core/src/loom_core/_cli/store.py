"""The store as ``tasks``, ``show`` and ``export`` read it: opened, checked, one config chosen."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import IO

from loom_protocol import StoreError
from loom_store import ConfigInfo, ResultStore

from .command import EXIT_FAILED, EXIT_OK, CliUsageError

__all__ = [
    "SHORT",
    "check_task",
    "config_model",
    "config_when",
    "on_store",
    "open_store",
    "select_config",
    "table",
]

#: How many characters of a configuration fingerprint are shown.
SHORT = 12


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


def on_store(db: str, read: Callable[[ResultStore], None], stderr: IO[str]) -> int:
    """Open the store ``db``, call ``read`` with it and close it; returns the exit status.

    A store that fails while being read (``StoreError``) is exit status 1, with its message;
    a :class:`CliUsageError` passes through (status 2, said by the caller).
    """
    store = open_store(db)
    try:
        read(store)
    except StoreError as exc:
        stderr.write(f"loom: error: {exc}\n")
        return EXIT_FAILED
    finally:
        store.close()
    return EXIT_OK


def check_task(store: ResultStore, task: str) -> None:
    """Raise :class:`CliUsageError` when the store has no task ``task`` (naming those it has)."""
    names = store.task_names()
    if task not in names:
        known = ", ".join(repr(n) for n in names[:20]) or "none"
        raise CliUsageError(f"no task {task!r} in {store.url} (tasks: {known})")


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
    known = ", ".join(fp[:SHORT] for fp in fps)
    if not found:
        raise CliUsageError(
            f"task {task!r} has no configuration {spec!r} (it has: {known}; or --config all)"
        )
    shown = ", ".join(fp[: len(spec) + 4] for fp in found)
    raise CliUsageError(f"--config {spec!r} is ambiguous in task {task!r}: {shown}")


def table(rows: list[list[str]], out: IO[str], left: int = 1) -> None:
    """Columns padded to their width: the first ``left`` to the left, the rest to the right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        out.write("  ".join(cells).rstrip() + "\n")


def config_when(info: ConfigInfo) -> str:
    """When a configuration last ran (or was last written), or ``-``."""
    at = info.last_run_at or info.last_write_at
    return f"{at:%Y-%m-%d %H:%M:%S}" if at is not None else "-"


def config_model(info: ConfigInfo) -> str:
    """The model of a configuration, or ``?`` when it was not registered."""
    return str(info.config.get("model", "?")) if info.config is not None else "?"
