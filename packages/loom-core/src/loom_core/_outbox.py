"""Where a batch's results wait for its consumer.

The outbox hands results over in input order when asked to, counts the inputs pulled but not
yet taken (the feeder pulls only while they are fewer than the *window*), holds the workers of
a stream whose consumer stopped reading, and carries the batch's end: complete, the error the
input iterable raised (after every input pulled before it), or a fatal error that ends it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from loom_protocol import TaskResult

__all__ = ["Outbox"]

Pair = tuple[int, TaskResult[Any]]


class Outbox:
    """The consumer's side of one batch.

    Args:
        ordered: Hand results over in input order (buffering those that finish early).
        window: Inputs pulled but not yet taken by the consumer, at most.
        hold: Results ready (or being committed) at which workers start no new call until the
            consumer takes some; ``None`` for a consumer that never stops reading (``map``).
    """

    def __init__(self, *, ordered: bool, window: int, hold: int | None) -> None:
        self.window = window
        self.hold = hold
        self._ordered = ordered
        self._out: deque[Pair] = deque()
        self._reorder: dict[int, TaskResult[Any]] = {}
        self._next_index = 0
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._taken = asyncio.Event()
        self._committing = 0  # results whose rows are being written (held streams only)
        self._outstanding = 0  # pulled, not yet taken by the consumer
        self._pulled = 0
        self._emitted = 0
        self._feed_done = False
        self._error: BaseException | None = None
        self.fatal: BaseException | None = None

    # -- the feeder's side -------------------------------------------------------------------

    def resize(self, window: int) -> None:
        """Change the window (a batch shared by several workers widens it; see ``_lease.py``)."""
        self.window = max(1, window)
        if not self.full:
            self._room.set()

    @property
    def feed_done(self) -> bool:
        """Whether every input has been pulled."""
        return self._feed_done

    @property
    def pulled(self) -> int:
        """Inputs pulled so far (the index of the next one)."""
        return self._pulled

    @property
    def full(self) -> bool:
        """Whether ``window`` inputs are pulled but not taken (pull no more for now)."""
        return self._outstanding >= self.window

    @property
    def room(self) -> int:
        """How many more inputs may be pulled now."""
        return self.window - self._outstanding

    async def wait_for_room(self) -> None:
        """Wait until the consumer has taken enough for the feeder to pull again."""
        while self.full:
            self._room.clear()
            await self._room.wait()

    def admit(self, count: int) -> int:
        """Count ``count`` newly pulled inputs; the index of the first of them."""
        first = self._pulled
        self._pulled += count
        self._outstanding += count
        return first

    def end_feed(self, error: BaseException | None = None) -> None:
        """No more inputs; ``error`` (the iterable's) is raised after every result."""
        if error is not None:
            self._error = error
        self._feed_done = True
        self._ready.set()

    # -- the producers' side -----------------------------------------------------------------

    def emit(self, index: int, result: TaskResult[Any]) -> None:
        """Hand one result to the consumer."""
        self.emit_many([(index, result)])

    def emit_many(self, pairs: list[Pair]) -> None:
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

    def abort(self, error: BaseException) -> None:
        """End the batch with ``error`` (the first one wins), once ready results are taken."""
        if self.fatal is None:
            self.fatal = error
        self._ready.set()

    async def wait_for_consumer(self) -> None:
        """With a hold, wait while ``hold`` results wait for the consumer or their commit.

        A stream's consumer that stopped pulling (a kept iterator after ``break``) must not
        keep the provider busy: ``hold`` undelivered results are enough to keep it fed.
        """
        hold = self.hold
        if hold is None:
            return
        while len(self._out) + self._committing >= hold:
            self._taken.clear()
            await self._taken.wait()

    def commit_started(self) -> None:
        """A result went to the store; it counts against the hold until its commit ends."""
        if self.hold is not None:
            self._committing += 1

    def commit_ended(self, count: int = 1) -> None:
        """``count`` commits ended (their results are emitted now, or were cancelled)."""
        if self.hold is not None:
            self._committing -= count
            self._taken.set()  # let held workers look again (a cancelled write emits nothing)

    # -- the consumer's side -----------------------------------------------------------------

    async def next_batch(self, limit: int = 512) -> list[Pair]:
        """Wait for at least one result and return every ready one (up to ``limit``).

        Returns ``(input index, result)`` pairs; an empty list once the batch is complete.
        Raises the fatal error, or what the input iterable raised once every input pulled
        before it has been delivered.
        """
        while not self._out:
            if self.fatal is not None:
                raise self.fatal
            if self._feed_done and self._emitted == self._pulled:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                return []
            self._ready.clear()
            await self._ready.wait()
        count = min(limit, len(self._out))
        batch = [self._out.popleft() for _ in range(count)]
        self._outstanding -= count
        if self._outstanding < self.window:
            self._room.set()
        if self.hold is not None:
            self._taken.set()
        return batch
