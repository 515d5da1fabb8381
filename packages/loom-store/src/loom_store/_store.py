"""``ResultStore``: the result cache and run registry over SQLAlchemy Core."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import threading
import weakref
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.sql.dml import Insert

from loom_protocol import LoomError, LoomUsageError, StoreError, canonical_json

from ._checkpoint import WalCheckpointer
from ._connect import StoreTarget, open_target
from ._hotpath import hot_path_for
from ._rows import STATUSES, CachedHit, ResultRow, RunRecord, TaskStats, row_from_values
from ._schema import (
    SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
    meta_table,
    metadata,
    results_table,
    runs_table,
)
from ._secrets import scrub_config

if TYPE_CHECKING:
    from ._writer import StoreWriter

__all__ = ["GET_MANY_CHUNK", "ResultStore", "RowRejectedError"]

#: Ids per ``get_many`` query: far below every backend's bound-parameter limit (SQLite's
#: historical 999) while large enough that a query's fixed cost is shared by many rows.
GET_MANY_CHUNK = 500

_ROW_DETAIL_RE = re.compile(r"DETAIL:\s+Failing row contains \(.*\)\.?", re.DOTALL)
_MAX_DETAIL = 2000

# Serializes schema creation across processes on PostgreSQL (SQLite has BEGIN IMMEDIATE).
_PG_SCHEMA_LOCK_KEY = 0x4C4F4F4D  # "LOOM"

_COLUMNS = tuple(results_table.c)
# _row_from_db builds a ResultRow positionally from a row of loom_results.
if tuple(c.name for c in _COLUMNS) != tuple(ResultRow.__dataclass_fields__):  # pragma: no cover
    raise RuntimeError("loom_results columns and ResultRow fields are out of order")


class RowRejectedError(StoreError):
    """The database refused the rows themselves (a constraint, a value it cannot store).

    Unlike a lost connection or a lock timeout, retrying other rows may succeed; the writer
    uses this to isolate the offending submission from the rest of its group.
    """


def _row_from_db(values: Sequence[Any]) -> ResultRow:
    # Column order of loom_results is the field order of ResultRow.
    return row_from_values(values)


class ResultStore:
    """Where Loom keeps every task's result, keyed by (task name, task id).

    A path (or ``":memory:"``) opens a SQLite database; a string containing ``://`` is an
    SQLAlchemy URL (``postgresql+psycopg://user:pass@host/db`` for several processes or
    machines sharing one run). The tables are created on first use. Safe to share between
    threads; several processes may open the same SQLite file or PostgreSQL database.

    Every failure is raised as :class:`~loom_protocol.StoreError` with a message free of
    passwords; misuse (a bad argument) as :class:`~loom_protocol.LoomUsageError`.

    Args:
        target: A SQLite file path, ``":memory:"``, or an SQLAlchemy URL.
        busy_timeout_s: How long a SQLite connection waits for another connection's write
            lock before failing.

    Raises:
        StoreError: the folder of a SQLite file does not exist, the URL is invalid or
            unreachable, the dialect is neither SQLite nor PostgreSQL, or the database was
            written by a newer (or unknown) schema version.
        LoomUsageError: ``target`` or ``busy_timeout_s`` is not usable.
    """

    def __init__(
        self, target: str | os.PathLike[str] = ".loom.db", *, busy_timeout_s: float = 30.0
    ) -> None:
        if (
            isinstance(busy_timeout_s, bool)
            or not isinstance(busy_timeout_s, int | float)
            or not math.isfinite(busy_timeout_s)
            or busy_timeout_s <= 0
        ):
            raise LoomUsageError(
                f"busy_timeout_s must be a positive number of seconds, got {busy_timeout_s!r}"
            )
        self._busy_timeout_s = float(busy_timeout_s)
        self._t: StoreTarget = open_target(target, self._busy_timeout_s)
        self._closed = False
        self._close_lock = threading.Lock()
        self._writers: weakref.WeakSet[StoreWriter] = weakref.WeakSet()
        try:
            self._insert_run = _insert_run_statement(self._t.dialect, self.url)
            self._hot = hot_path_for(self._t.engine.dialect)
            self._prepare_schema()
            self._checkpointer = (
                WalCheckpointer(self._t.engine, self._busy_timeout_s) if self._t.wal else None
            )
        except BaseException:
            self._t.engine.dispose()
            raise

    # -- facts ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The store's URL with its password masked (safe to print or log)."""
        return self._t.url

    @property
    def dialect(self) -> str:
        """The database kind: ``"sqlite"`` or ``"postgresql"``."""
        return self._t.dialect

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ""
        return f"ResultStore({self.url!r}{state})"

    # -- results -------------------------------------------------------------------------

    def get_many(
        self, task_name: str, task_ids: Sequence[str], config_fp: str
    ) -> dict[str, ResultRow]:
        """Look up cached results: the succeeded rows of ``config_fp`` among ``task_ids``.

        Failed rows and rows of other configurations are never returned, so a re-run
        recomputes them. Ids are queried in chunks of :data:`GET_MANY_CHUNK`, one query each.

        Returns:
            The found rows by task id (ids not found are absent).
        """
        _check_name("task_name", task_name)
        _check_name("config_fp", config_fp)
        ids = _check_ids(task_ids)
        found: dict[str, ResultRow] = {}
        if not ids:
            return found
        with self._op("get_many"), self._t.engine.connect() as conn:
            for start in range(0, len(ids), GET_MANY_CHUNK):
                chunk = ids[start : start + GET_MANY_CHUNK]
                for row in self._hot.select_many(conn, task_name, config_fp, chunk):
                    found[row.task_id] = row
        return found

    def get_hits(self, task_name: str, task_ids: Sequence[str], config_fp: str) -> list[CachedHit]:
        """The lean twin of :meth:`get_many` for serving cache hits.

        The same rows (succeeded, of ``config_fp``, among ``task_ids``), but only the columns
        a cached result needs, as :class:`CachedHit` tuples in no particular order.
        """
        _check_name("task_name", task_name)
        _check_name("config_fp", config_fp)
        ids = _check_ids(task_ids)
        hits: list[CachedHit] = []
        if not ids:
            return hits
        with self._op("get_hits"), self._t.engine.connect() as conn:
            for start in range(0, len(ids), GET_MANY_CHUNK):
                chunk = ids[start : start + GET_MANY_CHUNK]
                hits.extend(self._hot.select_hits(conn, task_name, config_fp, chunk))
        return hits

    def get_hits_json(self, task_name: str, task_ids: Sequence[str], config_fp: str) -> str:
        """The hits of :meth:`get_hits` that have data, as one JSON array text.

        Each element is ``[position, data, usage, raw_output, reasoning, attempts,
        latency_ms, model]``: ``position`` is the index of the hit's id in ``task_ids`` (an
        id given twice yields two elements), and ``data`` and ``usage`` are the JSON values
        stored. A caller can so validate a whole chunk in one pass
        (``pydantic.TypeAdapter.validate_json``) and match hits to its inputs by position,
        instead of handling rows and ids one by one. The database builds the text itself,
        in one query whatever the number of ids: the fastest way to read many hits (on
        SQLite the whole query runs without holding the GIL).

        The stored ``data`` and ``usage`` texts are spliced in as they are: a row whose text
        is not JSON makes the whole array invalid, which the caller's parse reports
        (:meth:`get_hits` then tells the rows apart).
        """
        _check_name("task_name", task_name)
        _check_name("config_fp", config_fp)
        ids = _check_ids(task_ids, dedupe=False)  # positions refer to the caller's list
        if not ids:
            return "[]"
        with self._op("get_hits_json"), self._t.engine.connect() as conn:
            text = self._hot.select_hits_json(conn, task_name, config_fp, ids)
        return "[]" if text is None else text

    def put_many(self, rows: Sequence[ResultRow]) -> None:
        """Insert or overwrite ``rows`` in one transaction (one dialect-native upsert).

        A row with the key (task_name, task_id) of an existing row replaces it, keeping the
        original ``created_at``. When the same key appears twice in ``rows`` the last wins.
        ``created_at``/``updated_at`` given on the rows are ignored: the store sets them.
        """
        if isinstance(rows, ResultRow):
            raise LoomUsageError("put_many takes a sequence of ResultRow; wrap a single row")
        latest: dict[tuple[str, str], ResultRow] = {}
        for row in rows:
            if not isinstance(row, ResultRow):
                raise LoomUsageError(f"put_many takes ResultRow items, got {type(row).__name__}")
            # PostgreSQL's ON CONFLICT refuses to touch one row twice in one statement.
            latest[(row.task_name, row.task_id)] = row
        if not latest:
            return
        with self._op("put_many"), self._t.write_engine.begin() as conn:
            self._hot.upsert(conn, list(latest.values()), datetime.now(UTC))
        if self._checkpointer is not None:
            self._checkpointer.note_write()

    def iter_results(
        self, task_name: str, status: str | None = None, *, batch_size: int = 1000
    ) -> Iterator[ResultRow]:
        """Stream a task's rows in task id order, ``batch_size`` rows per query.

        Pages are read by keyset (``task_id > last``), each in its own short read, so memory
        stays bounded and no snapshot is held open between pages; rows written meanwhile
        may or may not appear.

        Args:
            task_name: The task whose rows to read.
            status: ``"succeeded"``, ``"failed"`` or ``None`` for both.
            batch_size: Rows fetched per query.
        """
        _check_name("task_name", task_name)
        if status is not None and status not in STATUSES:
            raise LoomUsageError(f"status must be 'succeeded', 'failed' or None, got {status!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise LoomUsageError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self._check_open("iter_results")
        return self._pages(task_name, status, batch_size)

    def _pages(self, task_name: str, status: str | None, batch_size: int) -> Iterator[ResultRow]:
        last: str | None = None
        while True:
            stmt = _page_query(list(_COLUMNS), task_name, status, last, batch_size)
            with self._op("iter_results"), self._t.engine.connect() as conn:
                page = conn.execute(stmt).all()
            for values in page:
                yield _row_from_db(values)
            if len(page) < batch_size:
                return
            last = page[-1][1]

    def stats(self, task_name: str) -> TaskStats:
        """Count a task's rows: total, succeeded, failed, failures by error code, configs."""
        _check_name("task_name", task_name)
        c = results_table.c
        counts = {"succeeded": 0, "failed": 0}
        fps: set[str] = set()
        stmt = (
            select(c.status, c.config_fp, func.count())
            .where(c.task_name == task_name)
            .group_by(c.status, c.config_fp)
        )
        with self._op("stats"), self._t.engine.connect() as conn:
            for status, fp, n in conn.execute(stmt):
                counts[status] = counts.get(status, 0) + int(n)
                fps.add(fp)
        by_code: dict[str, int] = {}
        if counts["failed"]:
            last: str | None = None
            while True:
                page_stmt = _page_query([c.task_id, c.error], task_name, "failed", last, 1000)
                with self._op("stats"), self._t.engine.connect() as conn:
                    page = conn.execute(page_stmt).all()
                for _task_id, error in page:
                    code = _error_code(error)
                    by_code[code] = by_code.get(code, 0) + 1
                if len(page) < 1000:
                    break
                last = page[-1][0]
        return TaskStats(
            task_name=task_name,
            total=counts["succeeded"] + counts["failed"],
            succeeded=counts["succeeded"],
            failed=counts["failed"],
            failures_by_code=dict(sorted(by_code.items())),
            config_fps=tuple(sorted(fps)),
        )

    def task_names(self) -> list[str]:
        """Every task name with results or registered runs, sorted."""
        names: set[str] = set()
        with self._op("task_names"), self._t.engine.connect() as conn:
            for column in (results_table.c.task_name, runs_table.c.task_name):
                names.update(_distinct_by_seek(conn, column))
        return sorted(names)

    def delete(self, task_name: str) -> int:
        """Delete a task's results and its run registry.

        Returns:
            The number of rows deleted (results plus runs).
        """
        _check_name("task_name", task_name)
        with self._op("delete"), self._t.write_engine.begin() as conn:
            n = conn.execute(
                results_table.delete().where(results_table.c.task_name == task_name)
            ).rowcount
            n += conn.execute(
                runs_table.delete().where(runs_table.c.task_name == task_name)
            ).rowcount
        return int(n)

    # -- runs ----------------------------------------------------------------------------

    def register_run(self, task_name: str, config_fp: str, config: Mapping[str, Any]) -> bool:
        """Record that ``task_name`` runs with the configuration ``config_fp``.

        Credentials in ``config`` (keys such as ``api_key``, ``Authorization``, ``token``,
        ``secret``, ``password``, at any depth, and URL passwords) are replaced by ``"***"``
        before it is written.

        Returns:
            True when this (task_name, config_fp) was not registered before.
        """
        _check_name("task_name", task_name)
        _check_name("config_fp", config_fp)
        if not isinstance(config, Mapping):
            raise LoomUsageError(f"config must be a mapping, got {type(config).__name__}")
        try:
            config_json = canonical_json(scrub_config(config))
        except (TypeError, ValueError) as exc:
            raise LoomUsageError(f"register_run: config is not JSON: {exc}") from None
        params = {
            "task_name": task_name,
            "config_fp": config_fp,
            "config": config_json,
            "created_at": datetime.now(UTC),
        }
        with self._op("register_run"), self._t.write_engine.begin() as conn:
            if self._t.engine.dialect.insert_returning:
                # psycopg reports no rowcount for INSERT … ON CONFLICT DO NOTHING.
                stmt = self._insert_run.returning(runs_table.c.config_fp)
                return conn.execute(stmt, params).first() is not None
            return conn.execute(self._insert_run, params).rowcount == 1

    def runs(self, task_name: str) -> list[RunRecord]:
        """The configurations registered for ``task_name``, oldest first."""
        _check_name("task_name", task_name)
        c = runs_table.c
        stmt = (
            select(c.task_name, c.config_fp, c.config, c.created_at)
            .where(c.task_name == task_name)
            .order_by(c.created_at, c.config_fp)
        )
        with self._op("runs"), self._t.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            RunRecord(task_name=name, config_fp=fp, config=json.loads(cfg), created_at=at)
            for name, fp, cfg, at in rows
        ]

    def other_configs(self, task_name: str, config_fp: str) -> list[str]:
        """Config fingerprints other than ``config_fp`` that have rows under ``task_name``.

        The engine warns once when this is not empty: the task name is being reused with a
        changed configuration, so the rows of the old one will not be served.
        """
        _check_name("task_name", task_name)
        _check_name("config_fp", config_fp)
        params = {"task_name": task_name, "config_fp": config_fp}
        with self._op("other_configs"), self._t.engine.connect() as conn:
            return list(conn.execute(_OTHER_CONFIGS, params).scalars())

    # -- writer and lifetime -------------------------------------------------------------

    def writer(self, *, max_batch: int = 2000) -> StoreWriter:
        """Start a :class:`StoreWriter` on this store (closed with the store)."""
        from ._writer import StoreWriter

        return StoreWriter(self, max_batch=max_batch)

    def close(self) -> None:
        """Drain and stop this store's writers, then release every connection. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            try:
                for w in list(self._writers):
                    w.close()
            finally:
                self._closed = True
                if self._checkpointer is not None:
                    self._checkpointer.stop()
                self._t.engine.dispose()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------

    def _attach_writer(self, writer: StoreWriter) -> None:
        self._check_open("start a writer")
        self._writers.add(writer)

    def _check_open(self, action: str) -> None:
        if self._closed:
            raise StoreError(f"{action}: the store {self.url} is closed")

    @contextlib.contextmanager
    def _op(self, action: str) -> Iterator[None]:
        """Run one operation: refuse a closed store, wrap every foreign exception."""
        self._check_open(action)
        error: StoreError | None = None
        try:
            with self._t.serialize():
                yield
        except LoomError:
            raise
        except Exception as exc:
            error = self._wrap(action, exc)
        if error is not None:
            # Raised outside the except block: the driver's exception (its text unredacted)
            # is neither the cause nor the context of what the caller sees.
            raise error

    def _wrap(self, action: str, exc: BaseException) -> StoreError:
        cause: BaseException = exc
        if isinstance(exc, DBAPIError) and exc.orig is not None:
            cause = exc.orig
        detail = " ".join(str(cause).split()) or type(cause).__name__
        # PostgreSQL quotes the whole offending row ("DETAIL: Failing row contains (…)"):
        # a result's content does not belong in an error message or a log line.
        detail = _ROW_DETAIL_RE.sub("DETAIL: (the row is not shown)", detail)
        if len(detail) > _MAX_DETAIL:
            detail = detail[: _MAX_DETAIL - 1] + "…"
        hint = ""
        if "database is locked" in detail:
            hint = (
                f" (waited busy_timeout_s={self._busy_timeout_s:g} s for another "
                "connection's write lock)"
            )
        message = f"{action} failed on store {self.url}: {type(cause).__name__}: {detail}{hint}"
        rejected = isinstance(exc, IntegrityError | DataError) or (
            not isinstance(exc, DBAPIError) and isinstance(exc, ValueError | TypeError)
        )
        kind = RowRejectedError if rejected else StoreError
        return kind(self._t.redact(message))

    def _prepare_schema(self) -> None:
        try:
            with self._t.serialize():
                with self._t.engine.connect() as conn:
                    version, complete = _read_version(conn)
                if version is not None:
                    self._check_version(version)
                if version is None or not complete:
                    with self._t.write_engine.begin() as conn:
                        if self.dialect == "postgresql":
                            conn.execute(
                                text("SELECT pg_advisory_xact_lock(:k)"),
                                {"k": _PG_SCHEMA_LOCK_KEY},
                            )
                        metadata.create_all(conn, checkfirst=True)
                        version = conn.execute(_SELECT_VERSION).scalar_one_or_none()
                        if version is None:
                            conn.execute(
                                meta_table.insert(),
                                {"key": SCHEMA_VERSION_KEY, "value": str(SCHEMA_VERSION)},
                            )
                        else:
                            self._check_version(version)
        except LoomError:
            raise
        except Exception as exc:
            error = self._wrap("opening", exc)
        else:
            return
        raise error

    def _check_version(self, found: str) -> None:
        try:
            number = int(found)
        except ValueError:
            number = None
        if number == SCHEMA_VERSION:
            return
        if number is not None and number > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.url} has schema version {number}, newer than version "
                f"{SCHEMA_VERSION} that this loom-store understands; upgrade loom-store"
            )
        raise StoreError(
            f"store {self.url} has an unknown schema version {found!r}; this loom-store "
            f"understands version {SCHEMA_VERSION}"
        )


# -- statements and helpers ------------------------------------------------------------------

_SELECT_VERSION = select(meta_table.c.value).where(meta_table.c.key == SCHEMA_VERSION_KEY)


def _insert_run_statement(dialect: str, url: str) -> Insert:
    """Insert-if-new of a run, in the dialect's own syntax."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
    else:
        raise StoreError(
            f"cannot open store {url}: dialect {dialect!r} is not supported; "
            "loom-store runs on SQLite and PostgreSQL"
        )
    return insert(runs_table).on_conflict_do_nothing(
        index_elements=[runs_table.c.task_name, runs_table.c.config_fp]
    )


