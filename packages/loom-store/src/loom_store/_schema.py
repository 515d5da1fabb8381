"""The store's tables (SQLAlchemy Core) and its schema version.

::

    loom_meta     key (PK), value                  -- schema_version = "1"
    loom_results  task_name, task_id (PK), config_fp, status, data, raw_output, reasoning,
                  error, input, usage, attempts, latency_ms, model, created_at, updated_at
    loom_runs     task_name, config_fp (PK), config, created_at
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
    String,
    Table,
    Text,
)
from sqlalchemy.types import TypeDecorator

__all__ = [
    "SCHEMA_VERSION",
    "SCHEMA_VERSION_KEY",
    "UTCDateTime",
    "meta_table",
    "metadata",
    "results_table",
    "runs_table",
]

#: The layout this code reads and writes; bumped by any incompatible change of the tables.
SCHEMA_VERSION = 1
SCHEMA_VERSION_KEY = "schema_version"


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    PostgreSQL stores ``timestamptz``; SQLite, which has no timezone type, stores naive UTC text
    (``YYYY-MM-DD HH:MM:SS.ffffff``), read back with UTC attached.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} given to the store; use UTC")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

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
    Column("task_name", String, primary_key=True),
    Column("task_id", String, primary_key=True),
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
    CheckConstraint("status IN ('succeeded', 'failed')", name="ck_loom_results_status"),
    # For other_configs(): a loose scan of the distinct configs, then one probe per config.
    # config_fp leads on purpose: an index led by task_name would compete with the primary
    # key for get_many()'s lookups, and planners without statistics pick it (a full scan of
    # the task per lookup).
    Index("ix_loom_results_config", "config_fp", "task_name"),
)

runs_table = Table(
    "loom_runs",
    metadata,
    Column("task_name", String, primary_key=True),
    Column("config_fp", String, primary_key=True),
    Column("config", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)
