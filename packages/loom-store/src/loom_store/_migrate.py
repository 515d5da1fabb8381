"""In-place upgrade of a store written by an older schema version, run when it is opened.

:func:`migrate` runs inside the transaction that creates the schema, after the version was read
again under that transaction's lock (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL:
``pg_advisory_xact_lock``): of several processes opening an old store at once, the first
migrates and the others, waiting on the lock, then find the new version and do nothing. The
whole upgrade is that one transaction (DDL is transactional on both databases), so a failure
at any step leaves the old store exactly as it was.

Version 1 → 2 (results keyed by configuration too):

* SQLite cannot change a primary key in place: the table is rebuilt the documented way
  (create the new table, copy every row, drop the old one, rename the new one), and
  ``loom_runs`` likewise to add ``last_run_at`` as NOT NULL.
* PostgreSQL: the primary key is dropped and re-added over (task_name, config_fp, task_id) and
  ``last_run_at`` is added, filled, and set NOT NULL.
* ``ix_loom_results_config`` is dropped: the new primary key serves every query it served.
* ``last_run_at`` starts as the latest of the run's registration and its last row write, so
  that the configuration whose rows were written last counts as the latest one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import MetaData, Table, inspect, text
from sqlalchemy.engine import Connection

from ._schema import SCHEMA_VERSION, SCHEMA_VERSION_KEY, results_table, runs_table

__all__ = ["Migration", "migrate"]

logger = logging.getLogger("loom.store")

_OLD_INDEX = "ix_loom_results_config"


@dataclass(frozen=True)
class Migration:
    """What an upgrade did, for the log line written once it committed."""

    from_version: int
    to_version: int
    rows: int
    runs: int


def migrate(conn: Connection, dialect: str, found: int, url: str) -> Migration:
    """Upgrade the store on ``conn`` (inside its open transaction) from version ``found``.

    Raises:
        ValueError: no upgrade from ``found`` exists (the caller checked the version first).
    """
    if found != 1:
        raise ValueError(f"no upgrade from schema version {found}")
    inspector = inspect(conn)
    has_results = inspector.has_table(results_table.name)
    has_runs = inspector.has_table(runs_table.name)
    rows = _count(conn, results_table.name) if has_results else 0
    runs = _count(conn, runs_table.name) if has_runs else 0
    logger.warning(
        "upgrading store %s from schema version 1 to %d in place: %d result rows, %d runs "
        "(results are now kept per configuration); other processes opening it wait",
        url,
        SCHEMA_VERSION,
        rows,
        runs,
    )
    if dialect == "sqlite":
        _sqlite_v1_to_v2(conn, has_results=has_results, has_runs=has_runs)
    else:
        _postgres_v1_to_v2(conn, has_results=has_results, has_runs=has_runs)
    conn.execute(
        text("UPDATE loom_meta SET value = :v WHERE key = :k"),
        {"v": str(SCHEMA_VERSION), "k": SCHEMA_VERSION_KEY},
    )
    return Migration(1, SCHEMA_VERSION, rows, runs)


def _count(conn: Connection, table: str) -> int:
    return int(conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())


# The latest of a run's registration and its last row write (the rows are already in the new
# table, whose primary key serves the probe per run).
_LAST_RUN = (
    "SELECT MAX(x.updated_at) FROM loom_results AS x "
    "WHERE x.task_name = r.task_name AND x.config_fp = r.config_fp"
)


def _sqlite_v1_to_v2(conn: Connection, *, has_results: bool, has_runs: bool) -> None:
    scratch = MetaData()
    conn.exec_driver_sql(f"DROP INDEX IF EXISTS {_OLD_INDEX}")
    if has_results:
        new: Table = results_table.to_metadata(scratch, name="loom_results_new")
        new.create(conn)
        columns = ", ".join(c.name for c in results_table.c)
        conn.exec_driver_sql(
            f"INSERT INTO loom_results_new ({columns}) SELECT {columns} FROM loom_results"
        )
        conn.exec_driver_sql("DROP TABLE loom_results")
        conn.exec_driver_sql("ALTER TABLE loom_results_new RENAME TO loom_results")
    if has_runs:
        runs_new: Table = runs_table.to_metadata(scratch, name="loom_runs_new")
        runs_new.create(conn)
        # Timestamps are ISO text on SQLite: the text order is the time order.
        last_run = f"MAX(r.created_at, COALESCE(({_LAST_RUN}), r.created_at))"
        if not has_results:
            last_run = "r.created_at"
        conn.exec_driver_sql(
            "INSERT INTO loom_runs_new (task_name, config_fp, config, created_at, last_run_at) "
            f"SELECT r.task_name, r.config_fp, r.config, r.created_at, {last_run} "
            "FROM loom_runs AS r"
        )
        conn.exec_driver_sql("DROP TABLE loom_runs")
        conn.exec_driver_sql("ALTER TABLE loom_runs_new RENAME TO loom_runs")


def _postgres_v1_to_v2(conn: Connection, *, has_results: bool, has_runs: bool) -> None:
    conn.exec_driver_sql(f"DROP INDEX IF EXISTS {_OLD_INDEX}")
    if has_results:
        old_key = inspect(conn).get_pk_constraint(results_table.name).get("name")
        drop = f'DROP CONSTRAINT "{old_key}", ' if old_key else ""
        conn.exec_driver_sql(
            f"ALTER TABLE loom_results {drop}"
            "ADD CONSTRAINT pk_loom_results PRIMARY KEY (task_name, config_fp, task_id)"
        )
    if has_runs:
        conn.exec_driver_sql("ALTER TABLE loom_runs ADD COLUMN last_run_at TIMESTAMPTZ")
        last_run = f"GREATEST(r.created_at, ({_LAST_RUN}))" if has_results else "r.created_at"
        conn.exec_driver_sql(f"UPDATE loom_runs AS r SET last_run_at = {last_run}")
        conn.exec_driver_sql("ALTER TABLE loom_runs ALTER COLUMN last_run_at SET NOT NULL")
