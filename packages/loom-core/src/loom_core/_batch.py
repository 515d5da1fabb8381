"""The batch scheduler: one asyncio implementation behind map, stream and their twins.

Inputs are pulled lazily, a chunk at a time, and only while fewer than ``window`` inputs are
pulled but not yet handed to the consumer, so a generator of millions of inputs runs in
bounded memory (with ``ordered=True`` too: a slow head of line stops the pulling, not the
memory). Each chunk is fingerprinted and looked up in the store with one query; cache hits
are delivered at once, duplicates join the task already under way, and the rest go to
``max_workers`` worker coroutines. A result is delivered only after its row has committed.

A batch always ends. Whatever escapes the feeder, a worker or the delivery of committed rows
(a store that fails or is closed, a backend raising a ``BaseException``) ends it through
:meth:`BatchRun.abort`: the consumer gets the results already ready, then the error raised.
:meth:`BatchRun.abort` is also how closing the loom ends the batches still running.

With ``hold`` set (streams), a worker starts no new call while ``hold`` results wait for the
consumer: a stream nobody pulls from stops calling the provider (see ``docs/guide.md``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import itertools
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sized
from dataclasses import dataclass, field
from typing import Any

from loom_protocol import ErrorCode, TaskResult

from ._gcpolicy import relaxed_gc
from ._persist import ResultCache
from ._task import PreparedInput, TaskRunner, prepare_input

__all__ = ["BatchRun"]

_log = logging.getLogger("loom.engine")

#: How many duplicate-free results are remembered for later duplicates of the same batch.
_RECENT = 4096

#: Chunks whose store lookups may be under way while an older chunk is being settled.
_LOOKAHEAD = 2


@dataclass(slots=True)
class _Slot:
    """One unique task of the window and every input position waiting for it."""

    prepared: PreparedInput
    positions: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _Staged:
    """A chunk admitted but not settled: its new tasks and their store lookup under way.

    ``lookup`` answers one cached result or ``None`` per task, in the order of ``fresh``.
    """

    fresh: dict[str, _Slot]
    lookup: asyncio.Future[list[TaskResult[Any] | None]] | None


class BatchRun:
    """One batch in flight. Use ``async with`` and :meth:`next_batch`.

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
    ) -> None:
        self._runner = runner
        self._cache = cache
        self._max_workers = max_workers
        self._ordered = ordered
        self._window = window or max(4096, 16 * max_workers)
        self._chunk = min(1024, self._window)
        self.total: int | None = len(source) if isinstance(source, Sized) else None
        self._sync_source: Iterator[Any] | None = None
        self._async_source: AsyncIterator[Any] | None = None
        if isinstance(source, AsyncIterable):
            self._async_source = aiter(source)
        else:
            self._sync_source = iter(source)

        self._out: deque[tuple[int, TaskResult[Any]]] = deque()
        self._reorder: dict[int, TaskResult[Any]] = {}
        self._next_index = 0
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._hold = hold
        self._taken = asyncio.Event()
        self._committing = 0  # results whose rows are being written (streams only)
        self._outstanding = 0
        self._pulled = 0
        self._emitted = 0
        self._feed_done = False
        self._error: BaseException | None = None
        self._fatal: BaseException | None = None
        self._inflight: dict[str, _Slot] = {}
        self._recent: OrderedDict[str, TaskResult[Any]] = OrderedDict()
        self._work: asyncio.Queue[_Slot] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._stopped = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._commit_lock = threading.Lock()
        self._committed: list[tuple[_Slot, TaskResult[Any], concurrent.futures.Future[None]]] = []
        self._commit_wake_pending = False

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> BatchRun:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop the batch runs on (``None`` until started)."""
        return self._loop

    def start(self) -> None:
        """Start the feeder and the workers on the running loop."""
        if self._tasks or self._fatal is not None:
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
        finally:
            self._stopped.set()

    def abort(self, error: BaseException) -> None:
        """End the batch with ``error``: stop every task; the consumer gets it raised.

        Call on the batch's loop. Results already ready are still handed over first; results
        already committed stay committed. The first error wins; later calls only stop tasks.
        """
        if self._fatal is None:
            self._fatal = error
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._ready.set()

    def _fail(self, error: BaseException) -> None:
        """:meth:`abort` for an unexpected error inside the batch, logged once."""
        if self._fatal is None and not self._closed:
            _log.warning("a batch stopped: %s: %s", type(error).__name__, error)
        self.abort(error)

    # -- consumer side ---------------------------------------------------------------------

    @property
    def delivered(self) -> int:
        """How many results the consumer has taken."""
        return self._pulled - self._outstanding

    def _finished(self) -> bool:
        return self._feed_done and self._emitted == self._pulled and not self._out

    async def next_batch(self, limit: int = 512) -> list[tuple[int, TaskResult[Any]]]:
        """Wait for at least one result and return every ready one (up to ``limit``).

        Returns ``(input index, result)`` pairs, in input order when ``ordered``; an empty
        list when the batch is complete. Raises what the input iterable raised, once every
        input pulled before it has been delivered.
        """
        while not self._out:
            if self._fatal is not None:
                raise self._fatal
            if self._finished():
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                return []
            self._ready.clear()
            await self._ready.wait()
        count = min(limit, len(self._out))
        batch = [self._out.popleft() for _ in range(count)]
        self._outstanding -= count
        if self._outstanding < self._window:
            self._room.set()
        if self._hold is not None:
            self._taken.set()
        return batch

    # -- producer side ---------------------------------------------------------------------

    def _emit(self, index: int, result: TaskResult[Any]) -> None:
        self._emit_many([(index, result)])

    def _emit_many(self, pairs: list[tuple[int, TaskResult[Any]]]) -> None:
        """Hand results to the consumer (in input order when ``ordered``)."""
        self._emitted += len(pairs)
        if self._ordered:
            self._reorder.update(pairs)
            while self._next_index in self._reorder:
                self._out.append((self._next_index, self._reorder.pop(self._next_index)))
                self._next_index += 1
        else:
            self._out.extend(pairs)
        self._ready.set()

    def _remember(self, task_id: str, result: TaskResult[Any]) -> None:
        self._recent[task_id] = result
        if len(self._recent) > _RECENT:
            self._recent.popitem(last=False)

    async def _pull(self, count: int) -> tuple[list[Any], BaseException | None]:
        """Up to ``count`` inputs, and what the iterable raised after them (if it did)."""
        items: list[Any] = []
        try:
            if self._sync_source is not None:
                items.extend(itertools.islice(self._sync_source, count))
            else:
                assert self._async_source is not None
                for _ in range(count):
                    try:
                        items.append(await anext(self._async_source))
                    except StopAsyncIteration:
                        break
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            # list.extend appends one item at a time, so what was pulled before the iterable
            # raised is kept and still runs; the error is delivered after it.
            return items, exc
        return items, None

    async def _feed(self) -> None:
        # Up to _LOOKAHEAD chunks' store lookups run on threads (SQLite releases the GIL while
        # it searches) while an older chunk's hits are turned into results on the loop. More
        # than one is needed: a lookup thread waits for the GIL, held by this busy loop, up to
        # the interpreter's switch interval (5 ms) each time it takes it back, so a lookup's
        # latency is mostly waiting, which only overlapping lookups hide.
        staged: deque[_Staged] = deque()
        try:
            while True:
                while self._outstanding >= self._window:
                    if staged:  # staged inputs count as outstanding: deliver them first
                        await self._settle(staged.popleft())
                        continue
                    self._room.clear()
                    await self._room.wait()
                # The first chunk is small so the workers start at once; later ones are large
                # so a resumed run answers its cache hits with few store queries.
                chunk = self._chunk if self._pulled else min(self._chunk, 4 * self._max_workers)
                items, error = await self._pull(min(chunk, self._window - self._outstanding))
                if items:
                    staged.append(self._stage(items))
                if error is not None or not items:
                    if error is not None:
                        self._error = error  # delivered after every input pulled before it
                    break
                # Settle the oldest chunk when too many lookups are under way, when its lookup
                # is already answered (its misses reach the workers without waiting for later
                # chunks), and always the first chunk, so that the workers start at once.
                while staged and (
                    len(staged) > _LOOKAHEAD
                    or self._pulled == len(items)
                    or staged[0].lookup is None
                    or staged[0].lookup.done()
                ):
                    await self._settle(staged.popleft())
            while staged:
                await self._settle(staged.popleft())
        except BaseException as exc:
            if _cancelled(exc):
                raise
            self._fail(exc)  # nobody else would ever know: the consumer would wait forever
        finally:
            for pending in staged:
                if pending.lookup is not None:
                    pending.lookup.cancel()
            self._feed_done = True
            self._ready.set()

    def _stage(self, items: list[Any]) -> _Staged:
        """Admit ``items``: deliver what needs no call, and start the store lookup of the rest."""
        first = self._pulled
        self._pulled += len(items)
        self._outstanding += len(items)
        fresh: dict[str, _Slot] = {}
        for offset, raw in enumerate(items):
            index = first + offset
            prepared = prepare_input(raw)
            task_id = prepared.task_id
            if prepared.failure is not None:
                self._emit(index, prepared.failure)
            elif (known := self._recent.get(task_id)) is not None:
                self._emit(index, known)
            elif (slot := self._inflight.get(task_id) or fresh.get(task_id)) is not None:
                slot.positions.append(index)
            else:
                fresh[task_id] = _Slot(prepared, [index])
        lookup = None
        if fresh and self._cache is not None:
            lookup = asyncio.ensure_future(
                self._cache.lookup(list(fresh), [slot.prepared.data for slot in fresh.values()])
            )
        return _Staged(fresh, lookup)

    async def _settle(self, staged: _Staged) -> None:
        """Deliver a staged chunk's cache hits and queue the rest for the workers."""
        fresh = staged.fresh
        hits = await staged.lookup if staged.lookup is not None else [None] * len(fresh)
        delivered: list[tuple[int, TaskResult[Any]]] = []
        for (task_id, slot), hit in zip(fresh.items(), hits, strict=True):
            if hit is not None:
                # Not remembered: a later duplicate finds it in the store again.
                for index in slot.positions:
                    delivered.append((index, hit))
            # The chunk before this one settled after this one was staged: a duplicate of one
            # of its tasks joins that task (or takes its result) instead of running again.
            elif (known := self._recent.get(task_id)) is not None:
                for index in slot.positions:
                    delivered.append((index, known))
            elif (running := self._inflight.get(task_id)) is not None:
                running.positions.extend(slot.positions)
            else:
                self._inflight[task_id] = slot
                self._work.put_nowait(slot)
        if delivered:
            self._emit_many(delivered)

    async def _work_loop(self) -> None:
        try:
            hold = self._hold
            while self._fatal is None and not self._closed:
                if hold is not None:
                    await self._wait_for_consumer(hold)
                slot = await self._work.get()
                if hold is not None:
                    await self._wait_for_consumer(hold)
                result = await self._runner.run(slot.prepared)
                if self._cache is None or not _storable(result):
                    self._finish(slot, result)
                    continue
                self._submit(slot, result, self._cache)
        except BaseException as exc:
            if _cancelled(exc):
                raise
            self._fail(exc)

    async def _wait_for_consumer(self, hold: int) -> None:
        # A stream's consumer that stopped pulling (a kept iterator after ``break``) must not
        # keep the provider busy: ``hold`` undelivered results are enough to keep it fed.
        while len(self._out) + self._committing >= hold:
            self._taken.clear()
            await self._taken.wait()

    def _submit(self, slot: _Slot, result: TaskResult[Any], cache: ResultCache) -> None:
        # The worker moves on to its next task at once; the result is delivered when its row
        # has committed (group commit on the writer thread), never before.
        try:
            write = cache.submit(result)
        except Exception as exc:
            if cache.writer.closed:
                raise  # the store went away: nothing more can be saved, the batch ends
            # This one row cannot be written (it does not serialize): only this task says so.
            failed: concurrent.futures.Future[None] = concurrent.futures.Future()
            failed.set_exception(exc)
            self._finish(slot, cache.settled(result, failed))
            return
        if self._hold is not None:
            self._committing += 1
        write.add_done_callback(functools.partial(self._on_commit, slot, result))

    def _on_commit(
        self, slot: _Slot, result: TaskResult[Any], write: concurrent.futures.Future[None]
    ) -> None:
        # On the writer thread. One group commit completes many rows at once: wake the loop
        # once per group, not once per row (each wake-up costs more than a row's bookkeeping).
        with self._commit_lock:
            self._committed.append((slot, result, write))
            if self._commit_wake_pending:
                return
            self._commit_wake_pending = True
        loop = self._loop
        assert loop is not None  # set by start(), before any worker runs
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody left to tell
            loop.call_soon_threadsafe(self._deliver_committed)

    def _deliver_committed(self) -> None:
        with self._commit_lock:
            done, self._committed = self._committed, []
            self._commit_wake_pending = False
        if self._closed:
            return
        assert self._cache is not None
        if self._hold is not None:
            self._committing -= len(done)
            self._taken.set()  # let held workers look again (a cancelled write emits nothing)
        try:
            for slot, result, write in done:
                if not write.cancelled():
                    self._finish(slot, self._cache.settled(result, write))
        except BaseException as exc:  # a loop callback: raised, it would only be logged
            self._fail(exc)

    def _finish(self, slot: _Slot, result: TaskResult[Any]) -> None:
        # Synchronous on purpose: a duplicate arriving now finds either the slot or the
        # remembered result, never neither.
        task_id = slot.prepared.task_id
        del self._inflight[task_id]
        self._remember(task_id, result)
        for index in slot.positions:
            self._emit(index, result)


def _cancelled(exc: BaseException) -> bool:
    """Whether ``exc`` is this task being cancelled (to let through), not a failure to report.

    A CancelledError that does not come from cancelling this task (a future cancelled under
    it) is a failure like any other: letting it end the task silently would hang the batch.
    """
    if not isinstance(exc, asyncio.CancelledError):
        return False
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def _storable(result: TaskResult[Any]) -> bool:
    # Inputs that are not valid inputs are reported, not stored: their ids come from a repr.
    return result.error is None or result.error.code is not ErrorCode.INPUT_INVALID
