"""PostgreSQL (psycopg 3): several processes or machines sharing one run.

Connecting: ``connect_timeout`` defaults to 10 s (an unreachable host fails within seconds,
not the OS's minutes) and the pool pings a connection before handing it out. Schema changes
are serialized across processes by a transaction-scoped advisory lock.

Hot path: one ``INSERT … SELECT FROM unnest(arrays) ON CONFLICT DO UPDATE`` per batch (one round
trip whatever the batch size); the reads probe the primary key once per id of
``unnest(array)`` through a LATERAL subquery, a plan no lack of statistics can change.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import inspect, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import URL, Connection
from sqlalchemy.sql.dml import Insert

from loom_store._dialect import Dialect
from loom_store._rows import ResultRow
from loom_store._schema import runs_table
from loom_store._sql import (
    COLUMNS,
    DATA_COLUMNS,
    HIT_COLUMNS,
    LAST_RUN,
    TABLE,
    aware,
    on_conflict,
    row_values,
    to_rows,
)
from loom_store._target import StoreTarget, create, target
from loom_store.dialects._leases_postgresql import PostgreSQLLeases

__all__ = ["DIALECT", "PostgreSQLDialect"]

_DEFAULT_CONNECT_TIMEOUT_S = 10
# Serializes schema creation and upgrades across processes.
_SCHEMA_LOCK_KEY = 0x4C4F4F4D  # "LOOM"
# With the task name's hash: serializes adding provider batches to one task.
_JOB_LOCK_KEY = 0x4C4A4F42  # "LJOB"
_OLD_INDEX = "ix_loom_results_config"

_ARRAY_TYPES = {
    "attempts": "integer[]",
    "latency_ms": "double precision[]",
}

# How each column of a hit is printed into its JSON element: data and usage are JSON texts
# already (the engine wrote them), spliced in as they are; a NULL data makes the element NULL
# (|| propagates it), which string_agg skips. Plain texts are quoted by to_json; float8
# prints its shortest exact form.
_HIT_SQL = {
    "data": "h.data",
    "usage": "COALESCE(h.usage, 'null')",
    "attempts": "CAST(h.attempts AS TEXT)",
}


class PostgreSQLDialect(PostgreSQLLeases, Dialect):
    """PostgreSQL through psycopg 3."""

    name = "postgresql"

    def __init__(self) -> None:
        arrays = ", ".join(f"%({c})s::{_ARRAY_TYPES.get(c, 'text[]')}" for c in DATA_COLUMNS)
        self._upsert = (
            f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) "
            f"SELECT u.*, %(now)s::timestamptz, %(now)s::timestamptz FROM unnest({arrays}) AS u "
            f"{on_conflict()}"
        )
        # One primary-key probe per id: a LATERAL subquery with LIMIT is never flattened into
        # the outer query, and an equality on the whole key is served by the primary key
        # whatever the statistics say. (Plain ``task_id = ANY(…)`` with the config and status
        # conditions let a planner without statistics, on a fresh table, scan the whole task
        # or the whole config for every lookup.)
        self._select = _lateral(COLUMNS)
        parts = [_HIT_SQL.get(c, f"COALESCE(to_json(h.{c})::text, 'null')") for c in HIT_COLUMNS]
        element = "'[' || CAST(h._n - 1 AS TEXT) || ',' || " + " || ',' || ".join(parts) + " || ']'"
        self._select_hits = (
            f"SELECT '[' || string_agg({element}, ',') || ']' FROM ("
            f"{_lateral(HIT_COLUMNS, ordinal=True)}) AS h"
        )

    # -- connecting --------------------------------------------------------------------------

    def open(self, url: URL, busy_timeout_s: float) -> StoreTarget:
        connect_args: dict[str, Any] = {}
        if "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = _DEFAULT_CONNECT_TIMEOUT_S
        engine = create(url, connect_args=connect_args, pool_pre_ping=True)
        return target(engine, url, self)

    # -- locks -------------------------------------------------------------------------------

    def lock_schema(self, conn: Connection) -> None:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SCHEMA_LOCK_KEY})

    def lock_jobs(self, conn: Connection, task_name: str) -> None:
        # Two processes adding provider batches of one task at once must not both add the
        # same inputs: the second waits here, then sees the first's batches.
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:k, hashtext(:t))"),
            {"k": _JOB_LOCK_KEY, "t": task_name},
        )

    # -- results -----------------------------------------------------------------------------

    def upsert(self, conn: Connection, rows: Sequence[ResultRow], now: datetime) -> None:
        columns = list(zip(*(row_values(row) for row in rows), strict=True))
        params: dict[str, Any] = {
            name: list(values) for name, values in zip(DATA_COLUMNS, columns, strict=True)
        }
        params["now"] = now
        conn.exec_driver_sql(self._upsert, params)

    def select_rows(
        self, conn: Connection, task_name: str, config_fp: str, ids: Sequence[str]
    ) -> list[ResultRow]:
        params = {"task_name": task_name, "config_fp": config_fp, "ids": list(ids)}
        cursor = conn.exec_driver_sql(self._select, params)
        return to_rows(cursor.fetchall(), aware)

    def select_hits(
        self, conn: Connection, task_name: str, config_fp: str, ids: Sequence[str]
    ) -> str | None:
        params = {"task_name": task_name, "config_fp": config_fp, "ids": list(ids)}
        found: str | None = conn.exec_driver_sql(self._select_hits, params).scalar()
        return found

    def insert_run(self) -> Insert:
        return insert(runs_table).on_conflict_do_nothing(
            index_elements=[runs_table.c.task_name, runs_table.c.config_fp]
        )

    # -- schema upgrades ---------------------------------------------------------------------

    def upgrade_v1_to_v2(self, conn: Connection, *, has_results: bool, has_runs: bool) -> None:
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS {_OLD_INDEX}")
        if has_results:
            old_key = inspect(conn).get_pk_constraint(TABLE).get("name")
            drop = f'DROP CONSTRAINT "{old_key}", ' if old_key else ""
            conn.exec_driver_sql(
                f"ALTER TABLE loom_results {drop}"
                "ADD CONSTRAINT pk_loom_results PRIMARY KEY (task_name, config_fp, task_id)"
            )
        if has_runs:
            conn.exec_driver_sql("ALTER TABLE loom_runs ADD COLUMN last_run_at TIMESTAMPTZ")
            last_run = f"GREATEST(r.created_at, ({LAST_RUN}))" if has_results else "r.created_at"
            conn.exec_driver_sql(f"UPDATE loom_runs AS r SET last_run_at = {last_run}")
            conn.exec_driver_sql("ALTER TABLE loom_runs ALTER COLUMN last_run_at SET NOT NULL")


def _lateral(columns: Sequence[str], *, ordinal: bool = False) -> str:
    # status is selected for the outer filter and dropped. With ``ordinal``, the id's 1-based
    # position in the array comes first, as _n.
    inner = ", ".join([*columns, "status AS _status"])
    selected = ", ".join(f"r.{c}" for c in columns)
    ids = "unnest(%(ids)s::text[]) AS i(id)"
    if ordinal:
        selected = f"i.n AS _n, {selected}"
        ids = "unnest(%(ids)s::text[]) WITH ORDINALITY AS i(id, n)"
    return (
        f"SELECT {selected} FROM {ids} CROSS JOIN LATERAL ("
        f"SELECT {inner} FROM {TABLE} "
        "WHERE task_name = %(task_name)s AND config_fp = %(config_fp)s AND task_id = i.id "
        "LIMIT 1) AS r WHERE r._status = 'succeeded'"
    )


#: The dialect of ``postgresql`` URLs.
DIALECT = PostgreSQLDialect()
