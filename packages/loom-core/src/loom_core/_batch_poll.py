"""Polling a submitted provider batch, and collecting it once it is final.

A poll that fails with a 5xx or a network error is logged and tried again at the next poll;
only a non-retryable error (a revoked key) stops the job, which stays in the store. Collecting
reads every outcome, settles the batch's tasks and writes the follow-up batch (re-asks,
requests that did not run) in one transaction with the results and the batch's end: a crash in
between leaves the batch to be collected again, and a result is never stored twice (the upsert
keeps one row per task, a failure never replacing a success).
"""

from __future__ import annotations

from typing import Any

from loom_protocol import (
    BackendError,
    Error,
    ErrorCode,
    ProviderBatchInfo,
    ProviderBatchItem,
    ProviderBatchState,
    TaskResult,
)
from loom_store import ProviderBatchRecord

from ._batch_collect import read_outcomes
from ._batch_context import JobContext, job_log, save_info
from ._batch_lines import token_of

__all__ = ["cancel_remote", "poll_batch", "read_batch"]


async def poll_batch(
    ctx: JobContext, record: ProviderBatchRecord, results: list[TaskResult[Any]]
) -> bool:
    """Read the submitted batch ``record`` now, collect it when final; whether it changed."""
    info = await read_batch(ctx, record)
    if info is None:
        return False
    if record.cancel_requested and not info.state.is_final:
        info = await cancel_remote(ctx, record) or info
    counts = info.counts.model_dump()
    changed = info.state.value != record.state or counts != record.counts
    if changed:
        await save_info(ctx.store, record.token, info)
    if info.state.is_final and (info.results_ready or info.state != ProviderBatchState.COMPLETED):
        return await _collect(ctx, record, info, results)
    return changed


async def read_batch(ctx: JobContext, record: ProviderBatchRecord) -> ProviderBatchInfo | None:
    """The submitted batch ``record`` as the provider has it now; ``None`` when the read
    failed retryably (a 5xx, the network: logged, read again at the next poll)."""
    assert record.batch_id is not None
    try:
        return await ctx.backend.aget_batch(record.batch_id)
    except BackendError as exc:
        if not exc.retryable:
            raise
        job_log.warning("batch %s: polling failed (%s); polling again later", record.batch_id, exc)
        return None


async def cancel_remote(ctx: JobContext, record: ProviderBatchRecord) -> ProviderBatchInfo | None:
    """Ask the provider to cancel ``record``'s batch (once per process); the batch then, or
    ``None`` when it was asked already or the call failed (retried at the next poll)."""
    if record.token in ctx.cancel_sent or record.batch_id is None:
        return None
    try:
        info = await ctx.backend.acancel_batch(record.batch_id)
    except BackendError as exc:
        if not exc.retryable:
            raise
        job_log.warning("batch %s: cancelling failed (%s); trying again", record.batch_id, exc)
        return None
    ctx.cancel_sent.add(record.token)
    return info


async def _collect(
    ctx: JobContext,
    record: ProviderBatchRecord,
    info: ProviderBatchInfo,
    results: list[TaskResult[Any]],
) -> bool:
    assert record.batch_id is not None
    try:
        outcomes = await ctx.backend.aresults(record.batch_id)
    except BackendError as exc:
        if exc.retryable:
            job_log.warning("batch %s: reading results failed (%s)", record.batch_id, exc)
            return False
        if info.state != ProviderBatchState.FAILED:
            raise
        outcomes = []  # a batch the provider failed as a whole may have no results at all
    items = await ctx.db(ctx.store.provider_items, record.token)
    if record.tentative and (
        not outcomes or any(token_of(o.custom_id) != record.token for o in outcomes)
    ):
        # Attached by size and time alone, and the answers do not prove it ours: the batch is
        # recorded apart (no later search takes it again) and the search for this submission
        # starts over; it finds the real one, or resubmits once that cannot exist.
        job_log.warning(
            "batch %s: %s is not this submission (its custom_ids differ); looking again",
            record.token,
            record.batch_id,
        )
        await ctx.db(ctx.store.detach_provider_batch, record.token, record.batch_id)
        return True
    if info.state == ProviderBatchState.FAILED:
        outcomes = _failed_whole(info, items, outcomes)
    collected = read_outcomes(ctx.runner, items, outcomes, cancelled=record.cancel_requested)
    split, failures = await ctx.build(collected.followups, record.round + 1)
    settled = collected.results + failures
    finish = ctx.store.finish_provider_batch
    if await ctx.db(finish, record.token, ctx.rows(settled), split.batches):
        ctx.remember(split.batches, split)
        results.extend(settled)
        job_log.info(
            "batch %s (%s) collected: %d settled, %d asked again in round %d",
            record.batch_id,
            info.provider_status,
            len(settled),
            len(collected.followups),
            record.round + 1,
        )
    return True


def _failed_whole(
    info: ProviderBatchInfo, items: Any, outcomes: list[ProviderBatchItem]
) -> list[ProviderBatchItem]:
    """A failed batch's outcomes: what it returned, and an error for every other request."""
    seen = {o.custom_id for o in outcomes}
    # The provider's reason when it gave one (a quota reached is retryable: sent again).
    error = info.error or Error(
        code=ErrorCode.PROVIDER_BAD_REQUEST,
        message=f"the provider failed the whole batch ({info.provider_status})",
    )
    missing = [
        ProviderBatchItem(custom_id=item.custom_id, error=error)
        for item in items
        if item.custom_id not in seen
    ]
    return [*outcomes, *missing]
