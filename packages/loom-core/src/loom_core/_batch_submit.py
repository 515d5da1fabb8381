"""Submitting provider batches at most once, and finding a submission a crash interrupted.

The rule (docs/batch.md, "How resume works"):

1. The batch and its custom_id ↔ task_id mapping are committed as ``pending`` before anything
   is sent. Just before the submit call, the batch is claimed: ``submitting``, stamped with the
   time, committed. The submission token travels in the batch's metadata and in every
   ``custom_id``.
2. When the call returns, the provider's batch id is recorded. A refusal (a 400, a 413) fails
   the batch's tasks; any other failure (a time-out, a 5xx, the process killed) leaves it
   ``submitting``: the batch may exist or not.
3. A ``submitting`` batch without an id is looked for among the provider's batches created since
   its stamp (minus the clock skew): by its token in the metadata where the provider keeps
   metadata (OpenAI); else (Anthropic) the earliest batch of the same number of requests created
   in the window that no record of the store holds, attached *tentatively* and confirmed by the
   custom_ids of its answers (which embed the token).
4. Only when nothing is found once the submit time-out and the clock skew have passed since the
   stamp is the batch deemed never created: it is abandoned and its requests written anew.

So a process killed at any moment leaves its requests either not submitted or attached, never
submitted twice, under one assumption: a submit call that has not created its batch by the
time-out (``BatchPolicy.submit_timeout``, which also bounds the call itself) never will.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from loom_protocol import (
    BackendError,
    ProviderBatchCounts,
    ProviderBatchInfo,
    ProviderBatchLine,
    TaskResult,
)
from loom_store import ProviderBatchRecord, ProviderItem

from ._batch_context import JobContext, job_log
from ._batch_lines import TOKEN_KEY, build_request
from ._inputs import PreparedInput

__all__ = ["add_inputs", "batch_total", "resolve_lost", "submit_pending"]


async def add_inputs(ctx: JobContext, prepared: Sequence[PreparedInput]) -> list[TaskResult[Any]]:
    """Write ``prepared`` (inputs with no stored result) as pending batches, leaving out those
    an open batch of the task already holds; the tasks that cannot be sent fail, stored."""
    while True:
        held = await ctx.db(ctx.store.open_task_ids, ctx.task_name, ctx.config_fp)
        todo = [
            ProviderItem("", p.task_id, json.dumps(p.data, ensure_ascii=False))
            for p in prepared
            if p.task_id not in held
        ]
        if not todo:
            return []
        split, failures = await ctx.build(todo, 0)
        if split.batches:
            added = await ctx.db(
                ctx.store.add_provider_batches, ctx.task_name, ctx.config_fp, split.batches
            )
            if not added:  # another process added some of them meanwhile: look again
                continue
            ctx.remember(split.batches, split)
        if failures:
            await ctx.db(ctx.store.put_many, ctx.rows(failures))
        return failures


async def submit_pending(
    ctx: JobContext, record: ProviderBatchRecord, results: list[TaskResult[Any]]
) -> bool:
    """Claim and submit the pending batch ``record``; whether anything changed."""
    lines = ctx.encoded.pop(record.token, None)
    if lines is None:
        items = await ctx.db(ctx.store.provider_items, record.token)
        try:
            lines = [await _line(ctx, item) for item in items]
        except Exception as exc:  # the input no longer builds (an image gone): build apart
            job_log.warning("batch %s: rebuilding its requests failed (%s)", record.token, exc)
            return await _rebuild(ctx, record, items, results)
    if await ctx.db(ctx.store.claim_provider_batch, record.token) is None:
        return False  # another process claimed it, or it was cancelled
    try:
        info = await _submit(ctx, record.token, lines)
    except BackendError as exc:
        if exc.retryable:
            job_log.warning(
                "batch %s: the submit failed (%s); it is looked for before any resubmission",
                record.token,
                exc,
            )
            return True
        job_log.error("batch %s: the provider refused it: %s", record.token, exc)
        items = await ctx.db(ctx.store.provider_items, record.token)
        failed = [ctx.failed(item, exc.error) for item in items]
        finish = ctx.store.finish_provider_batch
        if await ctx.db(finish, record.token, ctx.rows(failed), (), state="refused"):
            results.extend(failed)
        return True
    except TimeoutError:
        job_log.warning(
            "batch %s: the submit took longer than %g s; it is looked for before any resubmission",
            record.token,
            ctx.policy.submit_timeout,
        )
        return True
    await _attach(ctx, record.token, info, tentative=False)
    return True


async def _line(ctx: JobContext, item: ProviderItem) -> bytes:
    request = await build_request(ctx.runner, item)
    return ctx.backend.encode_line(ProviderBatchLine(custom_id=item.custom_id, request=request))


async def _submit(ctx: JobContext, token: str, lines: list[bytes]) -> ProviderBatchInfo:
    async with asyncio.timeout(ctx.policy.submit_timeout):
        return await ctx.backend.asubmit_batch(lines, metadata={TOKEN_KEY: token})


async def _attach(ctx: JobContext, token: str, info: ProviderBatchInfo, *, tentative: bool) -> None:
    attached = await ctx.db(
        ctx.store.attach_provider_batch,
        token,
        batch_id=info.batch_id,
        state=info.state.value,
        provider_status=info.provider_status,
        counts=info.counts.model_dump(),
        input_file_id=info.input_file_id,
        tentative=tentative,
    )
    if attached or tentative:
        return
    record = await ctx.db(ctx.store.provider_batch, token)
    if record is not None and record.batch_id == info.batch_id:
        return  # another process found this submission meanwhile and attached it: fine
    # Another process found this submission lost and abandoned it: only possible when the
    # provider created the batch after the submit time-out, the one assumption broken.
    job_log.error(
        "batch %s: created as %s after it was given up for lost; cancelling it so that its "
        "requests are not paid twice",
        token,
        info.batch_id,
    )
    try:
        await ctx.backend.acancel_batch(info.batch_id)
    except BackendError as exc:
        job_log.error("batch %s: cancelling %s failed: %s", token, info.batch_id, exc)


def batch_total(counts: ProviderBatchCounts) -> int:
    """The number of requests of a provider batch, from its counts."""
    return counts.total or (
        counts.processing + counts.succeeded + counts.failed + counts.expired + counts.cancelled
    )


async def resolve_lost(ctx: JobContext, record: ProviderBatchRecord) -> bool:
    """Attach the ``submitting`` batch ``record`` to what the provider created, or, once it
    cannot exist any more, write its requests anew; whether anything changed."""
    if record.submitted_at is None:  # pragma: no cover - a claim always stamps it
        return False
    policy = ctx.policy
    skew = timedelta(seconds=policy.clock_skew)
    since = record.submitted_at - skew
    until = record.submitted_at + timedelta(seconds=policy.submit_timeout) + skew
    try:
        listed = await ctx.backend.alist_batches(created_after=since)
    except BackendError as exc:
        if not exc.retryable:
            raise
        job_log.warning("batch %s: listing the provider's batches failed: %s", record.token, exc)
        return False
    mine = [b for b in listed if b.metadata.get(TOKEN_KEY) == record.token]
    if mine:
        await _attach(ctx, record.token, mine[0], tentative=False)
        return True
    known = await ctx.db(ctx.store.known_batch_ids, [b.batch_id for b in listed])
    candidates = sorted(
        (
            b
            for b in listed
            if TOKEN_KEY not in b.metadata
            and b.batch_id not in known
            and batch_total(b.counts) == record.requests
            and b.created_at is not None
            and since <= b.created_at <= until
        ),
        key=lambda b: b.created_at or since,
    )
    if candidates:
        job_log.info(
            "batch %s: attached tentatively to %s (same size, created in its window); its "
            "answers confirm it",
            record.token,
            candidates[0].batch_id,
        )
        await _attach(ctx, record.token, candidates[0], tentative=True)
        return True
    if datetime.now(UTC) <= until:
        return False  # the submit may still be under way somewhere: wait
    job_log.warning(
        "batch %s: no provider batch of it exists %g s after its submit started; "
        "submitting its %d requests again",
        record.token,
        policy.submit_timeout + policy.clock_skew,
        record.requests,
    )
    items = await ctx.db(ctx.store.provider_items, record.token)
    return await _rebuild(ctx, record, items, [], unattached=True)


async def _rebuild(
    ctx: JobContext,
    record: ProviderBatchRecord,
    items: Sequence[ProviderItem],
    results: list[TaskResult[Any]],
    *,
    unattached: bool = False,
) -> bool:
    """Abandon ``record`` and write its ``items`` anew (under new tokens, same round)."""
    split, failures = await ctx.build(items, record.round)
    done = await ctx.db(
        ctx.store.finish_provider_batch,
        record.token,
        ctx.rows(failures),
        split.batches,
        state="abandoned",
        unattached=unattached,
    )
    if done:
        ctx.remember(split.batches, split)
        results.extend(failures)
    return done
