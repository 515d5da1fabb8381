"""From a store target (a path or a URL) to a configured SQLAlchemy engine.

SQLite is set up for many threads and several processes on one file:

* ``journal_mode=WAL``: readers never block the writer and the writer never blocks readers;
* ``synchronous=NORMAL``: a commit survives the death of the process (kill -9); only a power
  cut or an OS crash may lose the last commits;
* ``busy_timeout``: a connection that finds the file locked waits instead of failing;
* pysqlite's own transaction handling is switched off and every transaction is begun by us:
  ``BEGIN IMMEDIATE`` for writes, so the write lock is taken up front and contention waits in
  the busy handler (a deferred transaction that upgrades to a write fails at once with
  ``SQLITE_BUSY`` when another connection wrote in between); plain ``BEGIN`` for reads, which
  never take the write lock.

This is SQLAlchemy's documented pysqlite recipe ("Serializable isolation / Savepoints /
Transactional DDL") with the BEGIN chosen per engine through an execution option.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.pool import StaticPool

from loom_protocol import LoomUsageError, StoreError

from ._secrets import Redactor, render_url

__all__ = ["WRITE_OPTION", "StoreTarget", "open_target"]

logger = logging.getLogger("loom.store")

#: Execution option marking an engine whose transactions write (SQLite: ``BEGIN IMMEDIATE``).
WRITE_OPTION = "loom_store_write"

_DEFAULT_CONNECT_TIMEOUT_S = 10
_WAL_CHECKPOINT_PAGES = 16384  # 64 MiB of 4 KiB pages: a backstop, see _checkpoint.py
_WAL_SIZE_LIMIT = 64 * 1024 * 1024
_MMAP_BYTES = 256 * 1024 * 1024
_URL_PASSWORD_RE = re.compile(r"(://[^/\s:@]*:)[^@\s/]+@")


@dataclass(frozen=True)
class StoreTarget:
    """A store's engines and the facts the store needs about them.

    Attributes:
        engine: For reads.
        write_engine: The same pool, flagged so that its transactions write.
        url: The URL, safe to print.
        dialect: ``"sqlite"``, ``"postgresql"``…
        redact: Removes this URL's secrets from any text.
        serialize: A lock every operation takes (an in-memory SQLite database lives on one
            shared connection), or a no-op.
        wal: Whether this is a SQLite file in WAL mode (checkpointed in the background).
    """

    engine: Engine
    write_engine: Engine
    url: str
    dialect: str
    redact: Callable[[str], str]
    serialize: Callable[[], contextlib.AbstractContextManager[Any]]
    wal: bool = False


def open_target(target: str | os.PathLike[str], busy_timeout_s: float) -> StoreTarget:
    """Build the engines for ``target``; nothing is connected yet.

    Raises:
        LoomUsageError: ``target`` is not a string or path, or is empty.
        StoreError: the URL does not parse, names an unknown dialect or a driver that is not
            installed, or a SQLite file's folder does not exist.
    """
    if isinstance(target, os.PathLike):
        return _sqlite_file(Path(os.fspath(target)), busy_timeout_s)
    if not isinstance(target, str):
        raise LoomUsageError(
            f"ResultStore target must be a path or a URL string, got {type(target).__name__}"
        )
    if not target.strip():
        raise LoomUsageError("ResultStore target is empty; give a file path or a URL")
    if "://" not in target:
        if target == ":memory:":
            return _sqlite_memory(busy_timeout_s)
        return _sqlite_file(Path(target), busy_timeout_s)
    try:
        url = make_url(target)
        url.port  # noqa: B018 - parses the port, which make_url leaves to later
    except (ArgumentError, ValueError):
        url = None
    if url is None:
        shown = _URL_PASSWORD_RE.sub(r"\1***@", target)
        raise StoreError(f"not a valid store URL: {shown!r}")
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            return _sqlite_memory(busy_timeout_s)
        return _sqlite_file(Path(url.database), busy_timeout_s, url=url)
    return _server(url)


def _sqlite_file(path: Path, busy_timeout_s: float, url: URL | None = None) -> StoreTarget:
    path = path.expanduser().absolute()
    if path.is_dir():
        raise StoreError(f"cannot open store {str(path)!r}: it is a folder, not a file")
    if not path.parent.is_dir():
        raise StoreError(
            f"cannot open store {str(path)!r}: folder {str(path.parent)!r} does not exist"
        )
    if url is None:
        url = URL.create("sqlite+pysqlite", database=str(path))
    else:
        url = url.set(database=str(path))
    engine = _create(
        url,
        connect_args={"timeout": busy_timeout_s, "check_same_thread": False},
        # Enough connections for a writer thread plus a dozen reading threads; more wait.
        pool_size=8,
        max_overflow=16,
    )
    _install_sqlite_hooks(engine, busy_timeout_s, wal=True)
    return _target(engine, url, nullcontext_factory, wal=True)


def _sqlite_memory(busy_timeout_s: float) -> StoreTarget:
    url = URL.create("sqlite+pysqlite", database=":memory:")
    # One database means one connection; a lock keeps threads from interleaving on it.
    engine = _create(url, connect_args={"check_same_thread": False}, poolclass=StaticPool)
    _install_sqlite_hooks(engine, busy_timeout_s, wal=False)
    lock = threading.RLock()
    return _target(engine, url, lambda: lock)


def _server(url: URL) -> StoreTarget:
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
        # Fail within seconds on an unreachable host instead of the OS's minutes.
        connect_args["connect_timeout"] = _DEFAULT_CONNECT_TIMEOUT_S
    engine = _create(url, connect_args=connect_args, pool_pre_ping=True)
    return _target(engine, url, nullcontext_factory)


def _create(url: URL, **kwargs: Any) -> Engine:
    shown = render_url(url)
    # Errors are raised outside the except blocks so that the foreign exception is neither
    # cause nor context of the StoreError.
    try:
        # hide_parameters: a failed statement's message must not carry a batch of rows.
        return create_engine(url, hide_parameters=True, **kwargs)
    except NoSuchModuleError:
        problem = f"unknown database dialect {url.drivername!r}"
    except ImportError as exc:
        problem = (
            f"the database driver is not installed ({exc.name}); "
            "for PostgreSQL install loom-store[postgres]"
        )
    except (ArgumentError, TypeError, ValueError) as exc:
        problem = Redactor(url)(str(exc))
    raise StoreError(f"cannot open store {shown}: {problem}")


def _target(
    engine: Engine,
    url: URL,
    serialize: Callable[[], contextlib.AbstractContextManager[Any]],
    *,
    wal: bool = False,
) -> StoreTarget:
    return StoreTarget(
        engine=engine,
        write_engine=engine.execution_options(**{WRITE_OPTION: True}),
        url=render_url(url),
        dialect=engine.dialect.name,
        redact=Redactor(url),
        serialize=serialize,
        wal=wal,
    )


def nullcontext_factory() -> contextlib.AbstractContextManager[None]:
    """No serialization: the pool hands each thread its own connection."""
    return contextlib.nullcontext()


def _install_sqlite_hooks(engine: Engine, busy_timeout_s: float, *, wal: bool) -> None:
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
