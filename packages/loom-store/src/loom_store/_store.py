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

from sqlalchemy import func, select
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from loom_protocol import LoomError, LoomUsageError, StoreError, canonical_json

from ._checkpoint import WalCheckpointer
from ._connect import StoreTarget, open_target
from ._hotpath import hot_path_for
from ._migrate import prepare_schema
from ._queries import (
    OTHER_CONFIGS,
    check_ids,
    check_name,
    config_infos,
    distinct_by_seek,
    error_code,
    insert_run_statement,
    page_query,
    task_filter,
)
from ._rows import (
    STATUSES,
    CachedHit,
    ConfigInfo,
    ResultRow,
    RunRecord,
    TaskStats,
    row_from_values,
)
from ._schema import (
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
    """Where Loom keeps every task's result, keyed by (task name, configuration, task id).

    Every configuration a task name is run with keeps its own rows, so switching back to an
    earlier configuration is served from the store. Within one configuration a failure never
    replaces a success (a success replaces a failure). A store written by an older schema
    (loom-store 0.1) is upgraded in place when it is opened; see ``docs/store.md``.

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
            self._insert_run = insert_run_statement(self._t.dialect, self.url)
            self._hot = hot_path_for(self._t.engine.dialect)
            prepare_schema(self._t, self._wrap)
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
        check_name("task_name", task_name)
        check_name("config_fp", config_fp)
        ids = check_ids(task_ids)
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
        check_name("task_name", task_name)
        check_name("config_fp", config_fp)
        ids = check_ids(task_ids)
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
        check_name("task_name", task_name)
        check_name("config_fp", config_fp)
        ids = check_ids(task_ids, dedupe=False)  # positions refer to the caller's list
        if not ids:
            return "[]"
        with self._op("get_hits_json"), self._t.engine.connect() as conn:
            text = self._hot.select_hits_json(conn, task_name, config_fp, ids)
        return "[]" if text is None else text

    def put_many(self, rows: Sequence[ResultRow]) -> None:
        """Insert or overwrite ``rows`` in one transaction (one dialect-native upsert).

        A row with the key (task_name, config_fp, task_id) of an existing row replaces it,
        keeping the original ``created_at``, unless the stored row succeeded and the new one
        failed: a failure never replaces a success (it is dropped). When the same key appears
        twice in ``rows`` the same rule applies in order: the last wins, but a failure never
        displaces a success given before it. ``created_at``/``updated_at`` given on the rows
        are ignored: the store sets them.
        """
        if isinstance(rows, ResultRow):
            raise LoomUsageError("put_many takes a sequence of ResultRow; wrap a single row")
        latest: dict[tuple[str, str, str], ResultRow] = {}
        for row in rows:
            if not isinstance(row, ResultRow):
                raise LoomUsageError(f"put_many takes ResultRow items, got {type(row).__name__}")
            # PostgreSQL's ON CONFLICT refuses to touch one row twice in one statement.
            key = (row.task_name, row.config_fp, row.task_id)
            if row.status == "failed":
                kept = latest.get(key)
                if kept is not None and kept.status == "succeeded":
                    continue
            latest[key] = row
        if not latest:
            return
        with self._op("put_many"), self._t.write_engine.begin() as conn:
            self._hot.upsert(conn, list(latest.values()), datetime.now(UTC))
        if self._checkpointer is not None:
            self._checkpointer.note_write()

    def iter_results(
        self,
        task_name: str,
        status: str | None = None,
        *,
        config_fp: str | None = None,
        batch_size: int = 1000,
    ) -> Iterator[ResultRow]:
        """Stream a task's rows, ``batch_size`` rows per query.

        With ``config_fp`` the rows of that configuration, in task id order; without it the
        rows of every configuration, in (config_fp, task_id) order. Pages are read by keyset
        on the primary key, each in its own short read, so memory stays bounded and no
        snapshot is held open between pages; rows written meanwhile may or may not appear.

        Args:
            task_name: The task whose rows to read.
            status: ``"succeeded"``, ``"failed"`` or ``None`` for both.
            config_fp: The configuration whose rows to read; ``None`` for all.
            batch_size: Rows fetched per query.
        """
        check_name("task_name", task_name)
        if config_fp is not None:
            check_name("config_fp", config_fp)
        if status is not None and status not in STATUSES:
            raise LoomUsageError(f"status must be 'succeeded', 'failed' or None, got {status!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise LoomUsageError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self._check_open("iter_results")
        pages = self._pages("iter_results", _COLUMNS, task_name, config_fp, status, batch_size)
        return (_row_from_db(values) for page in pages for values in page)

    def _pages(
        self,
        action: str,
        columns: Sequence[Any],
        task_name: str,
        config_fp: str | None,
        status: str | None,
        batch_size: int,
    ) -> Iterator[Sequence[Sequence[Any]]]:
        """Pages of ``columns`` (which include config_fp and task_id) in key order."""
        config_at = list(columns).index(results_table.c.config_fp)
        task_id_at = list(columns).index(results_table.c.task_id)
        after: tuple[str, str] | None = None
        while True:
            stmt = page_query(list(columns), task_name, config_fp, status, after, batch_size)
            with self._op(action), self._t.engine.connect() as conn:
                page = conn.execute(stmt).all()
            if page:
                yield page
            if len(page) < batch_size:
                return
            after = (page[-1][config_at], page[-1][task_id_at])

    def stats(self, task_name: str, config_fp: str | None = None) -> TaskStats:
        """Count a task's rows: total, succeeded, failed, failures by error code, configs.

        Args:
            task_name: The task whose rows to count.
            config_fp: Count only this configuration's rows; ``None`` for all of them.
        """
        check_name("task_name", task_name)
        if config_fp is not None:
            check_name("config_fp", config_fp)
        c = results_table.c
        counts = {"succeeded": 0, "failed": 0}
        fps: set[str] = set()
        stmt = select(c.status, c.config_fp, func.count()).where(*task_filter(task_name, config_fp))
        with self._op("stats"), self._t.engine.connect() as conn:
            for status, fp, n in conn.execute(stmt.group_by(c.config_fp, c.status)):
                counts[status] = counts.get(status, 0) + int(n)
                fps.add(fp)
        by_code: dict[str, int] = {}
        if counts["failed"]:
            columns = (c.error, c.config_fp, c.task_id)
            for page in self._pages("stats", columns, task_name, config_fp, "failed", 1000):
                for error, _fp, _task_id in page:
                    code = error_code(error)
                    by_code[code] = by_code.get(code, 0) + 1
        return TaskStats(
            task_name=task_name,
            total=counts["succeeded"] + counts["failed"],
            succeeded=counts["succeeded"],
            failed=counts["failed"],
            failures_by_code=dict(sorted(by_code.items())),
            config_fps=tuple(sorted(fps)),
            config_fp=config_fp,
        )

    def task_names(self) -> list[str]:
        """Every task name with results or registered runs, sorted."""
        names: set[str] = set()
        with self._op("task_names"), self._t.engine.connect() as conn:
            for column in (results_table.c.task_name, runs_table.c.task_name):
                names.update(distinct_by_seek(conn, column))
        return sorted(names)

    def delete(self, task_name: str, config_fp: str | None = None) -> int:
        """Delete a task's results and its run registry, of one configuration or of all.

        Args:
            task_name: The task whose rows and runs to delete.
            config_fp: Delete only this configuration's rows and registration; ``None`` for
                every configuration of the task.

        Returns:
            The number of rows deleted (results plus runs).
        """
        check_name("task_name", task_name)
        if config_fp is not None:
            check_name("config_fp", config_fp)
        r = runs_table.c
        runs_where = [r.task_name == task_name]
        if config_fp is not None:
            runs_where.append(r.config_fp == config_fp)
        with self._op("delete"), self._t.write_engine.begin() as conn:
            n = conn.execute(
                results_table.delete().where(*task_filter(task_name, config_fp))
            ).rowcount
            n += conn.execute(runs_table.delete().where(*runs_where)).rowcount
        return int(n)

    # -- runs ----------------------------------------------------------------------------

    def register_run(self, task_name: str, config_fp: str, config: Mapping[str, Any]) -> bool:
        """Record that ``task_name`` runs with the configuration ``config_fp``, now.

        The first registration stores ``config`` and ``created_at``; every registration sets
        ``last_run_at`` (which :meth:`latest_config` reads). Credentials in ``config`` (keys
        such as ``api_key``, ``Authorization``, ``token``, ``secret``, ``password``, at any
        depth, and URL passwords) are replaced by ``"***"`` before it is written.

        Returns:
            True when this (task_name, config_fp) was not registered before.
        """
        check_name("task_name", task_name)
        check_name("config_fp", config_fp)
        if not isinstance(config, Mapping):
            raise LoomUsageError(f"config must be a mapping, got {type(config).__name__}")
        try:
            config_json = canonical_json(scrub_config(config))
        except (TypeError, ValueError) as exc:
            raise LoomUsageError(f"register_run: config is not JSON: {exc}") from None
        now = datetime.now(UTC)
        params = {
            "task_name": task_name,
            "config_fp": config_fp,
            "config": config_json,
            "created_at": now,
            "last_run_at": now,
        }
        c = runs_table.c
        touch = (
            runs_table.update()
            .where(c.task_name == task_name, c.config_fp == config_fp)
            .values(last_run_at=now)
        )
        with self._op("register_run"), self._t.write_engine.begin() as conn:
            if self._t.engine.dialect.insert_returning:
                # psycopg reports no rowcount for INSERT … ON CONFLICT DO NOTHING.
                stmt = self._insert_run.returning(c.config_fp)
                inserted = conn.execute(stmt, params).first() is not None
            else:
                inserted = conn.execute(self._insert_run, params).rowcount == 1
            if not inserted:
                conn.execute(touch)
        return inserted

    def runs(self, task_name: str) -> list[RunRecord]:
        """The configurations registered for ``task_name``, oldest first."""
        check_name("task_name", task_name)
        c = runs_table.c
        stmt = (
            select(c.task_name, c.config_fp, c.config, c.created_at, c.last_run_at)
            .where(c.task_name == task_name)
            .order_by(c.created_at, c.config_fp)
        )
        with self._op("runs"), self._t.engine.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            RunRecord(
                task_name=name,
                config_fp=fp,
                config=json.loads(cfg),
                created_at=at,
                last_run_at=last,
            )
            for name, fp, cfg, at, last in rows
        ]

    def latest_config(self, task_name: str) -> str | None:
        """The configuration ``task_name`` was most recently run with.

        The registered configuration with the latest ``last_run_at``; when none is
        registered (rows written through ``put_many`` alone, or a 0.1 store whose registry is
        empty), the configuration whose rows were written last; ``None`` when the task name
        has neither. It is always the last of :meth:`configs`.
        """
        check_name("task_name", task_name)
        c, r = runs_table.c, results_table.c
        registered = (
            select(c.config_fp)
            .where(c.task_name == task_name)
            .order_by(c.last_run_at.desc(), c.created_at.desc(), c.config_fp.desc())
            .limit(1)
        )
        written = (
            select(r.config_fp)
            .where(r.task_name == task_name)
            .order_by(r.updated_at.desc(), r.config_fp.desc())
            .limit(1)
        )
        with self._op("latest_config"), self._t.engine.connect() as conn:
            found = conn.execute(registered).scalar_one_or_none()
            if found is None:
                found = conn.execute(written).scalar_one_or_none()
        return found

    def configs(self, task_name: str) -> list[ConfigInfo]:
        """Every configuration of ``task_name``: registered ones and ones that have rows.

        Each :class:`ConfigInfo` carries the stored config (``None`` if never registered),
        ``created_at``/``last_run_at`` of its registration, when its rows were last written,
        and its row counts. Ordered by last activity, oldest first: configurations never
        registered (by their last row write), then registered ones (by ``last_run_at``), so
        the last one is :meth:`latest_config`. One scan of the task's rows for the counts.
        """
        check_name("task_name", task_name)
        c, r = runs_table.c, results_table.c
        run_stmt = select(c.config_fp, c.config, c.created_at, c.last_run_at).where(
            c.task_name == task_name
        )
        count_stmt = (
            select(r.config_fp, r.status, func.count(), func.max(r.updated_at))
            .where(r.task_name == task_name)
            .group_by(r.config_fp, r.status)
        )
        with self._op("configs"), self._t.engine.connect() as conn:
            registered = {fp: (cfg, at, last) for fp, cfg, at, last in conn.execute(run_stmt)}
            counted = conn.execute(count_stmt).all()
        return config_infos(task_name, registered, counted)

    def other_configs(self, task_name: str, config_fp: str) -> list[str]:
        """Config fingerprints other than ``config_fp`` that have rows under ``task_name``.

        Their rows are kept: switching back to one of them is served from the store. The
        engine tells the user once when this is not empty.
        """
        check_name("task_name", task_name)
        check_name("config_fp", config_fp)
        params = {"task_name": task_name, "config_fp": config_fp}
        with self._op("other_configs"), self._t.engine.connect() as conn:
            return list(conn.execute(OTHER_CONFIGS, params).scalars())

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
