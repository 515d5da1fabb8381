"""Store: what persisting every result costs, a store-on run against a store-off run.

The backend is a Python function that answers at once, so the HTTP stack and the server take no
part: what is left is the engine's own work per task, with and without the result store.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from loom_backends import CallableBackend
from loom_core import TaskLoom
from loom_protocol import ChatRequest

from ._common import MODEL, TEMPLATE, Echo, Outcome, inputs, timed_map

__all__ = ["scenario_store"]

TARGET = 1.3
WORKERS = 64  # as in every other scenario; an instant backend keeps few of them busy anyway


async def _instant(request: ChatRequest) -> str:
    """A valid answer for ``Echo``, at once, on the loop itself.

    Async on purpose: a sync function runs in a worker thread, a hop that costs both sides the
    same and so pulls the ratio towards 1 (1.87 against 2.27 async, in one --quick run before
    issue 12's engine work). The async one is the stricter measure of the store's cost.
    """
    return '{"echo": "ok"}'


def scenario_store(quick: bool, workdir: Path) -> Outcome:
    """Best of three alternating rounds each of ``map`` with and without ``task_name``.

    One loom serves both sides, so they share its loop, backend and caches; the store is a
    fresh SQLite file. Each round maps inputs no earlier round saw, so every store-on task is
    a miss that is looked up, run and written (rows accumulate over the rounds, up to three
    runs' worth). The side that goes first alternates, so neither always follows the other.
    """
    n = 10_000 if quick else 20_000
    db = workdir / "store.db"
    on: list[float] = []
    off: list[float] = []
    with TaskLoom(
        MODEL, TEMPLATE, response_model=Echo, backend=CallableBackend(_instant), db_path=db
    ) as loom:
        # Warm-up of both paths; the store-on one opens the store and creates its tables.
        timed_map(loom, inputs(500, "warm-off"), max_workers=WORKERS)
        timed_map(loom, inputs(500, "warm-on"), task_name="warm", max_workers=WORKERS)
        for round_ in range(3):
            for store_on in (True, False) if round_ % 2 == 0 else (False, True):
                if store_on:
                    items, task_name, times = inputs(n, f"on{round_}"), f"store{round_}", on
                else:
                    items, task_name, times = inputs(n, f"off{round_}"), None, off
                times.append(timed_map(loom, items, task_name=task_name, max_workers=WORKERS))
    with sqlite3.connect(db) as conn:
        stored = conn.execute(
            "SELECT COUNT(*) FROM loom_results WHERE task_name LIKE 'store%'"
        ).fetchone()[0]
    if stored != 3 * n:
        raise RuntimeError(f"the store holds {stored} rows for {3 * n} store-on tasks")
    best_on, best_off = min(on), min(off)
    ratio = best_on / best_off
    runs = ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(on, off, strict=True))
    return Outcome(
        "store",
        f"{n:,} tasks, callable backend, 64 workers: map with task_name {best_on:.2f}s "
        f"({n / best_on:,.0f}/s) / without {best_off:.2f}s ({n / best_off:,.0f}/s) "
        f"(runs on/off: {runs} s)",
        ratio,
        f"<= {TARGET}",
        ratio <= TARGET,
    )
