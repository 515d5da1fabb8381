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

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """A daemon thread running one event loop, started on first use."""

    def __init__(self, name: str = "loom-loop") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop, started on first access."""
        with self._lock:
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
        """Run ``coro`` on the loop thread and wait for it; Ctrl-C cancels it there."""
        if self._thread is not None and threading.current_thread() is self._thread:
            coro.close()
            raise LoomUsageError(
                "a synchronous TaskLoom method was called from inside the loom's own event "
                "loop (for example from a backend callback); use the async method instead"
            )
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            # KeyboardInterrupt or the caller's own cancellation: stop the work on the loop.
            if not future.done():
                future.cancel()
                with contextlib.suppress(BaseException):
                    future.result(timeout=10)
            raise

    def close(self) -> None:
        """Stop the loop and join the thread (idempotent)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        if threading.current_thread() is thread:
            raise LoomUsageError("close() cannot be called from the loom's own event loop")

        async def shutdown() -> None:
            await loop.shutdown_asyncgens()
            await loop.shutdown_default_executor()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()
