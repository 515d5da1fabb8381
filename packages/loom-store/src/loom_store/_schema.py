"""The store's tables (SQLAlchemy Core) and its schema version.

::

    loom_meta     key (PK), value                  -- schema_version = "2"
    loom_results  task_name, task_id, config_fp, status, data, raw_output, reasoning,
                  error, input, usage, attempts, latency_ms, model, created_at, updated_at
                  PK (task_name, config_fp, task_id)
    loom_runs     task_name, config_fp (PK), config, created_at, last_run_at
    loom_claims   task_name, config_fp, task_id (PK), owner, expires_at
                  index (owner): which input a worker holds, until when (``_leases.py``)
    loom_workers  worker_id (PK), task_name, config_fp, host, pid, shared, started_at,
                  heartbeat_at, expires_at; index (task_name, config_fp): who runs a task

Version history (``_migrate.py`` upgrades a store in place when it is opened):

* 1 (loom-store 0.1): results keyed by (task_name, task_id), so a run under another
  configuration replaced the rows of the previous one; a secondary index
  ``ix_loom_results_config (config_fp, task_name)``; no ``loom_runs.last_run_at``.
* 2: results keyed by (task_name, config_fp, task_id): every configuration keeps its rows. The
  primary key serves every query by configuration, so the secondary index is gone.
  ``loom_runs.last_run_at`` says which configuration ran last.

Tables added without changing the version (a store of version 2 without them gets them, created
under the schema lock, when it is next opened; older code ignores them):

* ``loom_claims`` and ``loom_workers``: leases of several workers running one task. Their times
  are seconds since the epoch by the database's own clock (``Float``), never a machine's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeDecorator

__all__ = [
    "OLDEST_MIGRATED_VERSION",
    "SCHEMA_VERSION",
    "SCHEMA_VERSION_KEY",
    "UTCDateTime",
    "claims_table",
    "meta_table",
    "metadata",
    "results_table",
    "runs_table",
    "workers_table",
]

#: The layout this code reads and writes; bumped by any incompatible change of the tables.
SCHEMA_VERSION = 2
#: The oldest layout this code migrates in place when it opens a store.
OLDEST_MIGRATED_VERSION = 1
SCHEMA_VERSION_KEY = "schema_version"


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    PostgreSQL stores ``timestamptz``; a database without a timezone type (SQLite) stores the
    UTC wall time (SQLite: the text ``YYYY-MM-DD HH:MM:SS.ffffff``), read back with UTC
    attached. No dialect is named here: a new database needs no edit of the schema.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given to the store; use UTC")
        # A driver without a timezone type drops the zone and keeps the wall time: UTC.
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        stamp = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        if stamp.tzinfo is None:
            return stamp.replace(tzinfo=UTC)
        return stamp.astimezone(UTC)


metadata = MetaData()

meta_table = Table(
    "loom_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

results_table = Table(
    "loom_results",
    metadata,
    # Column order is ResultRow's field order; the key's order is the primary key's.
    Column("task_name", String, nullable=False),
    Column("task_id", String, nullable=False),
    Column("config_fp", String, nullable=False),
    Column("status", String(16), nullable=False),
    Column("data", Text),
    Column("raw_output", Text),
    Column("reasoning", Text),
    Column("error", Text),
    Column("input", Text),
    Column("usage", Text),
    Column("attempts", Integer, nullable=False, default=0),
    Column("latency_ms", Float),
    Column("model", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # task_name, config_fp first: a lookup is one probe of the whole key, and every query by
    # task or by configuration (stats, iter_results, other_configs, delete) is a range of it.
    PrimaryKeyConstraint("task_name", "config_fp", "task_id", name="pk_loom_results"),
    CheckConstraint("status IN ('succeeded', 'failed')", name="ck_loom_results_status"),
)

runs_table = Table(
    "loom_runs",
    metadata,
    Column("task_name", String, primary_key=True),
    Column("config_fp", String, primary_key=True),
    Column("config", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("last_run_at", UTCDateTime, nullable=False),
)

claims_table = Table(
    "loom_claims",
    metadata,
    # Keyed like loom_results: a claim is on one input of one configuration of a task.
    Column("task_name", String, nullable=False),
    Column("config_fp", String, nullable=False),
    Column("task_id", String, nullable=False),
    Column("owner", String, nullable=False),
    # Seconds since the epoch, by the database's clock (see _leases.py).
    Column("expires_at", Float, nullable=False),
    PrimaryKeyConstraint("task_name", "config_fp", "task_id", name="pk_loom_claims"),
    Index("ix_loom_claims_owner", "owner"),
)

workers_table = Table(
    "loom_workers",
    metadata,
    Column("worker_id", String, primary_key=True),
    Column("task_name", String, nullable=False),
    Column("config_fp", String, nullable=False),
    Column("host", Text),
    Column("pid", Integer),
    # 0 while the worker runs alone without claims, 1 once it claims every input it calls,
    # 2 when it claims but has nothing left to call (it does not count for shared limits).
    Column("shared", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Index("ix_loom_workers_task", "task_name", "config_fp"),
)