def _read_version(conn: Connection) -> tuple[str | None, bool]:
    """The stored schema version (None when absent) and whether every table exists."""
    from sqlalchemy import inspect

    inspector = inspect(conn)
    present = {t.name for t in metadata.sorted_tables if inspector.has_table(t.name)}
    complete = len(present) == len(metadata.sorted_tables)
    if meta_table.name not in present:
        return None, complete
    return conn.execute(_SELECT_VERSION).scalar_one_or_none(), complete


def _page_query(
    columns: list[Any], task_name: str, status: str | None, after: str | None, limit: int
) -> Select[Any]:
    c = results_table.c
    stmt = select(*columns).where(c.task_name == task_name)
    if status is not None:
        stmt = stmt.where(c.status == status)
    if after is not None:
        stmt = stmt.where(c.task_id > after)
    return stmt.order_by(c.task_id).limit(limit)


def _distinct_by_seek(conn: Connection, column: Any) -> list[str]:
    """Distinct values of an indexed column by repeated index seeks (a loose index scan).

    ``SELECT DISTINCT`` would read every index entry; this costs one seek per distinct value,
    which keeps ``task_names()`` instant on millions of rows.
    """
    found: list[str] = []
    last: str | None = None
    while True:
        stmt = select(column)
        if last is not None:
            stmt = stmt.where(column > last)
        value = conn.execute(stmt.order_by(column).limit(1)).scalar_one_or_none()
        if value is None:
            return found
        found.append(value)
        last = value


