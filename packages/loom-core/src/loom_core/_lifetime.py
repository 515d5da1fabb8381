"""Ending the batches still running when their loom closes.

A batch runs on the loop of whoever consumes it: the loom's own loop thread (the sync API) or
the caller's loop (the async API), possibly several at once. Closing the loom aborts each one
on its own loop, so that every consumer gets :class:`LoomClosedError` instead of waiting for
results that will never come.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging

from ._batch import BatchRun
from ._bridge import LoomClosedError

__all__ = ["ABORT_WAIT", "end_runs"]

_log = logging.getLogger("loom.engine")

#: Seconds close() waits for the batches running on other loops to stop their tasks.
ABORT_WAIT = 5.0

_CLOSED_WHILE_RUNNING = "the TaskLoom was closed while this batch ran"


def end_runs(
    runs: list[BatchRun],
) -> tuple[list[concurrent.futures.Future[None]], list[BatchRun]]:
    """End ``runs``: at once on the caller's own loop, by message on other loops.

    Returns:
        One future per run on another loop, done once that run has stopped its tasks, and
        the runs of the caller's loop (aborted; their tasks are still to be awaited).
    """
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    waits: list[concurrent.futures.Future[None]] = []
    local: list[BatchRun] = []
    if runs:
        _log.info("closing the TaskLoom ends %d running batch(es)", len(runs))
    for run in runs:
        loop = run.loop
        if loop is None:
            continue
        error = LoomClosedError(_CLOSED_WHILE_RUNNING)
        if loop is running:
            run.abort(error)
            local.append(run)
            continue
        with contextlib.suppress(RuntimeError):  # that loop is closed: nothing runs there
            waits.append(asyncio.run_coroutine_threadsafe(_end_run(run, error), loop))
    return waits, local


async def _end_run(run: BatchRun, error: BaseException) -> None:
    run.abort(error)
    await run.aclose()
