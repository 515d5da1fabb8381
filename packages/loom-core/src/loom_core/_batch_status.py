"""What ``batch_status`` reports: a task's provider batches and their counts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from loom_protocol import ProviderBatchCounts
from loom_store import ProviderBatchRecord

__all__ = ["BatchJobStatus", "ProviderBatchStatus", "job_status"]


class ProviderBatchStatus(BaseModel):
    """One provider batch of a job.

    Attributes:
        token: Loom's submission token (the batch's metadata, the prefix of its custom_ids).
        batch_id: The provider's id, once known.
        state: ``pending`` (written, not sent), ``submitting`` (sent, id not yet known),
            the provider's state (``in_progress``, ``cancelling``, ``completed``,
            ``expired``, ``cancelled``, ``failed``), then ``collected`` once its answers are
            stored; ``abandoned`` (a submission that created nothing, sent again) and
            ``refused`` (the provider refused it) are settled too.
        provider_status: The provider's own status word when last read.
        round: 0 for a first submission, then one more per follow-up (re-asks, requests
            that expired, were cancelled or failed retryably).
        model: The model of its requests.
        requests: How many requests it holds.
        counts: The provider's counts when last read.
        config_fp: The configuration its requests were built with.
        cancel_requested: ``cancel_batch`` was called: nothing of it is sent again.
        tentative: Attached by size and time alone; its answers confirm it.
        submitted_at: When its submit call started.
        created_at: When Loom wrote it.
        updated_at: When it last changed.
    """

    model_config = ConfigDict(frozen=True)

    token: str
    batch_id: str | None
    state: str
    provider_status: str | None
    round: int
    model: str
    requests: int
    counts: ProviderBatchCounts
    config_fp: str
    cancel_requested: bool
    tentative: bool
    submitted_at: datetime | None
    created_at: datetime
    updated_at: datetime


class BatchJobStatus(BaseModel):
    """A task's provider batch job (``TaskLoom.batch_status``).

    The counts add up the provider's counts of every batch that was submitted (``abandoned``
    ones aside): a request asked again in a follow-up counts in each round it ran.

    Attributes:
        task_name: The task.
        batches: Its provider batches, oldest first.
        pending: Requests written but not yet known to the provider (``pending`` and
            ``submitting`` batches).
        submitted: Requests in batches the provider has.
        in_progress: Requests the provider is still processing.
        succeeded: Requests that were answered.
        failed: Requests that errored.
        expired: Requests that expired before they ran.
        cancelled: Requests cancelled before they ran.
        open_batches: Batches not yet settled.
    """

    model_config = ConfigDict(frozen=True)

    task_name: str
    batches: list[ProviderBatchStatus] = Field(default_factory=list)
    pending: int = 0
    submitted: int = 0
    in_progress: int = 0
    succeeded: int = 0
    failed: int = 0
    expired: int = 0
    cancelled: int = 0
    open_batches: int = 0

    @property
    def done(self) -> bool:
        """Whether every batch is settled (nothing left to wait for or collect)."""
        return self.open_batches == 0


def job_status(task_name: str, records: Sequence[ProviderBatchRecord]) -> BatchJobStatus:
    """The status of ``task_name`` from its stored batches."""
    batches = [
        ProviderBatchStatus(
            token=r.token,
            batch_id=r.batch_id,
            state=r.state,
            provider_status=r.provider_status,
            round=r.round,
            model=r.model,
            requests=r.requests,
            counts=ProviderBatchCounts.model_validate(r.counts),
            config_fp=r.config_fp,
            cancel_requested=r.cancel_requested,
            tentative=r.tentative,
            submitted_at=r.submitted_at,
            created_at=r.created_at,
            updated_at=r.updated_at,
        )
        for r in records
    ]
    totals = dict.fromkeys(("pending", "submitted", "in_progress"), 0)
    totals |= dict.fromkeys(("succeeded", "failed", "expired", "cancelled"), 0)
    open_batches = 0
    for record, batch in zip(records, batches, strict=True):
        open_batches += not record.closed
        if record.state == "abandoned":
            continue
        if batch.batch_id is None:
            if not record.closed:
                totals["pending"] += batch.requests
            continue
        totals["submitted"] += batch.requests
        totals["in_progress"] += batch.counts.processing if not record.closed else 0
        for name in ("succeeded", "failed", "expired", "cancelled"):
            totals[name] += getattr(batch.counts, name)
    return BatchJobStatus(task_name=task_name, batches=batches, open_batches=open_batches, **totals)