# The distinct configs of the whole table by a loose index scan of ix_loom_results_config
# (one seek each, in one statement), kept when this task has a row with them (one probe
# each). Plain SQL understood alike by SQLite and PostgreSQL.
_OTHER_CONFIGS = text(
    """
    WITH RECURSIVE fps(fp) AS (
        SELECT (SELECT MIN(config_fp) FROM loom_results)
        UNION ALL
        SELECT (SELECT MIN(config_fp) FROM loom_results WHERE config_fp > fps.fp)
        FROM fps WHERE fps.fp IS NOT NULL
    )
    SELECT fp FROM fps
    WHERE fp IS NOT NULL AND fp <> :config_fp
      AND EXISTS (
          SELECT 1 FROM loom_results WHERE config_fp = fps.fp AND task_name = :task_name
      )
    ORDER BY fp
    """
)


def _error_code(error: str | None) -> str:
    if not error:
        return "unknown"
    try:
        code = json.loads(error).get("code")
    except (ValueError, AttributeError):
        return "unknown"
    return code if isinstance(code, str) and code else "unknown"


def _check_name(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise LoomUsageError(f"{name} must be a non-empty string, got {value!r}")


def _check_ids(task_ids: Sequence[str], *, dedupe: bool = True) -> list[str]:
    if isinstance(task_ids, str | bytes):
        raise LoomUsageError("task_ids must be a sequence of ids, not a single string")
    ids = list(dict.fromkeys(task_ids)) if dedupe else list(task_ids)
    for task_id in ids:
        if not isinstance(task_id, str):
            raise LoomUsageError(f"task ids must be strings, got {type(task_id).__name__}")
    return ids
