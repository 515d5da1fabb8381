"""A task's provider batch job: submit what has no result, wait, collect, in input order.

:class:`ProviderJob` is the one core of ``map(..., batch=True)``, ``submit_batch``,
``collect_batch``, ``batch_status`` and ``cancel_batch`` (and their async twins). Everything it
knows lives in the store (``loom_provider_batches``, ``loom_provider_items``) and at the
provider, so any process may pick a job up: :meth:`ProviderJob.advance` makes one pass over
the task's open batches (submit the pending ones, find the submissions a crash interrupted,
poll the others, collect the final ones) and can be repeated at any time, by anyone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from loom_protocol import Error, ErrorCode, TaskResult
from loom_store import ProviderBatchRecord

from ._batch_cancel import cancel_job
from ._batch_context import JobContext, save_info
from ._batch_policy import PollBackoff
from ._batch_poll import poll_batch, read_batch
from ._batch_status import BatchJobStatus, job_status
from ._batch_submit import add_inputs, resolve_lost, submit_pending
from ._inputs import PreparedInput, prepare_input

__all__ = ["ProviderJob"]

#: Inputs per cache lookup (one store query each).
_LOOKUP_CHUNK = 1024

Progress = Callable[[BatchJobStatus], None]


class ProviderJob:
    """One task name's provider batch job, driven by one loom (see the module docstring)."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        #: Whether a batch of the job was found cancelled by the user (``cancel_batch``).
        self.cancelled = False

    # -- one pass ----------------------------------------------------------------------------

    async def advance(self, *, poll: bool = True) -> tuple[list[TaskResult[Any]], bool]:
        """One pass over the open batches; the results settled and whether anything changed.

        Args:
            poll: Also poll (and collect) the submitted batches; ``False`` only submits the
                pending ones and looks for lost submissions (``submit_batch``).
        """
        ctx = self.ctx
        results: list[TaskResult[Any]] = []
        changed = False
        records = await ctx.db(
            ctx.store.provider_batches, ctx.task_name, ctx.config_fp, open_only=True
        )
        for record in records:
            self.cancelled |= record.cancel_requested
            if record.state == "pending":
                if record.cancel_requested:
                    changed |= await self._drop_pending(record.token, results)
                else:
                    changed |= await submit_pending(ctx, record, results)
            elif record.batch_id is None:
                changed |= await resolve_lost(ctx, record)
            elif poll:
                changed |= await poll_batch(ctx, record, results)
        return results, changed

    async def _drop_pending(self, token: str, results: list[TaskResult[Any]]) -> bool:
        """Settle a pending batch the user cancelled: its tasks fail as ``cancelled``."""
        ctx = self.ctx
        items = await ctx.db(ctx.store.provider_items, token)
        error = Error(
            code=ErrorCode.CANCELLED, message="cancelled (cancel_batch) before it was sent"
        )
        failed = [ctx.failed(item, error) for item in items]
        if await ctx.db(ctx.store.finish_provider_batch, token, ctx.rows(failed)):
            results.extend(failed)
        return True

    # -- the public flows --------------------------------------------------------------------

    async def run(
        self, raws: Sequence[Any], *, wait: bool, progress: Progress | None = None
    ) -> list[TaskResult[Any]]:
        """Every input's result in input order (``wait``), or submit and return the results
        known at once (cached, invalid, failed before sending) in input order, without the
        inputs still under way (``wait=False``)."""
        ctx = self.ctx
        prepared = [prepare_input(raw) for raw in raws]
        first: dict[str, PreparedInput] = {}
        for p in prepared:
            if p.failure is None:
                first.setdefault(p.task_id, p)
        settled: dict[str, TaskResult[Any]] = {}
        await self._lookup(list(first), first, settled)
        misses = [p for task_id, p in first.items() if task_id not in settled]
        settled.update((r.task_id, r) for r in await add_inputs(ctx, misses))
        if not wait:
            submitted, _ = await self.advance(poll=False)
            settled.update((r.task_id, r) for r in submitted if r.task_id in first)
        else:
            await self._wait(first, settled, progress)
        out: list[TaskResult[Any]] = []
        for p in prepared:
            if p.failure is not None:
                out.append(p.failure)
            elif p.task_id in settled:
                out.append(settled[p.task_id])
        return out

    async def _wait(
        self,
        first: dict[str, PreparedInput],
        settled: dict[str, TaskResult[Any]],
        progress: Progress | None,
    ) -> None:
        ctx = self.ctx
        backoff = PollBackoff(ctx.policy)
        while True:
            new, changed = await self.advance()
            for result in new:
                if result.task_id in first:
                    settled.setdefault(result.task_id, result)
            outstanding = [t for t in first if t not in settled]
            if progress is not None:
                progress(await self.status(refresh=False))
            if not outstanding:
                return
            held = await ctx.db(ctx.store.open_task_ids, ctx.task_name, ctx.config_fp)
            loose = [t for t in outstanding if t not in held]
            if loose:
                # Settled by another process (a success is in the store now), or failed
                # there, or never written: read the store, then send what is still missing.
                await self._lookup(loose, first, settled)
                loose = [t for t in loose if t not in settled]
                if loose and self.cancelled:
                    error = Error(code=ErrorCode.CANCELLED, message="the job was cancelled")
                    for t in loose:
                        settled[t] = TaskResult(
                            task_id=t, is_success=False, error=error, input_data=first[t].data
                        )
                elif loose:
                    failures = await add_inputs(ctx, [first[t] for t in loose])
                    settled.update((r.task_id, r) for r in failures)
                    changed = True
                continue
            await asyncio.sleep(backoff.next(changed))

    async def _lookup(
        self,
        task_ids: Sequence[str],
        first: dict[str, PreparedInput],
        settled: dict[str, TaskResult[Any]],
    ) -> None:
        """Fill ``settled`` with the stored successes among ``task_ids``."""
        for start in range(0, len(task_ids), _LOOKUP_CHUNK):
            chunk = task_ids[start : start + _LOOKUP_CHUNK]
            found = await self.ctx.cache.lookup(chunk, [first[t].data for t in chunk])
            for task_id, hit in zip(chunk, found, strict=True):
                if hit is not None:
                    settled[task_id] = hit

    async def collect(self, *, wait: bool) -> list[TaskResult[Any]]:
        """Settle what has finished (``wait``: until every batch is settled); the results."""
        ctx = self.ctx
        results: list[TaskResult[Any]] = []
        backoff = PollBackoff(ctx.policy)
        while True:
            new, changed = await self.advance()
            results.extend(new)
            if not wait:
                return results
            if not await ctx.db(
                ctx.store.provider_batches, ctx.task_name, ctx.config_fp, open_only=True
            ):
                return results
            await asyncio.sleep(backoff.next(changed))

    async def status(self, *, refresh: bool) -> BatchJobStatus:
        """The job's batches (every configuration of the task); ``refresh`` reads the open
        submitted ones from the provider first."""
        ctx = self.ctx
        if refresh:
            open_ = await ctx.db(ctx.store.provider_batches, ctx.task_name, open_only=True)
            for record in open_:
                if record.batch_id is not None:
                    await _refresh(ctx, record)
        records = await ctx.db(ctx.store.provider_batches, ctx.task_name)
        return job_status(ctx.task_name, records)

    async def cancel(self) -> BatchJobStatus:
        """Cancel every open batch of the task (every configuration): nothing more is sent;
        the provider is asked to stop what runs. What finished stays collectable."""
        ctx = self.ctx
        await cancel_job(ctx.store, ctx.backend, ctx.task_name)
        self.cancelled = True
        return await self.status(refresh=False)


async def _refresh(ctx: JobContext, record: ProviderBatchRecord) -> None:
    info = await read_batch(ctx, record)
    if info is not None:
        await save_info(ctx.store, record.token, info)
