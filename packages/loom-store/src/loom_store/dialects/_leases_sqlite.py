"""SQLite's lease SQL: the file's clock, its write lock as the task lock, one claim statement.

Every writer of a SQLite file takes the database's one write lock (``BEGIN IMMEDIATE``), so a
claim, a heartbeat and a join are serialized across every process on the file: the lock per
task is that lock already. The claim is one ``INSERT … SELECT FROM json_each(ids) … ON CONFLICT
DO UPDATE … WHERE expired RETURNING`` (the ids arrive as one JSON array: no bound-parameter
limit, one statement for a whole batch).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy.engine import Connection

from loom_store._lease_sql import LeaseSQL

__all__ = ["SQLiteLeases"]

# julianday('now') has millisecond resolution, more than enough for leases of seconds.
_NOW = "((julianday('now') - 2440587.5) * 86400.0)"

_CLAIM = (
    "INSERT INTO loom_claims (task_name, config_fp, task_id, owner, expires_at) "
    f"SELECT ?1, ?2, j.value, ?3, {_NOW} + ?4 FROM json_each(?5) AS j "
    "WHERE NOT EXISTS (SELECT 1 FROM loom_results AS r WHERE r.task_name = ?1 "
    "AND r.config_fp = ?2 AND r.task_id = j.value AND r.status = 'succeeded') "
    "ON CONFLICT (task_name, config_fp, task_id) DO UPDATE SET owner = excluded.owner, "
    f"expires_at = excluded.expires_at WHERE loom_claims.expires_at < {_NOW} "
    "OR loom_claims.owner = excluded.owner "
    "RETURNING task_id"
)

_ids_json = json.JSONEncoder(separators=(",", ":")).encode


class SQLiteLeases(LeaseSQL):
    """The lease half of the SQLite dialect."""

    now_sql = _NOW

    def lock_task(self, conn: Connection, task_name: str, config_fp: str) -> None:
        # The write transaction began with BEGIN IMMEDIATE: it holds the file's write lock.
        return None

    def claim(
        self,
        conn: Connection,
        task_name: str,
        config_fp: str,
        owner: str,
        ids: Sequence[str],
        lease_s: float,
    ) -> list[str]:
        params = (task_name, config_fp, owner, float(lease_s), _ids_json(list(ids)))
        return [row[0] for row in conn.exec_driver_sql(_CLAIM, params).fetchall()]
