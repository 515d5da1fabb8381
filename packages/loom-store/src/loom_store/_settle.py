"""How the writer tells its callers: futures resolved once per group commit.

Thread futures are resolved on the writer thread; asyncio futures are resolved on their own
loop, all of one group's futures of a loop in a single ``call_soon_threadsafe``: one wake-up of
the loop per group, not per row.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import Future
from typing import Any, TypeAlias

from loom_protocol import StoreError

from ._rows import ResultRow

__all__ = ["Each", "Item", "Outcome", "Waiter", "settle"]


class Each:
    """The waiter of :meth:`StoreWriter.submit_each_on_loop`: one outcome per row."""

    __slots__ = ("count", "future")

    def __init__(self, future: asyncio.Future[list[StoreError | None]], count: int) -> None:
        self.future = future
        self.count = count


Waiter: TypeAlias = "Future[None] | asyncio.Future[None] | Each"
Item = tuple[list[ResultRow], Waiter]
#: What a submission comes to: ``None`` (committed), an error, or one of those per row.
Outcome: TypeAlias = "StoreError | list[StoreError | None] | None"


def settle(outcomes: list[tuple[Waiter, Outcome]]) -> None:
    """Resolve every waiter: thread futures directly, asyncio futures once per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Outcome]]] = {}
    for waiter, outcome in outcomes:
        if isinstance(waiter, Future):  # running (see _write): it can no longer be cancelled
            assert not isinstance(outcome, list)
            if outcome is None:
                waiter.set_result(None)
            else:
                # Each waiter gets its own exception: a traceback attaches to it when raised.
                waiter.set_exception(StoreError(str(outcome)))
        elif isinstance(waiter, Each):
            each = outcome if isinstance(outcome, list) else [outcome] * waiter.count
            by_loop.setdefault(waiter.future.get_loop(), []).append((waiter.future, each))
        else:
            by_loop.setdefault(waiter.get_loop(), []).append((waiter, outcome))
    for loop, batch in by_loop.items():
        # A closed loop raises RuntimeError: nobody is waiting there any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle_on_loop, batch)


def _settle_on_loop(batch: list[tuple[asyncio.Future[Any], Outcome]]) -> None:
    for future, outcome in batch:
        if future.done():  # cancelled by its caller
            continue
        if isinstance(outcome, list):
            future.set_result(outcome)  # one outcome per row: nothing is raised
        elif outcome is None:
            future.set_result(None)
        else:
            future.set_exception(StoreError(str(outcome)))
