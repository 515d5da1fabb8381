"""``loom batches [TASK]``: the provider batch jobs of a store, as last polled.

Reads the store only (no provider call, no API key): every task with provider batches and its
totals, or one task's batches with their state and counts. The counts are those the last
poll stored; ``loom run ... --batch`` (or ``collect_batch``) polls again.
"""

from __future__ import annotations

import argparse
from typing import IO

from loom_core._batch_status import BatchJobStatus, job_status
from loom_store import ResultStore

from .args import add_db_argument
from .command import CliUsageError, Console, Subcommands
from .store import on_store, table

__all__ = ["add_parser", "list_batches"]

_COUNTS = ["SUCCEEDED", "FAILED", "EXPIRED", "CANCELLED"]


def add_parser(commands: Subcommands) -> None:
    """Add ``loom batches`` to the sub-commands ``commands``."""
    parser = commands.add_parser(
        "batches",
        help="list provider batch jobs (--batch runs) and their state",
        description=(
            "List the tasks that have provider batches (loom run --batch, submit_batch) with "
            "their totals, or, given TASK, each of its batches: state, round, requests and the "
            "provider's counts as last polled."
        ),
    )
    parser.add_argument("task", metavar="TASK", nargs="?", help="show this task's batches")
    add_db_argument(parser)
    parser.set_defaults(func=_command)


def _command(args: argparse.Namespace, console: Console) -> int:
    return on_store(
        args.db, lambda store: list_batches(store, args.task, console.stdout), console.stderr
    )


def list_batches(store: ResultStore, task: str | None, out: IO[str]) -> None:
    """Print every task's job totals, or the batches of ``task``."""
    names = store.provider_task_names()
    if task is None:
        if not names:
            out.write(f"no provider batches in {store.url}\n")
            return
        rows = [["TASK", "BATCHES", "OPEN", "PENDING", "SUBMITTED", *_COUNTS]]
        for name in names:
            s = job_status(name, store.provider_batches(name))
            rows.append([name, str(len(s.batches)), str(s.open_batches), *_totals(s)])
        table(rows, out)
        return
    if task not in names:
        known = ", ".join(repr(n) for n in names[:20]) or "none"
        raise CliUsageError(f"task {task!r} has no provider batches in {store.url} ({known})")
    status = job_status(task, store.provider_batches(task))
    rows = [["BATCH", "STATE", "ROUND", "REQUESTS", *_COUNTS, "SUBMITTED AT"]]
    for b in status.batches:
        state = b.state + (
            " (cancel asked)" if b.cancel_requested and b.state != "collected" else ""
        )
        when = f"{b.submitted_at:%Y-%m-%d %H:%M:%S}" if b.submitted_at else "-"
        c = b.counts
        counts = [c.succeeded, c.failed, c.expired, c.cancelled]
        name = b.batch_id or f"({b.token})"
        rows.append([name, state, str(b.round), str(b.requests), *map(str, counts), when])
    table(rows, out, left=2)
    pending, submitted, *_ = _totals(status)
    out.write(
        f"{len(status.batches)} batch(es), {status.open_batches} open; {submitted} request(s) "
        f"submitted, {pending} not yet; counts as last polled\n"
    )


def _totals(s: BatchJobStatus) -> list[str]:
    return [str(n) for n in (s.pending, s.submitted, s.succeeded, s.failed, s.expired, s.cancelled)]
