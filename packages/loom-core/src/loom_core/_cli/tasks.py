"""``loom tasks``: every task of a store, one line per configuration, with its counts."""

from __future__ import annotations

import argparse
from typing import IO

from loom_store import ResultStore

from .args import add_db_argument
from .command import Console, Subcommands
from .store import SHORT, config_model, config_when, on_store, table

__all__ = ["add_parser", "list_tasks"]


def add_parser(commands: Subcommands) -> None:
    """Add ``loom tasks`` to the sub-commands ``commands``."""
    parser = commands.add_parser(
        "tasks",
        help="list the task names in a store",
        description="List every task name in the store with its result counts.",
    )
    add_db_argument(parser)
    parser.set_defaults(func=_command)


def _command(args: argparse.Namespace, console: Console) -> int:
    return on_store(args.db, lambda store: list_tasks(store, console.stdout), console.stderr)


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
                    f"{mark}{info.config_fp[:SHORT]}",
                    config_model(info),
                    config_when(info),
                    str(info.total),
                    str(info.succeeded),
                    str(info.failed),
                ]
            )
    table(rows, out, left=4)
    out.write("* the latest configuration: what `loom show` and `loom export` use by default\n")
