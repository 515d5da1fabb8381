"""SQLite: one file shared by many threads and several processes (or one in-memory database).

Connecting (SQLAlchemy's documented pysqlite recipe, "Serializable isolation / Savepoints /
Transactional DDL", with the BEGIN chosen per engine through an execution option):

* ``journal_mode=WAL``: readers never block the writer and the writer never blocks readers;
* ``synchronous=NORMAL``: a commit survives the death of the process (kill -9); only a power
  cut or an OS crash may lose the last commits;
* ``busy_timeout``: a connection that finds the file locked waits instead of failing;
* pysqlite's own transaction handling is switched off and every transaction is begun here:
  ``BEGIN IMMEDIATE`` for writes, so the write lock is taken up front and contention waits in
  the busy handler (a deferred transaction that upgrades to a write fails at once with
  ``SQLITE_BUSY`` when another connection wrote in between); plain ``BEGIN`` for reads. The
  write lock is also the schema lock.

Hot path: ``executemany`` of ``INSERT … ON CONFLICT DO UPDATE`` (one prepared statement,
re-executed per row inside one transaction); the reads probe the whole primary key per id.
(One statement of many rows, ``VALUES (…), (…), …``, was measured too: it takes the GIL back
once per statement instead of once per row, but costs SQLite ~30 % more CPU per row on the
random keys that task ids are: 25 against 19 µs, measured with 320-row transactions.)
WAL checkpoints run on a background thread (``_checkpoint.py``).
"""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, event
from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.dml import Insert

from loom_protocol import StoreError
from loom_store._checkpoint import WalCheckpointer
from loom_store._dialect import Checkpointer, Dialect
from loom_store._rows import ResultRow
from loom_store._schema import results_table, runs_table
from loom_store._sql import COLUMNS, HIT_COLUMNS, LAST_RUN, TABLE, on_conflict, row_values, to_rows
from loom_store._target import WRITE_OPTION, StoreTarget, create, target
from loom_store.dialects._leases_sqlite import SQLiteLeases

__all__ = ["DIALECT", "SQLiteDialect"]

logger = logging.getLogger("loom.store")

_WAL_CHECKPOINT_PAGES = 16384  # 64 MiB of 4 KiB pages: a backstop, see _checkpoint.py
_WAL_SIZE_LIMIT = 64 * 1024 * 1024
_MMAP_BYTES = 256 * 1024 * 1024
_OLD_INDEX = "ix_loom_results_config"

# How each column of a hit is printed into its JSON element. data and usage are JSON texts
# already (the engine wrote them); json_quote would render a REAL with 15 significant
# digits, %!.17g keeps every bit of latency_ms.
_HIT_SQL = {
    "data": ("%s", "r.data"),
    "usage": ("%s", "COALESCE(r.usage, 'null')"),
    "raw_output": ("%s", "json_quote(r.raw_output)"),
    "reasoning": ("%s", "json_quote(r.reasoning)"),
    "attempts": ("%d", "r.attempts"),
    "latency_ms": (
        "%s",
        "CASE WHEN r.latency_ms IS NULL THEN 'null' ELSE printf('%!.17g', r.latency_ms) END",
    ),
    "model": ("%s", "json_quote(r.model)"),
}


