"""The feeding side of a batch: pull inputs, admit them, answer what needs no call.

Inputs are pulled lazily, a chunk at a time, and only while the outbox has room (fewer than
its window pulled but not taken), so a generator of millions of inputs runs in bounded memory
(with ``ordered=True`` too: a slow head of line stops the pulling, not the memory). Each chunk
is admitted (canonical value and task id, or ``input_invalid`` at once), deduplicated against
the tasks under way and the results just computed, and looked up in the store with one query;
cache hits are delivered at once, the rest queued for the workers.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict, deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loom_protocol import TaskResult

from ._inputs import PreparedInput, prepare_input
from ._outbox import Outbox, Pair
from ._persist import ResultCache

if TYPE_CHECKING:
    from ._lease import TaskLease

__all__ = ["Feeder", "Slot"]

#: How many duplicate-free results are remembered for later duplicates of the same batch.
_RECENT = 4096

#: Chunks whose store lookups may be under way while an older chunk is being settled.
_LOOKAHEAD = 2

#: Inputs pulled at once, at most.
_CHUNK = 1024


@dataclass(slots=True)
class Slot:
    """One unique task under way and every input position waiting for it."""

    prepared: PreparedInput
    positions: list[int] = field(default_factory=list)


@dataclass(slots=True)
class _Staged:
    """A chunk admitted but not settled: its new tasks and their store lookup under way.

    ``lookup`` answers one cached result or ``None`` per task, in the order of ``fresh``.
    """

    fresh: dict[str, Slot]
    lookup: asyncio.Future[list[TaskResult[Any] | None]] | None


class Feeder:
    """Feeds one batch: its inputs in, its work queue and its ready answers out.

    Args:
        source: The inputs (a sync or an async iterable), pulled lazily.
        outbox: Where results needing no call go, and what says when to pull.
        cache: The store view when a task_name is set, else ``None``.
        first_chunk: The size of the first chunk (small, so that the workers start at once).
    """

    def __init__(
        self,
        source: Iterable[Any] | AsyncIterable[Any],
        outbox: Outbox,
        cache: ResultCache | None,
        first_chunk: int,
    ) -> None:
        self._sync_source: Iterator[Any] | None = None
        self._async_source: AsyncIterator[Any] | None = None
        if isinstance(source, AsyncIterable):
            self._async_source = aiter(source)
        else:
            self._sync_source = iter(source)
        self._outbox = outbox
        self._cache = cache
        self._chunk = min(_CHUNK, outbox.window)
        self._first_chunk = min(self._chunk, first_chunk)
        self._inflight: dict[str, Slot] = {}
        self._recent: OrderedDict[str, TaskResult[Any]] = OrderedDict()
        #: Unique tasks waiting for a worker.
        self.work: asyncio.Queue[Slot] = asyncio.Queue()
        #: The batch's place among its task's workers (set by the batch when it has a store).
        self.lease: TaskLease | None = None

    async def run(self) -> None:
        """Pull, admit and settle every input; tell the outbox when there are no more.

        Raises what goes wrong inside (a store lookup that fails): the batch then ends. What
        the input iterable raises is not an error of the feeder: it reaches the consumer after
        every input pulled before it.
        """
        # Up to _LOOKAHEAD chunks' store lookups run on threads (SQLite releases the GIL while
        # it searches) while an older chunk's hits are turned into results on the loop. More
        # than one is needed: a lookup thread waits for the GIL, held by this busy loop, up to
        # the interpreter's switch interval (5 ms) each time it takes it back, so a lookup's
        # latency is mostly waiting, which only overlapping lookups hide.
        outbox = self._outbox
        staged: deque[_Staged] = deque()
        error: BaseException | None = None
        try:
            while True:
                while outbox.full:
                    if staged:  # staged inputs count as outstanding: deliver them first
                        await self._settle(staged.popleft())
                        continue
                    await outbox.wait_for_room()
                # The first chunk is small so the workers start at once; later ones are large
                # so a resumed run answers its cache hits with few store queries.
                first = outbox.pulled == 0
                chunk = self._first_chunk if first else self._chunk
                items, error = await self._pull(min(chunk, outbox.room))
                if items:
                    staged.append(self._stage(items))
                if error is not None or not items:
                    break
                # Settle the oldest chunk when too many lookups are under way, when its lookup
                # is already answered (its misses reach the workers without waiting for later
                # chunks), and always the first chunk, so that the workers start at once.
                while staged and (
                    len(staged) > _LOOKAHEAD
                    or first
                    or staged[0].lookup is None
                    or staged[0].lookup.done()
                ):
                    await self._settle(staged.popleft())
                    first = False
            while staged:
                await self._settle(staged.popleft())
        finally:
            for pending in staged:
                if pending.lookup is not None:
                    pending.lookup.cancel()
            outbox.end_feed(error)

    def unfinished(self) -> list[str]:
        """The ids of the tasks under way: queued, being called, or being committed."""
        return list(self._inflight)

    def finish(self, slot: Slot, result: TaskResult[Any]) -> None:
        """Deliver ``slot``'s result to every input waiting for it, and remember it."""
        # Synchronous on purpose: a duplicate arriving now finds either the slot or the
        # remembered result, never neither.
        task_id = slot.prepared.task_id
        del self._inflight[task_id]
        self._recent[task_id] = result
        if len(self._recent) > _RECENT:
            self._recent.popitem(last=False)
        positions = slot.positions
        if len(positions) == 1:
            self._outbox.emit(positions[0], result)
        else:
            self._outbox.emit_many([(index, result) for index in positions])

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

    def _stage(self, items: list[Any]) -> _Staged:
        """Admit ``items``: deliver what needs no call, and start the store lookup of the rest."""
        first = self._outbox.admit(len(items))
        ready: list[Pair] = []
        fresh: dict[str, Slot] = {}
        for offset, raw in enumerate(items):
            index = first + offset
            prepared = prepare_input(raw)
            task_id = prepared.task_id
            if prepared.failure is not None:
                ready.append((index, prepared.failure))
            elif (known := self._recent.get(task_id)) is not None:
                ready.append((index, known))
            elif (slot := self._inflight.get(task_id) or fresh.get(task_id)) is not None:
                slot.positions.append(index)
            else:
                fresh[task_id] = Slot(prepared, [index])
        if ready:
            self._outbox.emit_many(ready)
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
        delivered: list[Pair] = []
        queued: list[Slot] = []
        for (task_id, slot), hit in zip(fresh.items(), hits, strict=True):
            if hit is not None:
                # Not remembered: a later duplicate finds it in the store again.
                delivered.extend((index, hit) for index in slot.positions)
            # The chunk before this one settled after this one was staged: a duplicate of one
            # of its tasks joins that task (or takes its result) instead of running again.
            elif (known := self._recent.get(task_id)) is not None:
                delivered.extend((index, known) for index in slot.positions)
            elif (running := self._inflight.get(task_id)) is not None:
                running.positions.extend(slot.positions)
            else:
                self._inflight[task_id] = slot
                queued.append(slot)
        if delivered:
            self._outbox.emit_many(delivered)
        if self.lease is not None and queued:
            await self.lease.admit(queued)  # claimed first when other workers share the task
        else:
            for slot in queued:
                self.work.put_nowait(slot)
