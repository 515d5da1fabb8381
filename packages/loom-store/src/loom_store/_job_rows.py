"""The tables and records of provider batch jobs (OpenAI Batch, Anthropic Message Batches).

::

    loom_provider_batches  token (PK), task_name, config_fp, model, round, state,
                           batch_id (unique), input_file_id, provider_status, counts,
                           requests, tentative, cancel_requested, submitted_at,
                           created_at, updated_at
    loom_provider_items    token, custom_id (PK), task_id, input, history, calls,
                           reasks, failures, usage

One row of ``loom_provider_batches`` is one provider batch Loom means to submit, has submitted
or has collected; ``token`` is the unique submission token written (and committed) before the
submit call and sent as the batch's metadata. ``loom_provider_items`` maps each ``custom_id`` of
a provider batch to its task id and keeps what a later round needs to ask again (the input,
the answers and feedback of earlier re-asks, the calls and usage so far).

These tables were added without a new schema version: they are new tables only, which an older
loom-store ignores, and :func:`~loom_store._migrate.prepare_schema` creates them when it opens
a store that lacks them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from ._schema import UTCDateTime, metadata

__all__ = [
    "CLOSED_STATES",
    "JOB_STATES",
    "ProviderBatchRecord",
    "ProviderItem",
    "batches_table",
    "items_table",
]

#: Every value of ``loom_provider_batches.state``: Loom's own states around the provider's
#: (``ProviderBatchState``'s values).
JOB_STATES: tuple[str, ...] = (
    "pending",  # written, never sent: safe to submit
    "submitting",  # the submit call may be under way or may have created the batch
    "in_progress",
    "cancelling",
    "completed",
    "expired",
    "cancelled",
    "failed",
    "collected",  # results stored; unfinished requests moved to a follow-up batch
    "abandoned",  # a submit that created nothing; its requests moved to a new batch
    "refused",  # the provider refused the submit (a 400, a 413): its tasks failed
)
#: States whose requests are settled: nothing will be sent or read for them any more.
CLOSED_STATES: frozenset[str] = frozenset({"collected", "abandoned", "refused"})

batches_table = Table(
    "loom_provider_batches",
    metadata,
    Column("token", String(64), nullable=False),
    Column("task_name", String, nullable=False),
    Column("config_fp", String, nullable=False),
    Column("model", Text, nullable=False),
    Column("round", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("batch_id", String(255)),
    Column("input_file_id", String(255)),
    Column("provider_status", String(64)),
    Column("counts", Text),
    Column("requests", Integer, nullable=False),
    Column("tentative", Boolean, nullable=False, default=False),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("submitted_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("token", name="pk_loom_provider_batches"),
    UniqueConstraint("batch_id", name="uq_loom_provider_batches_batch_id"),
    Index("ix_loom_provider_batches_task", "task_name", "config_fp", "state"),
)

items_table = Table(
    "loom_provider_items",
    metadata,
    Column("token", String(64), nullable=False),
    Column("custom_id", String(64), nullable=False),
    Column("task_id", String, nullable=False),
    Column("input", Text, nullable=False),
    Column("history", Text, nullable=False),
    Column("calls", Integer, nullable=False),
    Column("reasks", Integer, nullable=False),
    Column("failures", Integer, nullable=False),
    Column("usage", Text),
    PrimaryKeyConstraint("token", "custom_id", name="pk_loom_provider_items"),
)


@dataclass(frozen=True, slots=True)
class ProviderItem:
    """One request of a provider batch: its ``custom_id``, its task, what it carries over.

    Attributes:
        custom_id: The request's id in the provider batch (it embeds the batch's token).
        task_id: The task the answer belongs to.
        input: JSON text of the task's canonical input.
        history: JSON text of the earlier answers that failed to parse or validate, each
            ``[answer, error]`` (the error as a ``loom_protocol.Error``), oldest first: a
            re-ask sends them back with their feedback, as online.
        calls: Requests the task made in earlier rounds.
        reasks: Re-asks made so far.
        failures: Retryable provider failures so far (an expired or cancelled request, a
            5xx), each resubmitted in a later round.
        usage: JSON text of the usage of the earlier rounds, ``None`` before any.
    """

    custom_id: str
    task_id: str
    input: str
    history: str = "[]"
    calls: int = 0
    reasks: int = 0
    failures: int = 0
    usage: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderBatchRecord:
    """One provider batch as the store keeps it (a row of ``loom_provider_batches``).

    Attributes:
        token: The unique submission token (the batch's metadata, the prefix of its
            custom_ids).
        task_name: The task the batch belongs to.
        config_fp: The configuration its requests were built with.
        model: The model of every request in it (one model per provider batch).
        round: 0 for the first submission, then one more per follow-up.
        state: One of :data:`JOB_STATES`.
        batch_id: The provider's id, once known.
        input_file_id: The uploaded input file (OpenAI), once known.
        provider_status: The provider's own status word when last read.
        counts: The provider's counts when last read (``ProviderBatchCounts`` fields).
        requests: Requests in the batch.
        tentative: Attached by time and size alone (a provider that keeps no metadata):
            confirmed only when its answers carry this batch's custom_ids.
        cancel_requested: The user asked to cancel: its unfinished requests are not sent again.
        submitted_at: When the submit call started (``None`` while pending).
        created_at: When the record was written.
        updated_at: When it last changed.
    """

    token: str
    task_name: str
    config_fp: str
    model: str
    round: int
    state: str
    batch_id: str | None
    input_file_id: str | None
    provider_status: str | None
    counts: dict[str, Any]
    requests: int
    tentative: bool
    cancel_requested: bool
    submitted_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @property
    def closed(self) -> bool:
        """Whether its requests are settled (collected, abandoned or refused)."""
        return self.state in CLOSED_STATES
