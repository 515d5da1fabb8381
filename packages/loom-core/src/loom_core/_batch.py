"""The batch scheduler: one asyncio implementation behind map, stream and their twins.

A batch is three parts: the :class:`~loom_core._feeder.Feeder` pulls and admits the inputs
and answers what needs no call, ``max_workers`` worker coroutines run the rest, and the
:class:`~loom_core._outbox.Outbox` hands results to the consumer. With a store, a worker hands
its result to the store writer and moves on; the result is delivered only once its row has
committed, through the writer's own settling of asyncio futures (one wake-up of the loop per
group commit).

A batch always ends. Whatever escapes the feeder, a worker or the delivery of committed rows
(a store that fails or is closed, a backend raising a ``BaseException``) ends it through
:meth:`BatchRun.abort`: the consumer gets the results already ready, then the error raised.
:meth:`BatchRun.abort` is also how closing the loom ends the batches still running.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterable, Iterable
from typing import Any

from loom_protocol import ErrorCode, StoreError, TaskResult
from loom_store import ResultRow

from ._budget import Budget
from ._feeder import Feeder, Slot
from ._gcpolicy import relaxed_gc
from ._lease import TaskLease
from ._outbox import Outbox, Pair
from ._persist import ResultCache
from ._rateshare import RateShare
from ._task import TaskRunner

__all__ = ["BatchRun"]

_log = logging.getLogger("loom.engine")


class BatchRun:
    """One batch in flight: :meth:`start` it on a loop, read it with :meth:`next_batch`,
    end it with :meth:`aclose`.

    Args:
        runner: Runs one task.
        source: The inputs (a sync or an async iterable), pulled lazily.
        cache: The store view when a task_name is set, else ``None`` (nothing is written).
        max_workers: Calls in flight at most.
        ordered: Deliver in input order (buffering at most ``window`` results).
        window: Inputs pulled but not yet delivered, at most.
        hold: Results ready for the consumer at which workers stop starting new calls, until
            the consumer takes some (``None``: no such limit, for a consumer that never stops
            pulling, like ``map``).
        budget: The batch's spending caps (``max_cost``, ``max_tokens_total``), if any: a
            call that would pass one is not made, and its task ends ``budget_exceeded``.
        lease_s: With a store, the lease of this batch's claims among the other workers of
            its task (``None``: the batch never looks for other workers).
        share: The loom's rate limits, divided among the live workers of the task.
    """

    def __init__(
        self,
        runner: TaskRunner,
        source: Iterable[Any] | AsyncIterable[Any],
        *,
        cache: ResultCache | None,
        max_workers: int,
        ordered: bool,
        window: int | None = None,
        hold: int | None = None,
        budget: Budget | None = None,
        lease_s: float | None = None,
        share: RateShare | None = None,
    ) -> None:
        self._runner = runner
        self.budget = budget
        self._cache = cache
        self._max_workers = max_workers
        self._outbox = Outbox(
            ordered=ordered, window=window or max(4096, 16 * max_workers), hold=hold
        )
        self._feeder = Feeder(source, self._outbox, cache, first_chunk=4 * max_workers)
        self._lease: TaskLease | None = None
        if cache is not None and lease_s is not None:
            feeder = self._feeder
            self._lease = feeder.lease = TaskLease(
                cache,
                lease_s,
                feeder.work,
                self._outbox,
                max_workers,
                feeder.unfinished,
                feeder.finish,
                self._fail,
                share,
            )
        self._tasks: list[asyncio.Task[None]] = []
        # Rows finished in this turn of the loop, handed to the writer at its end.
        self._unsent: list[tuple[Slot, TaskResult[Any], ResultRow]] = []
        self._closed = False
        self._stopped = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop the batch runs on (``None`` until started)."""
        return self._loop

    def start(self) -> None:
        """Start the feeder and the workers on the running loop."""
        if self._tasks or self._outbox.fatal is not None:
            return
        self._loop = asyncio.get_running_loop()
        relaxed_gc.enter()
        self._tasks.append(asyncio.create_task(self._feed(), name="loom-feed"))
        self._tasks.extend(
            asyncio.create_task(self._work_loop(), name=f"loom-worker-{i}")
            for i in range(self._max_workers)
        )

    async def aclose(self) -> None:
        """Cancel everything still under way. Results already committed stay committed.

        Returns once the batch's tasks have stopped, also when another caller (closing the
        loom) started the closing: what comes after may rely on it.
        """
        current = asyncio.current_task()
        if self._closed:
            if current not in self._tasks:
                await self._stopped.wait()
            return
        self._closed = True
        # Called from one of the batch's own tasks (a backend closing the loom), that task is
        # left to return by itself: waiting for it here would wait for ourselves.
        others = [task for task in self._tasks if task is not current]
        for task in others:
            task.cancel()
        try:
            if self._tasks:
                try:
                    await asyncio.gather(*others, return_exceptions=True)
                finally:
                    relaxed_gc.exit()
            if self._lease is not None:
                await self._lease.aclose()  # release this worker's claims for the others
        finally:
            self._stopped.set()

    def abort(self, error: BaseException) -> None:
        """End the batch with ``error``: stop every task; the consumer gets it raised.

        Call on the batch's loop. Results already ready are still handed over first; results
        already committed stay committed. The first error wins; later calls only stop tasks.
        """
        self._outbox.abort(error)
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()

    def _fail(self, error: BaseException) -> None:
        """:meth:`abort` for an unexpected error inside the batch, logged once."""
        if self._outbox.fatal is None and not self._closed:
            _log.warning("a batch stopped: %s: %s", type(error).__name__, error)
        self.abort(error)

    # -- the consumer's side ---------------------------------------------------------------

    async def next_batch(self, limit: int = 512) -> list[Pair]:
        """Wait for at least one result and return every ready one (up to ``limit``).

        Returns ``(input index, result)`` pairs, in input order when ``ordered``; an empty
        list when the batch is complete. Raises what the input iterable raised, once every
        input pulled before it has been delivered, or the error that ended the batch.
        """
        return await self._outbox.next_batch(limit)

    # -- the tasks -------------------------------------------------------------------------

    async def _feed(self) -> None:
        try:
            await self._feeder.run()
        except BaseException as exc:
            if _cancelled(exc):
                raise
            self._fail(exc)  # nobody else would ever know: the consumer would wait forever

    async def _work_loop(self) -> None:
        outbox, feeder, runner, cache = self._outbox, self._feeder, self._runner, self._cache
        budget = self.budget
        held = outbox.hold is not None
        lease = self._lease
        try:
            while outbox.fatal is None and not self._closed:
                if held:
                    await outbox.wait_for_consumer()
                slot = await feeder.work.get()
                if lease is not None and lease.lapsed(slot):
                    continue  # claimed again after a heartbeat, or read if another took it
                if held:
                    await outbox.wait_for_consumer()
                result = await runner.run(slot.prepared, budget)
                if cache is None or not _storable(result):
                    feeder.finish(slot, result)
                else:
                    self._submit(slot, result, cache)
        except BaseException as exc:
            if _cancelled(exc):
                raise
            self._fail(exc)

    def _submit(self, slot: Slot, result: TaskResult[Any], cache: ResultCache) -> None:
        # The worker moves on to its next task at once; the result is delivered when its row
        # has committed (group commit on the writer thread), never before. Rows finished in
        # one turn of the loop go to the writer together: one hand-over and one wake-up of
        # the writer thread per turn, not per row (each costs the loop far more than a row).
        try:
            row = cache.to_row(result)
        except Exception as exc:
            # This one row cannot be written (it does not serialize): only this task says so.
            self._feeder.finish(slot, cache.settled(result, exc))
            return
        self._outbox.commit_started()
        if not self._unsent:
            assert self._loop is not None  # set by start(), before any worker runs
            self._loop.call_soon(self._send, cache)
        self._unsent.append((slot, result, row))

    def _send(self, cache: ResultCache) -> None:
        """Hand the rows finished in this turn of the loop to the writer (a loop callback)."""
        sent, self._unsent = self._unsent, []
        # Sent also when the batch was closed meanwhile: the results are paid for, and only
        # their delivery is dropped.
        try:
            write = cache.submit_rows([row for _slot, _result, row in sent])
        except BaseException as exc:  # a loop callback: raised, it would only be logged
            self._fail(exc)  # the store went away: nothing more can be saved, the batch ends
            return
        write.add_done_callback(functools.partial(self._on_commit, sent, cache))

    def _on_commit(
        self,
        sent: list[tuple[Slot, TaskResult[Any], ResultRow]],
        cache: ResultCache,
        write: asyncio.Future[list[StoreError | None]],
    ) -> None:
        # On the loop: the writer settled this hand-over's future, with every other one of
        # the same group commit, in one wake-up of the loop.
        outcomes = None if write.cancelled() else write.result()
        if self._closed:
            return
        self._outbox.commit_ended(len(sent))
        if outcomes is None:
            return
        try:
            for (slot, result, _row), error in zip(sent, outcomes, strict=True):
                self._feeder.finish(slot, cache.settled(result, error))
        except BaseException as exc:  # a loop callback: raised, it would only be logged
            self._fail(exc)


def _cancelled(exc: BaseException) -> bool:
    """Whether ``exc`` is this task being cancelled (to let through), not a failure to report.

    A CancelledError that does not come from cancelling this task (a future cancelled under
    it) is a failure like any other: letting it end the task silently would hang the batch.
    """
    if not isinstance(exc, asyncio.CancelledError):
        return False
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


#: Failures that are not the task's: reported, never stored.
_NOT_STORED = frozenset({ErrorCode.INPUT_INVALID, ErrorCode.BUDGET_EXCEEDED})


def _storable(result: TaskResult[Any]) -> bool:
    # Inputs that are not valid inputs are reported, not stored: their ids come from a repr.
    # A task the budget stopped is not a failure of the task: a run with a higher cap calls it.
    return result.error is None or result.error.code not in _NOT_STORED
