"""How a batch's results reach its consumer: events for the event streams, a collector for map.

Shared by the sync and async twins, which differ only in how they drive the scheduler.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from typing import Any

from loom_protocol import (
    BatchEndEvent,
    BatchErrorEvent,
    BatchResult,
    BatchStartEvent,
    Error,
    ErrorCode,
    StoreError,
    SummaryCounter,
    TaskResult,
    TaskResultEvent,
)

from ._adaptive import ConcurrencyLimit
from ._bridge import LoomClosedError
from ._ratelimit import RateLimiter
from ._task import TaskRunner

__all__ = ["BatchEvents", "ResultCollector"]


class BatchEvents:
    """Builds the events of one batch (stream_events, astream_events) and keeps the counts."""

    def __init__(self, task_name: str | None, total: int | None) -> None:
        self.batch_id = uuid.uuid4().hex
        self.task_name = task_name
        self.total = total
        self.counter = SummaryCounter()
        self.started = time.perf_counter()

    def start(self) -> BatchStartEvent:
        return BatchStartEvent(batch_id=self.batch_id, task_name=self.task_name, total=self.total)

    def result(self, index: int, result: TaskResult[Any]) -> TaskResultEvent:
        self.counter.add(result)
        return TaskResultEvent(
            batch_id=self.batch_id,
            index=index,
            result=result,
            done=self.counter.done,
            total=self.total,
        )

    def end(self) -> BatchEndEvent:
        return BatchEndEvent(
            batch_id=self.batch_id,
            summary=self.counter.summary(time.perf_counter() - self.started),
        )

    def error(self, exc: Exception) -> BatchErrorEvent:
        """The batch_error event: ``cancelled`` when the loom was closed during the batch,
        ``store_error`` when the store failed, ``internal`` otherwise."""
        if isinstance(exc, LoomClosedError):
            code = ErrorCode.CANCELLED
        elif isinstance(exc, StoreError):
            code = ErrorCode.STORE_ERROR
        else:
            code = ErrorCode.INTERNAL
        return BatchErrorEvent(
            batch_id=self.batch_id,
            error=Error(code=code, message=f"the batch stopped: {type(exc).__name__}: {exc}"),
            summary=self.counter.summary(time.perf_counter() - self.started),
        )


class ResultCollector:
    """Gathers a batch's results in input order, ticking the progress bar (map and amap).

    The bar's postfix shows failed and cached results, the retries the batch made so far
    (provider retries and re-asks), during a loom-wide 429 pause the seconds left of it, and
    for an adaptive loom the calls in flight over the concurrency limit reached
    (``conc=22/24``) and the limits the provider reported (``limits=600 requests/min``).
    """

    #: Seconds between refreshes of the bar while no result arrives.
    TICK = 0.5

    def __init__(
        self,
        progress: bool,
        total: int | None,
        runner: TaskRunner,
        limiter: RateLimiter,
        concurrency: ConcurrencyLimit | None = None,
    ) -> None:
        self.results: list[TaskResult[Any] | None] = []
        self.progress = progress
        self.total = total
        self.bar: Any = None
        self.failed = self.cached = 0
        self.started = time.perf_counter()
        self.runner = runner
        self.limiter = limiter
        self.concurrency = concurrency
        self.retries_before = runner.retries

    def __enter__(self) -> ResultCollector:
        if self.progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, unit="task", desc="loom")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def add_many(self, pairs: list[tuple[int, TaskResult[Any]]]) -> None:
        results = self.results
        for index, result in pairs:
            if index >= len(results):
                results.extend([None] * (index + 1 - len(results)))
            results[index] = result
        if self.bar is not None:
            self.failed += sum(not result.is_success for _, result in pairs)
            self.cached += sum(result.cached for _, result in pairs)
            self.bar.update(len(pairs))
            self.bar.set_postfix(self.postfix(), refresh=False)

    def postfix(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"failed": self.failed, "cached": self.cached}
        retries = self.runner.retries - self.retries_before
        if retries:
            shown["retries"] = retries
        waiting = self.limiter.paused_for()
        if waiting > 0:
            shown["waiting"] = f"{math.ceil(waiting)}s"
        if self.concurrency is not None:
            shown["conc"] = f"{self.concurrency.in_flight}/{self.concurrency.limit}"
            learned = self.runner.caller.learned()
            if learned:
                shown["limits"] = learned
        return shown

    async def tick(self) -> None:
        while True:
            await asyncio.sleep(self.TICK)
            self.bar.set_postfix(self.postfix(), refresh=True)

    def batch(self) -> BatchResult[Any]:
        done = [r for r in self.results if r is not None]
        if len(done) != len(self.results):  # pragma: no cover - would be a scheduler bug
            raise RuntimeError("a batch finished with inputs that have no result")
        return BatchResult.model_construct(
            results=done, elapsed_s=time.perf_counter() - self.started
        )
