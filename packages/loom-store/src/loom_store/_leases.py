"""Leases of several workers on one task: the claims on inputs and the registry of workers.

Two tables (``_schema.py``): ``loom_claims`` says which worker holds which input of a task's
configuration and until when; ``loom_workers`` says which workers run a task, whether each
claims its inputs (``shared``), and until when each counts as live. Every time is seconds since
the epoch by the database's clock (the dialect's ``now_sql``): workers on several machines
compare against one clock, whatever their own clocks say.

A claim is taken for a whole batch of ids in one statement (the dialect's ``claim``) and
committed at once, before any call is made: no database lock is ever held across a provider
call. A claim is void once its input has a succeeded row (a claim never stops anyone from
reading a result) or once it expires; the owner's heartbeat renews its live claims and deletes
the void ones, and leaving deletes them all. How the engine uses this: ``docs/scale.md``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection

from loom_protocol import LoomUsageError, check_non_empty_string, check_positive_number

from ._base import StoreBase

__all__ = ["MAX_LEASE_S", "MIN_LEASE_S", "WorkerLeases", "WorkerView"]

#: The shortest lease accepted: shorter ones would expire between two heartbeats of a busy
#: machine (a heartbeat is a database round trip every half lease).
MIN_LEASE_S = 0.5
#: The longest lease accepted (a day): a dead worker's inputs wait this long for a taker.
MAX_LEASE_S = 86_400.0

#: Ids per claim statement at most (the engine claims far fewer at a time).
_CLAIM_CHUNK = 5000


@dataclass(frozen=True, slots=True)
class WorkerView:
    """What a worker learns of its task's workers when it joins or beats.

    Attributes:
        now: The database's clock, in seconds since the epoch.
        peers: The other live workers of the same task name and configuration.
        solo_peers: Those of them that do not claim their inputs yet (they run alone as far
            as they know; a newcomer waits until they share).
        task_workers: The live workers of the task name under any configuration that have
            inputs to call, this one included (the divisor of a shared rate limit).
    """

    now: float
    peers: int
    solo_peers: int
    task_workers: int


def _state(shared: bool, idle: bool) -> int:
    """``loom_workers.shared``: 0 alone, 1 claiming, 2 claiming but with nothing to call."""
    return 2 if shared and idle else int(shared)


def _check_lease(lease_s: float) -> float:
    return check_positive_number("lease_s", lease_s, " of seconds", MAX_LEASE_S)


class WorkerLeases(StoreBase):
    """The leases' half of ``ResultStore``: join, claim, beat, leave."""

    def db_now(self) -> float:
        """The database's clock: seconds since the epoch (the clock every lease is judged by)."""
        with self._op("db_now"), self._t.engine.connect() as conn:
            return float(conn.execute(text(f"SELECT {self._d.now_sql}")).scalar_one())

    def join_task(
        self, task_name: str, config_fp: str, worker_id: str, lease_s: float
    ) -> WorkerView:
        """Register ``worker_id`` as a live worker of the task until now + ``lease_s``.

        Under the task's lock (so that of two workers joining at once the second sees the
        first), it forgets the task's dead workers and expired claims, then registers this
        worker as sharing (claiming its inputs) when another live worker is there, and as
        running alone otherwise.

        Raises:
            LoomUsageError: a bad argument (``lease_s`` below :data:`MIN_LEASE_S`, say).
        """
        lease = self._lease_args(task_name, config_fp, worker_id, lease_s)
        now = self._d.now_sql
        key = {"t": task_name, "c": config_fp, "w": worker_id, "lease": lease}
        with self._op("join_task"), self._t.write_engine.begin() as conn:
            self._d.lock_task(conn, task_name, config_fp)
            conn.execute(
                text(
                    "DELETE FROM loom_workers WHERE task_name = :t AND config_fp = :c "
                    f"AND expires_at < {now}"
                ),
                key,
            )
            conn.execute(
                text(
                    "DELETE FROM loom_claims WHERE task_name = :t AND config_fp = :c "
                    f"AND expires_at < {now}"
                ),
                key,
            )
            view = self._view(conn, task_name, config_fp, worker_id)
            self._register(conn, key, int(view.peers > 0))
        return WorkerView(view.now, view.peers, view.solo_peers, view.task_workers + 1)

    def workers(self, task_name: str, config_fp: str, worker_id: str) -> WorkerView:
        """The task's live workers as ``worker_id`` sees them (a read; no lock, no write)."""
        self._lease_args(task_name, config_fp, worker_id, MIN_LEASE_S)
        with self._op("workers"), self._t.engine.connect() as conn:
            return self._view(conn, task_name, config_fp, worker_id, me=True)

    def beat(
        self,
        task_name: str,
        config_fp: str,
        worker_id: str,
        lease_s: float,
        *,
        shared: bool,
        idle: bool = False,
    ) -> WorkerView:
        """The heartbeat: ``worker_id`` stays live, and its claims held, until now + ``lease_s``.

        Claims whose inputs have a succeeded row are deleted (their result ended them), the
        rest renewed. A worker that others took for dead (its row deleted after it expired)
        registers again. ``idle``: the worker has nothing left to call (it only waits for
        inputs others hold), so it does not count in ``task_workers``, the divisor of a
        shared rate limit.
        """
        lease = self._lease_args(task_name, config_fp, worker_id, lease_s)
        now = self._d.now_sql
        key = {"t": task_name, "c": config_fp, "w": worker_id, "lease": lease}
        with self._op("beat"), self._t.write_engine.begin() as conn:
            touched = conn.execute(
                text(
                    f"UPDATE loom_workers SET heartbeat_at = {now}, expires_at = {now} + :lease, "
                    "shared = :shared WHERE worker_id = :w"
                ),
                {**key, "shared": _state(shared, idle)},
            ).rowcount
            if not touched:
                self._register(conn, key, _state(shared, idle))
            if shared:
                conn.execute(
                    text(
                        "DELETE FROM loom_claims WHERE owner = :w AND task_name = :t "
                        "AND config_fp = :c AND EXISTS (SELECT 1 FROM loom_results AS r "
                        "WHERE r.task_name = loom_claims.task_name "
                        "AND r.config_fp = loom_claims.config_fp "
                        "AND r.task_id = loom_claims.task_id AND r.status = 'succeeded')"
                    ),
                    key,
                )
                conn.execute(
                    text(
                        f"UPDATE loom_claims SET expires_at = {now} + :lease WHERE owner = :w "
                        "AND task_name = :t AND config_fp = :c"
                    ),
                    key,
                )
            return self._view(conn, task_name, config_fp, worker_id, me=True)

    def claim(
        self,
        task_name: str,
        config_fp: str,
        worker_id: str,
        task_ids: Sequence[str],
        lease_s: float,
        *,
        share: bool = False,
    ) -> set[str]:
        """Claim ``task_ids`` for ``worker_id`` until now + ``lease_s``; the ids it got.

        An id is got when no succeeded row of ``config_fp`` holds it and no other worker holds
        a live claim on it. One statement (one round trip) per 5,000 ids, all in one
        transaction, committed before this returns. With ``share``, the worker is marked as
        claiming its inputs in the same transaction (a worker that ran alone and found a
        newcomer claims what it has under way, then shares).
        """
        lease = self._lease_args(task_name, config_fp, worker_id, lease_s)
        if isinstance(task_ids, str):
            raise LoomUsageError("task_ids must be a sequence of ids, not one string")
        ids = sorted(set(task_ids))
        got: set[str] = set()
        if not ids and not share:
            return got
        with self._op("claim"), self._t.write_engine.begin() as conn:
            if share:
                self._d.lock_task(conn, task_name, config_fp)
            for start in range(0, len(ids), _CLAIM_CHUNK):
                chunk = ids[start : start + _CLAIM_CHUNK]
                got.update(self._d.claim(conn, task_name, config_fp, worker_id, chunk, lease))
            if share:
                conn.execute(
                    text("UPDATE loom_workers SET shared = 1 WHERE worker_id = :w"),
                    {"w": worker_id},
                )
        return got

    def leave_task(self, task_name: str, config_fp: str, worker_id: str) -> None:
        """Release every claim of ``worker_id`` on the task and unregister it."""
        self._lease_args(task_name, config_fp, worker_id, MIN_LEASE_S)
        key = {"t": task_name, "c": config_fp, "w": worker_id}
        with self._op("leave_task"), self._t.write_engine.begin() as conn:
            conn.execute(
                text(
                    "DELETE FROM loom_claims WHERE owner = :w AND task_name = :t AND config_fp = :c"
                ),
                key,
            )
            conn.execute(text("DELETE FROM loom_workers WHERE worker_id = :w"), key)

    # -- internals -----------------------------------------------------------------------

    def _register(self, conn: Connection, key: dict[str, object], state: int) -> None:
        """Insert the worker's row of ``key`` (w, t, c, lease), live for a lease from now."""
        now = self._d.now_sql
        conn.execute(
            text(
                "INSERT INTO loom_workers (worker_id, task_name, config_fp, host, pid, shared, "
                f"started_at, heartbeat_at, expires_at) VALUES (:w, :t, :c, :host, :pid, "
                f":shared, {now}, {now}, {now} + :lease)"
            ),
            {**key, "host": socket.gethostname(), "pid": os.getpid(), "shared": state},
        )

    def _lease_args(self, task_name: str, config_fp: str, worker_id: str, lease_s: float) -> float:
        check_non_empty_string("task_name", task_name)
        check_non_empty_string("config_fp", config_fp)
        check_non_empty_string("worker_id", worker_id)
        lease = _check_lease(lease_s)
        if lease < MIN_LEASE_S:
            raise LoomUsageError(f"lease_s must be at least {MIN_LEASE_S} seconds, got {lease_s!r}")
        return lease

    def _view(
        self, conn: Connection, task_name: str, config_fp: str, worker_id: str, *, me: bool = False
    ) -> WorkerView:
        """The live workers of the task; ``me``: count ``worker_id`` in ``task_workers``."""
        row = conn.execute(
            text(
                f"SELECT {self._d.now_sql}, "
                "SUM(CASE WHEN config_fp = :c AND worker_id <> :w THEN 1 ELSE 0 END), "
                "SUM(CASE WHEN config_fp = :c AND worker_id <> :w AND shared = 0 "
                "THEN 1 ELSE 0 END), "
                "SUM(CASE WHEN worker_id <> :w AND shared < 2 THEN 1 ELSE 0 END) "
                f"FROM loom_workers WHERE task_name = :t AND expires_at >= {self._d.now_sql}"
            ),
            {"t": task_name, "c": config_fp, "w": worker_id},
        ).one()
        others = int(row[3] or 0)
        return WorkerView(
            now=float(row[0]),
            peers=int(row[1] or 0),
            solo_peers=int(row[2] or 0),
            task_workers=others + 1 if me else others,
        )
