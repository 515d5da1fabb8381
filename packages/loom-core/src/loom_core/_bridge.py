"""The loom's own event-loop thread, on which the synchronous API runs the async engine.

Running on a private loop (instead of ``asyncio.run`` per call) is what makes the sync API
work where a loop is already running (Jupyter, inside an async function) and lets one loom
keep its connections between calls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from loom_protocol import LoomUsageError

__all__ = ["LoomClosedError", "LoopThread"]

T = TypeVar("T")


#: Seconds a call interrupted in the waiting thread waits for its work on the loop to stop.
_STOP_WAIT = 10.0


class LoomClosedError(LoomUsageError):
    """The TaskLoom was closed while a batch or call ran, or before it started."""


class LoopThread:
    """A daemon thread running one event loop, started on first use, never after close."""

    def __init__(self, name: str = "loom-loop") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def on_loop_thread(self) -> bool:
        """Whether the caller runs on the loop's own thread."""
        thread = self._thread
        return thread is not None and threading.current_thread() is thread

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop, started on first access.

        Raises:
            LoomClosedError: The loop thread was closed.
        """
        with self._lock:
            if self._closed:
                raise LoomClosedError("this TaskLoom is closed")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                thread = threading.Thread(target=serve, name=self._name, daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop thread and wait for it; Ctrl-C cancels it there.

        Raises:
            LoomClosedError: The loop thread is closed, or was closed while ``coro`` ran.
            LoomUsageError: Called from the loop thread itself (it would wait for itself).
        """
        if self.on_loop_thread():
            coro.close()
            raise LoomUsageError(
                "a synchronous TaskLoom method was called from inside the loom's own event "
                "loop (for example from a backend callback); use the async method instead"
            )
        try:
            loop = self.loop
        except LoomClosedError:
            coro.close()
            raise
        stopped = threading.Event()
        # A Ctrl-C can land inside run_coroutine_threadsafe itself, after the work was queued
        # on the loop but before its future is returned: the work is then stopped through
        # its task, which ``tracked`` records (or, not started yet, never starts).
        guard = threading.Lock()
        started: list[asyncio.Task[Any]] = []
        abandoned = False

        async def tracked() -> T:
            try:
                with guard:
                    task = asyncio.current_task()
                    if abandoned or task is None:
                        coro.close()
                        raise asyncio.CancelledError
                    started.append(task)
                return await coro
            finally:
                stopped.set()

        future: concurrent.futures.Future[T] | None = None
        try:
            future = asyncio.run_coroutine_threadsafe(tracked(), loop)
            return future.result()
        except concurrent.futures.CancelledError:
            if self._closed:  # close() cancelled what was left on the loop
                raise LoomClosedError("the TaskLoom was closed while this call ran") from None
            raise
        except BaseException:
            # KeyboardInterrupt or the caller's own cancellation: stop the work on the loop,
            # and wait until it has stopped (the cancelled future is done at once, the work on
            # the loop only once its cleanup ran): what the caller does next may rely on it.
            if future is None:
                with guard:
                    abandoned = True
                    queued = list(started)
                with contextlib.suppress(RuntimeError):  # a loop closed meanwhile
                    for task in queued:
                        loop.call_soon_threadsafe(task.cancel)
                    loop.call_soon_threadsafe(_nothing)  # wakes a loop the Ctrl-C left asleep
                stopped.wait(_STOP_WAIT)
            elif not future.done():
                future.cancel()
                stopped.wait(_STOP_WAIT)
            raise

    def close(self) -> None:
        """Cancel what still runs on the loop, stop it and join the thread (idempotent).

        A caller waiting in :meth:`run` gets :class:`LoomClosedError`, never a hang.
        """
        if self.on_loop_thread():
            raise LoomUsageError("close() cannot be called from the loom's own event loop")
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
            self._closed = True
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            # What a caller of run() still waits for would never finish once the loop stops.
            current = asyncio.current_task()
            left = [task for task in asyncio.all_tasks() if task is not current]
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)
            await loop.shutdown_asyncgens()
            await loop.shutdown_default_executor()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


def _nothing() -> None:
    """A callback that only wakes the loop."""
