"""PostgreSQL's lease SQL: the server's clock, an advisory lock per task, one claim statement.

The claim is ``INSERT … SELECT FROM unnest(ids) ON CONFLICT DO UPDATE … WHERE expired
RETURNING``, one round trip for a batch of ids, committed at once: no row lock outlives the
claim's own short transaction, let alone an HTTP call. ``SELECT … FOR UPDATE SKIP LOCKED``
fits a queue whose rows exist before anyone claims them; here no worker pre-loads the inputs
(each one pulls its own iterable lazily), so the claim must create the row, and ``ON CONFLICT``
is the statement that creates or takes over a row atomically: of two workers claiming one id
at once, the second waits for the first's (one-statement) transaction, then finds the row
unexpired and skips it. Ids are claimed in sorted order, so two claims over overlapping ids
lock rows in the same order and cannot deadlock each other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from loom_store._lease_sql import LeaseSQL

__all__ = ["PostgreSQLLeases"]

_NOW = "EXTRACT(EPOCH FROM clock_timestamp())::double precision"

_CLAIM = (
    "INSERT INTO loom_claims (task_name, config_fp, task_id, owner, expires_at) "
    f"SELECT %(t)s::text, %(c)s::text, i.id, %(o)s::text, {_NOW} + %(lease)s::double precision "
    "FROM unnest(%(ids)s::text[]) WITH ORDINALITY AS i(id, n) "
    "WHERE NOT EXISTS (SELECT 1 FROM loom_results AS r WHERE r.task_name = %(t)s::text "
    "AND r.config_fp = %(c)s::text AND r.task_id = i.id AND r.status = 'succeeded') "
    "ORDER BY i.n "
    "ON CONFLICT (task_name, config_fp, task_id) DO UPDATE SET owner = EXCLUDED.owner, "
    f"expires_at = EXCLUDED.expires_at WHERE loom_claims.expires_at < {_NOW} "
    "OR loom_claims.owner = EXCLUDED.owner "
    "RETURNING task_id"
)

_LOCK = text("SELECT pg_advisory_xact_lock(:k)")


class PostgreSQLLeases(LeaseSQL):
    """The lease half of the PostgreSQL dialect."""

    now_sql = _NOW

    def lock_task(self, conn: Connection, task_name: str, config_fp: str) -> None:
        # A signed 64-bit key per (task, configuration); a collision only serializes two
        # tasks' joins, never mixes them.
        digest = hashlib.sha256(f"loom-workers\0{task_name}\0{config_fp}".encode()).digest()
        conn.execute(_LOCK, {"k": int.from_bytes(digest[:8], "big", signed=True)})

    def claim(
        self,
        conn: Connection,
        task_name: str,
        config_fp: str,
        owner: str,
        ids: Sequence[str],
        lease_s: float,
    ) -> list[str]:
        params: dict[str, Any] = {
            "t": task_name,
            "c": config_fp,
            "o": owner,
            "lease": float(lease_s),
            "ids": list(ids),
        }
        return [row[0] for row in conn.exec_driver_sql(_CLAIM, params).fetchall()]
