"""TaskLoom's provider Batch API methods: ``submit_batch``, ``batch_status``, ``collect_batch``,
``cancel_batch``, their async twins, and the core of ``map(..., batch=True)``.

Each pair of twins shares one coroutine: the async method awaits it on the caller's loop, the
sync one runs it on the loom's loop thread (``Driver.run``), as every other twin does. The work
itself is :class:`~._provider_jobs.ProviderJob`'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, Iterable
from typing import TYPE_CHECKING, Any

from loom_protocol import (
    BatchResult,
    LoomUsageError,
    ProviderBatchBackend,
    TaskResult,
    check_non_empty_string,
)

from ._batch_context import JobContext
from ._batch_policy import BatchPolicy
from ._batch_status import BatchJobStatus
from ._calls import BatchCall, batch_call
from ._provider_jobs import Progress, ProviderJob

if TYPE_CHECKING:
    from ._build import Engine
    from ._drive import Driver
    from ._session import Session

__all__ = ["ProviderBatchMethods"]

#: The backends of loom-backends that implement ``ProviderBatchBackend``.
_WITH_BATCH_API = "OpenAIChatBackend (OpenAI's Batch API) and AnthropicBackend (Message Batches)"


class ProviderBatchMethods:
    """The provider Batch API half of :class:`~loom_core.TaskLoom` (see its docstring)."""

    _engine: Engine
    _session: Session
    _driver: Driver
    _batch_policy: BatchPolicy

    # -- checks ------------------------------------------------------------------------------

    def _batch_backend(self) -> ProviderBatchBackend:
        backend = self._engine.backend
        if not isinstance(backend, ProviderBatchBackend):
            raise LoomUsageError(
                f"batch=True needs a backend with a provider Batch API; {type(backend).__name__} "
                f"has none. The backends with one are {_WITH_BATCH_API}; run this backend "
                "online (batch=False)"
            )
        return backend

    def _job_call(self, sequence: Any, task_name: Any) -> BatchCall:
        self._session.check_open()
        if task_name is None:
            raise LoomUsageError(
                "a provider batch needs a task_name: the store keeps the job (its batches and "
                "their requests), so that a later call, or another process, can resume it"
            )
        self._batch_backend()
        return batch_call(sequence, task_name, 1, True, streamed=False)

    def _check_task(self, task_name: Any) -> str:
        self._session.check_open()
        if task_name is None:
            raise LoomUsageError("task_name is required: it names the job in the store")
        check_non_empty_string("task_name", task_name)
        self._batch_backend()
        return str(task_name)

    async def _job(self, task_name: str, call: BatchCall | None = None) -> ProviderJob:
        cache, others = await asyncio.to_thread(self._session.cache_for, task_name)
        if call is not None:
            call.warn_other_configs(others)
        assert cache is not None
        ctx = JobContext(self._engine.runner, self._batch_backend(), cache, self._batch_policy)
        return ProviderJob(ctx)

    # -- the cores ---------------------------------------------------------------------------

    async def _run_job(
        self, call: BatchCall, *, wait: bool, progress: Progress | None = None
    ) -> list[TaskResult[Any]]:
        assert call.task_name is not None
        job = await self._job(call.task_name, call)
        raws = await _materialize(call.sequence)
        return await job.run(raws, wait=wait, progress=progress)

    async def _submit(self, call: BatchCall) -> BatchJobStatus:
        assert call.task_name is not None
        await self._run_job(call, wait=False)
        job = await self._job(call.task_name)
        return await job.status(refresh=False)

    async def _status(self, task_name: str, refresh: bool) -> BatchJobStatus:
        return await (await self._job(task_name)).status(refresh=refresh)

    async def _collect(self, task_name: str, wait: bool) -> BatchResult[Any]:
        started = asyncio.get_running_loop().time()
        results = await (await self._job(task_name)).collect(wait=wait)
        elapsed = asyncio.get_running_loop().time() - started
        return BatchResult.model_construct(results=results, elapsed_s=elapsed)

    async def _cancel(self, task_name: str) -> BatchJobStatus:
        return await (await self._job(task_name)).cancel()

    async def _batch_map(
        self, sequence: Any, task_name: str | None, progress: bool
    ) -> BatchResult[Any]:
        """The core of ``map``/``amap`` with ``batch=True``."""
        call = self._job_call(sequence, task_name)
        started = asyncio.get_running_loop().time()
        with _ProgressBar(progress) as bar:
            results = await self._run_job(call, wait=True, progress=bar.update)
        elapsed = asyncio.get_running_loop().time() - started
        return BatchResult.model_construct(results=results, elapsed_s=elapsed)

    # -- public ------------------------------------------------------------------------------

    def submit_batch(self, sequence: Iterable[Any], task_name: str) -> BatchJobStatus:
        """Submit the inputs that have no stored result to the provider's Batch API, and
        return at once with the job's status (``collect_batch`` gets the results later).

        Inputs already held by a batch of this task are not submitted again, so calling it
        twice submits nothing more. Requires a ``task_name`` (the store keeps the job) and a
        backend with a Batch API.

        Raises:
            LoomUsageError: No ``task_name``, a backend without a Batch API, bad inputs.
        """
        call = self._job_call(sequence, task_name)
        return self._driver.run(self._submit(call))

    async def asubmit_batch(
        self, sequence: Iterable[Any] | AsyncIterable[Any], task_name: str
    ) -> BatchJobStatus:
        """Async twin of :meth:`submit_batch` (also takes an async iterable)."""
        call = self._job_call(sequence, task_name)
        return await self._submit(call)

    def batch_status(self, task_name: str, *, refresh: bool = True) -> BatchJobStatus:
        """The provider batches of ``task_name`` and their counts (submitted, in progress,
        succeeded, failed, expired, cancelled, per batch); ``refresh`` asks the provider
        about the open ones first, else the counts are those last stored."""
        name = self._check_task(task_name)
        return self._driver.run(self._status(name, refresh))

    async def abatch_status(self, task_name: str, *, refresh: bool = True) -> BatchJobStatus:
        """Async twin of :meth:`batch_status`."""
        return await self._status(self._check_task(task_name), refresh)

    def collect_batch(self, task_name: str, *, wait: bool = False) -> BatchResult[Any]:
        """Store and return the results of the task's batches that have finished.

        Answers go through the same parsing as online; an answer that does not validate is
        asked again in a follow-up batch (submitted here), as are requests that expired. With
        ``wait=True`` it polls until every batch is settled. The results are those settled by
        this call, in the order they were collected (``map(..., batch=True)`` gives input order).
        """
        name = self._check_task(task_name)
        return self._driver.run(self._collect(name, wait))

    async def acollect_batch(self, task_name: str, *, wait: bool = False) -> BatchResult[Any]:
        """Async twin of :meth:`collect_batch`."""
        return await self._collect(self._check_task(task_name), wait)

    def cancel_batch(self, task_name: str) -> BatchJobStatus:
        """Cancel the task's open batches: nothing more is sent, the provider is asked to stop.

        Answers that finished before the cancel stay collectable (``collect_batch``); the
        rest fail as ``cancelled``.
        """
        name = self._check_task(task_name)
        return self._driver.run(self._cancel(name))

    async def acancel_batch(self, task_name: str) -> BatchJobStatus:
        """Async twin of :meth:`cancel_batch`."""
        return await self._cancel(self._check_task(task_name))


async def _materialize(sequence: Iterable[Any] | AsyncIterable[Any]) -> list[Any]:
    """Every input: a provider batch is submitted whole, so the inputs are read at once."""
    if isinstance(sequence, AsyncIterable):
        return [item async for item in sequence]
    return await asyncio.to_thread(list, sequence)


class _ProgressBar:
    """A tqdm bar over a job's requests while ``map(..., batch=True, progress=True)`` waits."""

    def __init__(self, shown: bool) -> None:
        self.shown = shown
        self.bar: Any = None

    def __enter__(self) -> _ProgressBar:
        if self.shown:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=0, unit="request", desc="loom batch")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def update(self, status: BatchJobStatus) -> None:
        if self.bar is None:
            return
        done = status.succeeded + status.failed + status.expired + status.cancelled
        self.bar.total = status.submitted + status.pending
        self.bar.n = done
        self.bar.set_postfix(
            batches=len(status.batches), open=status.open_batches, failed=status.failed
        )
