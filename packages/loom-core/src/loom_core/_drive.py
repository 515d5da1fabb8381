"""One core for the sync and async twins: the batch as an async generator of result batches.

Every batch method reads the same async generators, :meth:`Driver.pairs` (results with their
input index) and :meth:`Driver.events` (the typed event stream), written once. The async API
iterates them on the caller's loop; the sync API iterates the very same generators on the
loom's own loop thread, one step per batch of results (:meth:`Driver.iterate`). The twins
therefore cannot disagree: opening the store, registering the configuration, starting and
ending the run and turning errors into ``batch_error`` happen in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

from loom_protocol import StreamEvent

from ._batch import BatchRun
from ._bridge import LoomClosedError, LoopThread
from ._budget import Budget
from ._calls import BatchCall
from ._delivery import BatchEvents, ResultCollector
from ._outbox import Pair
from ._rateshare import RateShare
from ._session import Session
from ._task import TaskRunner

__all__ = ["Driver"]

X = TypeVar("X")


class Driver:
    """Runs batch calls for one loom: on the caller's loop, or on its own loop thread."""

    def __init__(
        self,
        runner: TaskRunner,
        session: Session,
        bridge: LoopThread,
        *,
        lease_s: float | None = None,
        share: RateShare | None = None,
    ) -> None:
        self._runner = runner
        self._session = session
        self._bridge = bridge
        self._lease_s = lease_s
        self._share = share

    # -- the one core ------------------------------------------------------------------------

    async def pairs(self, call: BatchCall) -> AsyncGenerator[list[Pair], None]:
        """Open the call's run, then yield its ``(index, result)`` pairs a batch at a time."""
        # Opening the store and registering the configuration is blocking I/O: off the loop.
        cache, others = await asyncio.to_thread(self._session.cache_for, call.task_name)
        call.warn_other_configs(others)
        # A stream's consumer may stop pulling and keep the iterator: its workers then stop
        # once 2 x max_workers results wait for it (enough to keep every worker busy while
        # the consumer takes the previous ones). map collects on the loop and never stops.
        run = BatchRun(
            self._runner,
            call.sequence,
            cache=cache,
            max_workers=call.max_workers,
            ordered=call.ordered,
            hold=2 * call.max_workers if call.streamed else None,
            budget=None if call.budget is None else Budget(call.budget),
            lease_s=self._lease_s,
            share=self._share,
        )
        self._session.enter(run)
        try:
            while batch := await run.next_batch():
                yield batch
        finally:
            await self._session.leave(run)

    async def events(
        self, call: BatchCall, events: BatchEvents
    ) -> AsyncGenerator[list[StreamEvent], None]:
        """``batch_start``, one ``task_result`` per input, then ``batch_end`` or ``batch_error``.

        Anything that ends the batch early (the store cannot be opened, the loom is closed, the
        input iterable raises) becomes the ``batch_error`` event: an event stream never raises
        once it has started.
        """
        yield [events.start()]
        results = self.pairs(call)
        try:
            async for batch in results:
                yield [events.result(index, result) for index, result in batch]
        except Exception as exc:
            yield [events.error(exc)]
            return
        finally:
            await results.aclose()
        yield [events.end()]

    async def collect(self, call: BatchCall, collector: ResultCollector) -> None:
        """Read the whole batch into ``collector`` (map and amap), ticking its progress bar."""
        # The bar also moves while no result arrives (a 429 pause, retries under way).
        ticker = asyncio.ensure_future(collector.tick()) if collector.bar is not None else None
        results = self.pairs(call)
        try:
            async for batch in results:
                collector.add_many(batch)
        finally:
            if ticker is not None:
                ticker.cancel()
            await results.aclose()

    # -- the two ways to read it -------------------------------------------------------------

    @staticmethod
    async def flat(batches: AsyncGenerator[list[X], None]) -> AsyncIterator[X]:
        """The items of ``batches``, for the async API (closing this closes ``batches``)."""
        try:
            async for batch in batches:
                for item in batch:
                    yield item
        finally:
            await batches.aclose()

    def iterate(
        self,
        batches: AsyncGenerator[list[X], None],
        closed: Callable[[LoomClosedError], list[X]] | None = None,
    ) -> Iterator[X]:
        """The items of ``batches``, iterated on the loom's loop thread, for the sync API.

        ``closed`` turns the loom being closed between two steps (the loop thread is gone)
        into final items; without it, :class:`LoomClosedError` is raised.
        """
        try:
            while True:
                try:
                    batch = self._bridge.run(_next(batches))
                except LoomClosedError as exc:
                    if closed is None:
                        raise
                    yield from closed(exc)
                    return
                if batch is None:
                    return
                yield from batch
        finally:
            # Once the loom is closed, close() has ended the run and stopped the loop.
            with contextlib.suppress(LoomClosedError):
                self._bridge.run(_aclose(batches))

    def run(self, coroutine: Coroutine[Any, Any, X]) -> X:
        """Run ``coroutine`` on the loom's loop thread and return its result."""
        return self._bridge.run(coroutine)


async def _next(batches: AsyncGenerator[list[X], None]) -> list[X] | None:
    return await anext(batches, None)


async def _aclose(batches: AsyncGenerator[list[X], None]) -> None:
    await batches.aclose()