class SQLiteDialect(SQLiteLeases, Dialect):
    """SQLite through pysqlite: a file in WAL mode, or ``:memory:``."""

    name = "sqlite"

    def __init__(self) -> None:
        placeholders = ", ".join("?" for _ in COLUMNS)
        self._upsert = (
            f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({placeholders}) {on_conflict()}"
        )
        formats = ",".join(_HIT_SQL[c][0] for c in HIT_COLUMNS)
        values = ", ".join(_HIT_SQL[c][1] for c in HIT_COLUMNS)
        # One printf per row, not a chain of ||: each || copies the string built so far
        # (measured: 4.1 → 3.2 µs per id for the whole query).
        element = f"printf('[%d,{formats}]', j.key, {values})"
        # One statement, one step, whatever the number of ids (they arrive as one JSON array,
        # so no bound-parameter limit applies): SQLite builds the whole text without the GIL,
        # and the calling thread takes the GIL back once, not once per row. CROSS JOIN keeps
        # the ids as the outer loop: one primary-key probe per id.
        self._select_hits = (
            f"SELECT '[' || group_concat({element}, ',') || ']' "
            f"FROM json_each(?) AS j CROSS JOIN {TABLE} AS r "
            "WHERE r.task_name = ? AND r.config_fp = ? AND r.task_id = j.value "
            "AND r.status = 'succeeded' AND r.data IS NOT NULL"
        )

    # -- connecting --------------------------------------------------------------------------

    def open(self, url: URL, busy_timeout_s: float) -> StoreTarget:
        _bind_none_directly()
        if not url.database or url.database == ":memory:":
            url = url.set(database=":memory:")
            # One database means one connection; a lock keeps threads from interleaving on it.
            engine = create(url, connect_args={"check_same_thread": False}, poolclass=StaticPool)
            _install_hooks(engine, busy_timeout_s, wal=False)
            lock = threading.RLock()
            return target(engine, url, self, lambda: lock)
        path = Path(url.database).expanduser().absolute()
        if path.is_dir():
            raise StoreError(f"cannot open store {str(path)!r}: it is a folder, not a file")
        if not path.parent.is_dir():
            raise StoreError(
                f"cannot open store {str(path)!r}: folder {str(path.parent)!r} does not exist"
            )
        url = url.set(database=str(path))
        engine = create(
            url,
            connect_args={"timeout": busy_timeout_s, "check_same_thread": False},
            # Enough connections for a writer thread plus a dozen reading threads; more wait.
            pool_size=8,
            max_overflow=16,
        )
        _install_hooks(engine, busy_timeout_s, wal=True)
        return target(engine, url, self)

    def checkpointer(self, target: StoreTarget, busy_timeout_s: float) -> Checkpointer | None:
        if target.engine.url.database == ":memory:":
            return None
        return WalCheckpointer(target.engine, busy_timeout_s)

    # -- locks -------------------------------------------------------------------------------

    def lock_schema(self, conn: Connection) -> None:
        # The write transaction began with BEGIN IMMEDIATE: it holds the database's write
        # lock already, which serializes schema changes too.
        return None

    def lock_jobs(self, conn: Connection, task_name: str) -> None:
        # BEGIN IMMEDIATE serializes every write transaction already, jobs' too.
        return None

    # -- results -----------------------------------------------------------------------------

    def upsert(self, conn: Connection, rows: Sequence[ResultRow], now: datetime) -> None:
        # The same text SQLAlchemy's DateTime stores on SQLite: naive UTC, microseconds.
        stamp = now.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        stamps = (stamp, stamp)
        conn.exec_driver_sql(self._upsert, [row_values(row) + stamps for row in rows])

    def select_rows(
        self, conn: Connection, task_name: str, config_fp: str, ids: Sequence[str]
    ) -> list[ResultRow]:
        cursor = conn.exec_driver_sql(_select(len(ids)), (task_name, config_fp, *ids))
        return to_rows(cursor.fetchall(), _stamp)

    def select_hits(
        self, conn: Connection, task_name: str, config_fp: str, ids: Sequence[str]
    ) -> str | None:
        params = (_ids_json(ids), task_name, config_fp)
        text: str | None = conn.exec_driver_sql(self._select_hits, params).scalar()
        return text

    def insert_run(self) -> Insert:
        return insert(runs_table).on_conflict_do_nothing(
            index_elements=[runs_table.c.task_name, runs_table.c.config_fp]
        )

    # -- schema upgrades ---------------------------------------------------------------------

    def upgrade_v1_to_v2(self, conn: Connection, *, has_results: bool, has_runs: bool) -> None:
        # SQLite cannot change a primary key in place: tables are rebuilt the documented way
        # (create the new table, copy every row, drop the old one, rename the new one).
        conn.exec_driver_sql(f"DROP INDEX IF EXISTS {_OLD_INDEX}")
        if has_results:
            results_table.to_metadata(MetaData(), name="loom_results_new").create(conn)
            columns = ", ".join(COLUMNS)
            conn.exec_driver_sql(
                f"INSERT INTO loom_results_new ({columns}) SELECT {columns} FROM loom_results"
            )
            conn.exec_driver_sql("DROP TABLE loom_results")
            conn.exec_driver_sql("ALTER TABLE loom_results_new RENAME TO loom_results")
        if has_runs:
            runs_table.to_metadata(MetaData(), name="loom_runs_new").create(conn)
            # Timestamps are ISO text on SQLite: the text order is the time order.
            last_run = f"MAX(r.created_at, COALESCE(({LAST_RUN}), r.created_at))"
            if not has_results:
                last_run = "r.created_at"
            conn.exec_driver_sql(
                "INSERT INTO loom_runs_new (task_name, config_fp, config, created_at, "
                f"last_run_at) SELECT r.task_name, r.config_fp, r.config, r.created_at, "
                f"{last_run} FROM loom_runs AS r"
            )
            conn.exec_driver_sql("DROP TABLE loom_runs")
            conn.exec_driver_sql("ALTER TABLE loom_runs_new RENAME TO loom_runs")


