"""Opening a store's schema: create the tables, check the version, upgrade an older one.

:func:`prepare_schema` runs when a store is opened. A store of the current version with every
table costs one read-only check. Otherwise, under the write lock, it creates what is missing,
refuses a version newer than this code's (``upgrade loom-store``) or an unknown one, and
upgrades an older one in place with :func:`migrate`.

:func:`migrate` runs inside the transaction that creates the schema, after the version was read
again under that transaction's lock (the dialect's ``lock_schema``: SQLite's
``BEGIN IMMEDIATE``, PostgreSQL's ``pg_advisory_xact_lock``): of several processes opening an
old store at once, the first migrates and the others, waiting on the lock, then find the new
version and do nothing. The whole upgrade is that one transaction (DDL is transactional on both
databases), so a failure at any step leaves the old store exactly as it was.

Version 1 → 2 (results keyed by configuration too; the per-database statements are the
dialect's ``upgrade_v1_to_v2``):

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
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import inspect, select, text
from sqlalchemy.engine import Connection

from loom_protocol import LoomError, StoreError

from ._dialect import Dialect
from ._schema import (
    OLDEST_MIGRATED_VERSION,
    SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
    meta_table,
    metadata,
    results_table,
    runs_table,
)
from ._target import StoreTarget

__all__ = ["Migration", "migrate", "prepare_schema"]

logger = logging.getLogger("loom.store")

_SELECT_VERSION = select(meta_table.c.value).where(meta_table.c.key == SCHEMA_VERSION_KEY)


@dataclass(frozen=True)
class Migration:
    """What an upgrade did, for the log line written once it committed."""

    from_version: int
    to_version: int
    rows: int
    runs: int


def prepare_schema(t: StoreTarget, wrap: Callable[[str, BaseException], StoreError]) -> None:
    """Make the store on ``t`` usable by this code, or raise why not.

    Args:
        t: The store's engines.
        wrap: Turns a foreign exception of an action into the store's ``StoreError``.

    Raises:
        StoreError: the database failed, its schema version is newer or unknown, or an
            upgrade failed (and was rolled back).
    """
    migration: Migration | None = None
    started = time.monotonic()
    try:
        with t.serialize():
            with t.engine.connect() as conn:
                version, complete = _read_version(conn)
            if version is not None and _check_version(t, version) == SCHEMA_VERSION and complete:
                return
            # Under the write lock the version is read again: another process may have
            # created or upgraded the schema meanwhile.
            with t.write_engine.begin() as conn:
                t.dialect.lock_schema(conn)
                version = None
                if inspect(conn).has_table(meta_table.name):
                    version = conn.execute(_SELECT_VERSION).scalar_one_or_none()
                if version is not None:
                    number = _check_version(t, version)
                    if number < SCHEMA_VERSION:
                        migration = _migrate_or_explain(t, conn, number, wrap)
                metadata.create_all(conn, checkfirst=True)
                if version is None:
                    conn.execute(
                        meta_table.insert(),
                        {"key": SCHEMA_VERSION_KEY, "value": str(SCHEMA_VERSION)},
                    )
    except LoomError:
        raise
    except Exception as exc:
        error = wrap("opening", exc)
    else:
        if migration is not None:
            logger.info(
                "store %s upgraded from schema version %d to %d: %d result rows and %d runs "
                "kept (%.2f s)",
                t.url,
                migration.from_version,
                migration.to_version,
                migration.rows,
                migration.runs,
                time.monotonic() - started,
            )
        return
    raise error


def _read_version(conn: Connection) -> tuple[str | None, bool]:
    """The stored schema version (None when absent) and whether every table exists."""
    inspector = inspect(conn)
    present = {t.name for t in metadata.sorted_tables if inspector.has_table(t.name)}
    complete = len(present) == len(metadata.sorted_tables)
    if meta_table.name not in present:
        return None, complete
    return conn.execute(_SELECT_VERSION).scalar_one_or_none(), complete


def _check_version(t: StoreTarget, found: str) -> int:
    """The version as a number when this code reads it or upgrades it; else StoreError."""
    try:
        number = int(found)
    except ValueError:
        number = None
    if number is not None and OLDEST_MIGRATED_VERSION <= number <= SCHEMA_VERSION:
        return number
    if number is not None and number > SCHEMA_VERSION:
        raise StoreError(
            f"store {t.url} has schema version {number}, newer than version "
            f"{SCHEMA_VERSION} that this loom-store understands; upgrade loom-store"
        )
    raise StoreError(
        f"store {t.url} has an unknown schema version {found!r}; this loom-store "
        f"understands version {SCHEMA_VERSION} (and upgrades version "
        f"{OLDEST_MIGRATED_VERSION} in place)"
    )


def _migrate_or_explain(
    t: StoreTarget,
    conn: Connection,
    number: int,
    wrap: Callable[[str, BaseException], StoreError],
) -> Migration:
    """Upgrade on ``conn``'s transaction; a failure rolls it all back, said plainly."""
    try:
        return migrate(conn, t.dialect, number, t.url)
    except Exception as exc:
        error = wrap(f"upgrading from schema version {number} to {SCHEMA_VERSION}", exc)
    # Raised out of the transaction's block, which rolls the whole upgrade back.
    raise StoreError(
        f"{error}; the upgrade was rolled back and the store is unchanged (still schema "
        f"version {number}, readable by the loom-store that wrote it)"
    )


def migrate(conn: Connection, dialect: Dialect, found: int, url: str) -> Migration:
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
    dialect.upgrade_v1_to_v2(conn, has_results=has_results, has_runs=has_runs)
    conn.execute(
        text("UPDATE loom_meta SET value = :v WHERE key = :k"),
        {"v": str(SCHEMA_VERSION), "k": SCHEMA_VERSION_KEY},
    )
    return Migration(1, SCHEMA_VERSION, rows, runs)


def _count(conn: Connection, table: str) -> int:
    return int(conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())
