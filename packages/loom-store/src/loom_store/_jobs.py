"""The provider batch job tracker: ``ResultStore``'s half that keeps provider batches.

Every change the engine makes to a job is one short transaction here, and none is ever held
across an HTTP call: the engine commits a batch as ``pending`` with its custom_id ↔ task_id
mapping, claims it (``submitting``, with the time) just before the submit call, and records
the provider's batch id after the call returns. Writes that decide who does something (claim,
attach, abandon, finish) are conditional updates whose row count says whether this process won,
so two processes working on one task never both submit or both collect one batch. Adding new
batches takes the dialect's per-task lock (``Dialect.lock_task``) and refuses task ids that an
open batch of the task already holds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.engine import Connection

from loom_protocol import LoomUsageError, check_non_empty_string

from ._base import StoreBase
from ._job_rows import (
    CLOSED_STATES,
    JOB_STATES,
    ProviderBatchRecord,
    ProviderItem,
    batches_table,
    items_table,
)
from ._rows import ResultRow

__all__ = ["JobTracker", "NewProviderBatch"]

_B = batches_table.c
_I = items_table.c
_OPEN = _B.state.not_in(sorted(CLOSED_STATES))
#: Items per INSERT statement (far below every driver's bound-parameter limit).
_ITEM_CHUNK = 500


@dataclass(frozen=True, slots=True)
class NewProviderBatch:
    """A provider batch to write as ``pending``: its token, its round and its requests."""

    token: str
    round: int
    model: str
    items: Sequence[ProviderItem]


def _record(row: Any) -> ProviderBatchRecord:
    return ProviderBatchRecord(
        token=row.token,
        task_name=row.task_name,
        config_fp=row.config_fp,
        model=row.model,
        round=row.round,
        state=row.state,
        batch_id=row.batch_id,
        input_file_id=row.input_file_id,
        provider_status=row.provider_status,
        counts=json.loads(row.counts) if row.counts else {},
        requests=row.requests,
        tentative=bool(row.tentative),
        cancel_requested=bool(row.cancel_requested),
        submitted_at=row.submitted_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _check_state(state: str) -> None:
    if state not in JOB_STATES:
        raise LoomUsageError(f"unknown provider batch state {state!r}")


class JobTracker(StoreBase):
    """The provider batch jobs of a store (see the module docstring)."""

    # -- writing -----------------------------------------------------------------------------

    def add_provider_batches(
        self, task_name: str, config_fp: str, batches: Sequence[NewProviderBatch]
    ) -> bool:
        """Write ``batches`` as ``pending``, with their items, in one transaction.

        Returns:
            False, writing nothing, when an open batch of ``task_name`` and ``config_fp``
            already holds one of their task ids (another process submitted them meanwhile).
        """
        check_non_empty_string("task_name", task_name)
        check_non_empty_string("config_fp", config_fp)
        wanted = {item.task_id for b in batches for item in b.items}
        now = datetime.now(UTC)
        with self._op("add_provider_batches"), self._t.write_engine.begin() as conn:
            self._d.lock_jobs(conn, task_name)
            if wanted & _open_ids(conn, task_name, config_fp):
                return False
            _insert_batches(conn, task_name, config_fp, batches, now)
        self._note_write()
        return True

    def claim_provider_batch(self, token: str) -> datetime | None:
        """Move a ``pending`` batch to ``submitting``, stamped now: call just before submitting.

        Returns:
            The stamp when this call claimed it; ``None`` when it was not pending (another
            process claimed it, or it was cancelled).
        """
        now = datetime.now(UTC)
        stmt = (
            batches_table.update()
            .where(_B.token == token, _B.state == "pending", _B.cancel_requested.is_(False))
            .values(state="submitting", submitted_at=now, updated_at=now)
        )
        with self._op("claim_provider_batch"), self._t.write_engine.begin() as conn:
            claimed = conn.execute(stmt).rowcount == 1
        return now if claimed else None

    def attach_provider_batch(
        self,
        token: str,
        *,
        batch_id: str,
        state: str,
        provider_status: str,
        counts: dict[str, Any],
        input_file_id: str | None = None,
        tentative: bool = False,
    ) -> bool:
        """Record the provider's ``batch_id`` of a ``submitting`` batch.

        Returns:
            False when the batch was no longer ``submitting`` (another process attached or
            abandoned it).
        """
        _check_state(state)
        now = datetime.now(UTC)
        stmt = (
            batches_table.update()
            .where(_B.token == token, _B.state == "submitting", _B.batch_id.is_(None))
            .values(
                batch_id=batch_id,
                state=state,
                provider_status=provider_status,
                counts=json.dumps(counts, sort_keys=True),
                input_file_id=input_file_id,
                tentative=tentative,
                updated_at=now,
            )
        )
        with self._op("attach_provider_batch"), self._t.write_engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1

    def update_provider_batch(
        self, token: str, *, state: str, provider_status: str, counts: dict[str, Any]
    ) -> None:
        """Record what the provider says of an open batch now (its state and counts)."""
        _check_state(state)
        stmt = (
            batches_table.update()
            .where(_B.token == token, _OPEN)
            .values(
                state=state,
                provider_status=provider_status,
                counts=json.dumps(counts, sort_keys=True),
                updated_at=datetime.now(UTC),
            )
        )
        with self._op("update_provider_batch"), self._t.write_engine.begin() as conn:
            conn.execute(stmt)

    def detach_provider_batch(self, token: str, foreign_id: str) -> bool:
        """Undo a tentative attach: the batch ``foreign_id`` proved not to be ``token``'s.

        In one transaction ``token`` goes back to ``submitting`` without an id (so that the
        search for its submission runs again) and ``foreign_id`` is recorded apart, as an
        ``abandoned`` batch of no requests, so that no later search takes it again.

        Returns:
            False, writing nothing, when ``token`` was not tentatively attached to it.
        """
        now = datetime.now(UTC)
        stmt = (
            batches_table.update()
            .where(
                _B.token == token,
                _B.batch_id == foreign_id,
                _B.tentative.is_(True),
                _OPEN,
            )
            .values(
                batch_id=None,
                state="submitting",
                provider_status=None,
                counts=None,
                tentative=False,
                updated_at=now,
            )
        )
        with self._op("detach_provider_batch"), self._t.write_engine.begin() as conn:
            row = conn.execute(select(batches_table).where(_B.token == token)).first()
            if row is None or conn.execute(stmt).rowcount != 1:
                return False
            conn.execute(
                batches_table.insert(),
                {
                    "token": f"foreign-{token}",
                    "task_name": row.task_name,
                    "config_fp": row.config_fp,
                    "model": row.model,
                    "round": row.round,
                    "state": "abandoned",
                    "batch_id": foreign_id,
                    "provider_status": "not ours",
                    "requests": 0,
                    "tentative": False,
                    "cancel_requested": False,
                    "submitted_at": row.submitted_at,
                    "created_at": now,
                    "updated_at": now,
                },
            )
        return True

    def finish_provider_batch(
        self,
        token: str,
        rows: Sequence[ResultRow],
        followups: Sequence[NewProviderBatch] = (),
        *,
        state: str = "collected",
        unattached: bool = False,
    ) -> bool:
        """Settle an open batch in one transaction: store ``rows`` (the results of its
        finished requests), write ``followups`` (the requests asked again) as ``pending``,
        and move it to ``state`` (``collected``, ``refused`` or ``abandoned``).

        Args:
            token: The batch.
            rows: Results to store (a failure never replaces a success).
            followups: New batches to write as ``pending``.
            state: The batch's final state.
            unattached: Settle it only if it is still ``submitting`` without a batch id (a
                submission found lost), so that it cannot race a process attaching it.

        Returns:
            False, writing nothing, when the batch was already settled (another process
            collected it) or, with ``unattached``, was attached or settled meanwhile.
        """
        if state not in CLOSED_STATES:
            raise LoomUsageError(f"a batch is finished as one of {sorted(CLOSED_STATES)}")
        now = datetime.now(UTC)
        latest = {(r.task_name, r.config_fp, r.task_id): r for r in rows}
        where = [_B.token == token, _OPEN]
        if unattached:
            where += [_B.state == "submitting", _B.batch_id.is_(None)]
        stmt = batches_table.update().where(*where).values(state=state, updated_at=now)
        with self._op("finish_provider_batch"), self._t.write_engine.begin() as conn:
            row = conn.execute(select(_B.task_name, _B.config_fp).where(_B.token == token)).first()
            if row is None or conn.execute(stmt).rowcount != 1:
                return False
            if latest:
                self._d.upsert(conn, list(latest.values()), now)
            _insert_batches(conn, row.task_name, row.config_fp, followups, now)
        self._note_write()
        return True

    def request_cancel(self, task_name: str, config_fp: str | None = None) -> int:
        """Mark every open batch of ``task_name`` (of ``config_fp``, or of all) to be
        cancelled: nothing of it is submitted or resubmitted any more. The number marked."""
        check_non_empty_string("task_name", task_name)
        where = [_B.task_name == task_name, _OPEN]
        if config_fp is not None:
            where.append(_B.config_fp == config_fp)
        stmt = (
            batches_table.update()
            .where(*where)
            .values(cancel_requested=True, updated_at=datetime.now(UTC))
        )
        with self._op("request_cancel"), self._t.write_engine.begin() as conn:
            return int(conn.execute(stmt).rowcount)

    # -- reading -----------------------------------------------------------------------------

    def provider_batches(
        self, task_name: str, config_fp: str | None = None, *, open_only: bool = False
    ) -> list[ProviderBatchRecord]:
        """The provider batches of ``task_name`` (of one configuration, or all), oldest first."""
        check_non_empty_string("task_name", task_name)
        where = [_B.task_name == task_name]
        if config_fp is not None:
            where.append(_B.config_fp == config_fp)
        if open_only:
            where.append(_OPEN)
        stmt = select(batches_table).where(*where).order_by(_B.created_at, _B.round, _B.token)
        with self._op("provider_batches"), self._t.engine.connect() as conn:
            return [_record(row) for row in conn.execute(stmt)]

    def provider_batch(self, token: str) -> ProviderBatchRecord | None:
        """The provider batch of ``token``, ``None`` when there is none."""
        with self._op("provider_batch"), self._t.engine.connect() as conn:
            row = conn.execute(select(batches_table).where(_B.token == token)).first()
        return None if row is None else _record(row)

    def provider_items(self, token: str) -> list[ProviderItem]:
        """The requests of the provider batch ``token``, in custom_id order."""
        stmt = (
            select(_I.custom_id, _I.task_id, _I.input, _I.history)
            .add_columns(_I.calls, _I.reasks, _I.failures, _I.usage)
            .where(_I.token == token)
            .order_by(_I.custom_id)
        )
        with self._op("provider_items"), self._t.engine.connect() as conn:
            return [ProviderItem(*row) for row in conn.execute(stmt)]

    def open_task_ids(self, task_name: str, config_fp: str) -> set[str]:
        """The task ids held by open (not yet settled) provider batches of the task."""
        check_non_empty_string("task_name", task_name)
        with self._op("open_task_ids"), self._t.engine.connect() as conn:
            return _open_ids(conn, task_name, config_fp)

    def known_batch_ids(self, batch_ids: Iterable[str]) -> set[str]:
        """Which of ``batch_ids`` some record of this store has attached already."""
        ids = sorted(set(batch_ids))
        found: set[str] = set()
        with self._op("known_batch_ids"), self._t.engine.connect() as conn:
            for start in range(0, len(ids), _ITEM_CHUNK):
                chunk = ids[start : start + _ITEM_CHUNK]
                found.update(
                    conn.execute(select(_B.batch_id).where(_B.batch_id.in_(chunk))).scalars()
                )
        return found

    def provider_task_names(self) -> list[str]:
        """Every task name that has provider batches, sorted."""
        stmt = select(_B.task_name).distinct().order_by(_B.task_name)
        with self._op("provider_task_names"), self._t.engine.connect() as conn:
            return list(conn.execute(stmt).scalars())

    def _note_write(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.note_write()


def _open_ids(conn: Connection, task_name: str, config_fp: str) -> set[str]:
    stmt = (
        select(_I.task_id)
        .select_from(items_table.join(batches_table, _I.token == _B.token))
        .where(and_(_B.task_name == task_name, _B.config_fp == config_fp, _OPEN))
    )
    return set(conn.execute(stmt).scalars())


def _insert_batches(
    conn: Connection,
    task_name: str,
    config_fp: str,
    batches: Sequence[NewProviderBatch],
    now: datetime,
) -> None:
    # One microsecond apart: batches are listed (and so submitted) in the order written.
    for n, batch in enumerate(batches):
        _insert_batch(conn, task_name, config_fp, batch, now + timedelta(microseconds=n))


def _insert_batch(
    conn: Connection, task_name: str, config_fp: str, batch: NewProviderBatch, now: datetime
) -> None:
    if not batch.items:
        raise LoomUsageError("a provider batch needs at least one request")
    conn.execute(
        batches_table.insert(),
        {
            "token": batch.token,
            "task_name": task_name,
            "config_fp": config_fp,
            "model": batch.model,
            "round": batch.round,
            "state": "pending",
            "requests": len(batch.items),
            "tentative": False,
            "cancel_requested": False,
            "created_at": now,
            "updated_at": now,
        },
    )
    values = [
        {
            "token": batch.token,
            "custom_id": item.custom_id,
            "task_id": item.task_id,
            "input": item.input,
            "history": item.history,
            "calls": item.calls,
            "reasks": item.reasks,
            "failures": item.failures,
            "usage": item.usage,
        }
        for item in batch.items
    ]
    for start in range(0, len(values), _ITEM_CHUNK):
        conn.execute(items_table.insert(), values[start : start + _ITEM_CHUNK])