def _null(_value: None) -> None:
    return None


def _bind_none_directly() -> None:
    """Give pysqlite an adapter for ``None`` (it then binds NULL exactly as without one).

    Without it, CPython 3.11's pysqlite sends every ``None`` parameter through its adapter
    protocol, which looks up ``PrepareProtocol.__adapt__`` and so builds and discards a
    formatted AttributeError: ~0.2 µs per ``None``, and a row has three or four (reasoning,
    error, usage...), on the writer thread with the GIL held (measured with callgrind and
    timeit; the ``store`` scenario of scripts/bench.py). The registry is process-wide: an
    adapter for ``None`` that the application registered is left alone.
    """
    if (type(None), sqlite3.PrepareProtocol) not in sqlite3.adapters:
        sqlite3.register_adapter(type(None), _null)


@functools.lru_cache(maxsize=16)
def _select(n: int) -> str:
    marks = ", ".join("?" for _ in range(n))
    return (
        f"SELECT {', '.join(COLUMNS)} FROM {TABLE} "
        f"WHERE task_name = ? AND config_fp = ? AND task_id IN ({marks}) "
        "AND status = 'succeeded'"
    )


_ids_json = json.JSONEncoder(separators=(",", ":")).encode


def _stamp(value: Any) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def _install_hooks(engine: Engine, busy_timeout_s: float, *, wal: bool) -> None:
    busy_ms = max(1, round(busy_timeout_s * 1000))

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Stop pysqlite from issuing BEGIN (and COMMIT before DDL) itself; _on_begin does it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            # busy_timeout first: switching to WAL takes a lock another process may hold.
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            if wal:
                mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    logger.warning(
                        "SQLite refused WAL mode (journal_mode=%s); several processes on "
                        "this file will block each other",
                        mode,
                    )
            cursor.execute("PRAGMA synchronous = NORMAL")
            if wal:
                # Checkpoints run in the background (_checkpoint.py); this is the backstop,
                # at 64 MiB of WAL rather than 4 MiB so that it rarely has much to copy. The
                # file is cut back to that size when the WAL restarts.
                cursor.execute(f"PRAGMA wal_autocheckpoint = {_WAL_CHECKPOINT_PAGES}")
                cursor.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT}")
                # Cache lookups read rows scattered over the file: memory-mapped reads save
                # one read() call per page (measured: ~9% more get_many ids/s).
                cursor.execute(f"PRAGMA mmap_size = {_MMAP_BYTES}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        writes = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")


#: The dialect of ``sqlite`` URLs and of plain paths.
DIALECT = SQLiteDialect()
