"""The one interface every database of the store implements, and how a dialect is found.

A :class:`Dialect` owns everything that differs between databases: how an engine is built and
configured on connect, the lock that serializes schema changes across processes, the upsert
(with its rule that a failure never replaces a success), the hot-path reads, the per-database
statements of a schema upgrade, and the background maintenance a database needs (SQLite's WAL
checkpoints), and the lease SQL of several workers (``LeaseSQL``: the database's clock, a lock
per task, the batched claim). Everything else in the store is dialect-neutral SQLAlchemy Core.

Adding a database is one new module, ``loom_store/dialects/<name>.py``, named after
SQLAlchemy's backend name (``make_url(url).get_backend_name()``) and exposing ``DIALECT``, an
instance of a :class:`Dialect` subclass; :func:`dialect_for` finds it by that name. Later
capabilities that differ per database (a tracker of provider batch jobs) become methods here.
"""

from __future__ import annotations

import importlib
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from loom_protocol import StoreError

from ._lease_sql import LeaseSQL

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Connection
    from sqlalchemy.sql.dml import Insert

    from ._rows import ResultRow
    from ._target import StoreTarget

__all__ = ["Checkpointer", "Dialect", "dialect_for"]

_NAME_RE = re.compile(r"[a-z][a-z0-9_]*")


class Checkpointer(Protocol):
    """Background maintenance a dialect runs after writes (SQLite: WAL checkpoints)."""

    def note_write(self) -> None:
        """Called after each committed write."""

    def stop(self) -> None:
        """Stop for good (the store closes). Idempotent."""


class Dialect(LeaseSQL, ABC):
    """What the store needs of one database; one instance per dialect module (``DIALECT``).

    Statements run on a connection the store opened (reads) or on a transaction it began
    (writes: ``target.write_engine.begin()``); a dialect never commits.
    """

    #: SQLAlchemy's backend name, also the dialect module's name.
    name: str

    # -- connecting --------------------------------------------------------------------------

    @abstractmethod
    def open(self, url: URL, busy_timeout_s: float) -> StoreTarget:
        """Build (do not connect) the engines for ``url`` with this database's connect hooks.

        Raises:
            StoreError: the database cannot be opened from here (a missing folder, a driver
                that is not installed).
        """

    def checkpointer(self, target: StoreTarget, busy_timeout_s: float) -> Checkpointer | None:
        """The background maintenance of ``target``'s database, or ``None`` (the default)."""
        return None

    # -- locks -------------------------------------------------------------------------------

    @abstractmethod
    def lock_schema(self, conn: Connection) -> None:
        """Serialize schema creation and upgrades across processes, until ``conn`` commits."""

    @abstractmethod
    def lock_jobs(self, conn: Connection, task_name: str) -> None:
        """Serialize the writers of one task's provider batch jobs, until ``conn`` commits."""

    # -- results -----------------------------------------------------------------------------

    @abstractmethod
    def upsert(self, conn: Connection, rows: Sequence[ResultRow], now: datetime) -> None:
        """Write ``rows`` (distinct keys) stamped ``now``, in one statement.

        A row replaces the stored row of its key, keeping ``created_at``, unless the stored
        row succeeded and the new one failed: a failure never replaces a success.
        """

    @abstractmethod
    def select_rows(
        self, conn: Connection, task_name: str, config_fp: str, ids: Sequence[str]
    ) -> list[ResultRow]:
        """The succeeded rows of ``config_fp`` among ``ids`` (distinct), every column."""

    @abstractmethod
    def select_hits(
        self, conn: Connection, task_name: str, config_fp: str, ids: Sequence[str]
    ) -> str | None:
        """The cache hits among ``ids`` as one JSON array text, ``None`` when none matched.

        The same rows as :meth:`select_rows` that have data, each as a
        :class:`~loom_store.CachedHit` array (position of its id in ``ids`` first).
        """

    @abstractmethod
    def insert_run(self) -> Insert:
        """The insert-if-new of a row of ``loom_runs``, in this database's syntax."""

    # -- schema upgrades ---------------------------------------------------------------------

    @abstractmethod
    def upgrade_v1_to_v2(self, conn: Connection, *, has_results: bool, has_runs: bool) -> None:
        """Schema version 1 → 2 in ``conn``'s transaction (see ``_migrate.py``)."""


def dialect_for(backend: str) -> Dialect | None:
    """The dialect of SQLAlchemy's backend name ``backend``; ``None`` when there is none.

    Raises:
        StoreError: the dialect's module exists but fails to import.
    """
    if not _NAME_RE.fullmatch(backend):
        return None
    module_name = f"{__package__}.dialects.{backend}"
    problem = None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None
        problem = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a broken install: said plainly, not as the import's traceback
        problem = f"{type(exc).__name__}: {exc}"
    if problem is not None:
        raise StoreError(
            f"the store's {backend!r} dialect ({module_name}) cannot be loaded: {problem}"
        )
    dialect = getattr(module, "DIALECT", None)
    return dialect if isinstance(dialect, Dialect) else None
