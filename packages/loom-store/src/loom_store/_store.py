"""``ResultStore``: the result cache and run registry over SQLAlchemy Core."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from loom_protocol import LoomUsageError, check_int, check_non_empty_string

from ._jobs import JobTracker
from ._leases import WorkerLeases
from ._queries import (
    check_ids,
    distinct_by_seek,
    error_code,
    page_query,
    task_filter,
)
from ._rows import STATUSES, ResultRow, TaskStats, row_from_values
from ._runs import RunRegistry
from ._schema import results_table, runs_table
from ._writer import StoreWriter

__all__ = ["GET_MANY_CHUNK", "ResultStore"]

#: Ids per ``get_many`` query: far below every backend's bound-parameter limit (SQLite's
#: historical 999) while large enough that a query's fixed cost is shared by many rows.
GET_MANY_CHUNK = 500

_COLUMNS = tuple(results_table.c)
# _row_from_db builds a ResultRow positionally from a row of loom_results.
if tuple(c.name for c in _COLUMNS) != tuple(ResultRow.__dataclass_fields__):  # pragma: no cover
    raise RuntimeError("loom_results columns and ResultRow fields are out of order")


def _row_from_db(values: Sequence[Any]) -> ResultRow:
    # Column order of loom_results is the field order of ResultRow.
    return row_from_values(values)


class ResultStore(RunRegistry, JobTracker, WorkerLeases):
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
        StoreError: the database cannot be used from here: the folder of a SQLite file does
            not exist, the driver is not installed, the server is unreachable or refuses the
            login, or the database was written by a newer (or unknown) schema version.
        LoomUsageError: ``target`` or ``busy_timeout_s`` is not usable: not a path or URL,
            a URL that does not parse, or a database other than SQLite and PostgreSQL (each
            database is a module of ``loom_store.dialects``).
    """

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
        check_non_empty_string("task_name", task_name)
        check_non_empty_string("config_fp", config_fp)
        ids = check_ids(task_ids)
        found: dict[str, ResultRow] = {}
        if not ids:
            return found
        with self._op("get_many"), self._t.engine.connect() as conn:
            for start in range(0, len(ids), GET_MANY_CHUNK):
                chunk = ids[start : start + GET_MANY_CHUNK]
                for row in self._d.select_rows(conn, task_name, config_fp, chunk):
                    found[row.task_id] = row
        return found

    def get_hits(self, task_name: str, task_ids: Sequence[str], config_fp: str) -> str:
        """The engine's cache read: the hits among ``task_ids`` as one JSON array text.

        The rows of :meth:`get_many` that have data (succeeded, of ``config_fp``), each a
        :class:`CachedHit` array ``[position, data, usage, raw_output, reasoning, attempts,
        latency_ms, model]``: ``position`` is the index of the hit's id in ``task_ids`` (an id
        given twice yields two elements), ``data`` and ``usage`` the JSON values stored. A
        caller validates a whole chunk in one pass
        (``TypeAdapter(list[CachedHit[T]]).validate_json``) and matches hits to its inputs by
        position. The database builds the text itself, in one query whatever the number of
        ids: the fastest way to read many hits (on SQLite the query runs without the GIL).

        The stored ``data`` and ``usage`` texts are spliced in as they are: a row whose text
        is not JSON makes the whole array invalid, which the caller's parse reports (asking
        again for fewer ids then tells the rows apart).
        """
        check_non_empty_string("task_name", task_name)
        check_non_empty_string("config_fp", config_fp)
        ids = check_ids(task_ids, dedupe=False)  # positions refer to the caller's list
        if not ids:
            return "[]"
        with self._op("get_hits"), self._t.engine.connect() as conn:
            text = self._d.select_hits(conn, task_name, config_fp, ids)
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
            self._d.upsert(conn, list(latest.values()), datetime.now(UTC))
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
        check_non_empty_string("task_name", task_name)
        if config_fp is not None:
            check_non_empty_string("config_fp", config_fp)
        if status is not None and status not in STATUSES:
            raise LoomUsageError(f"status must be 'succeeded', 'failed' or None, got {status!r}")
        check_int("batch_size", batch_size, 1)
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
        check_non_empty_string("task_name", task_name)
        if config_fp is not None:
            check_non_empty_string("config_fp", config_fp)
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
        check_non_empty_string("task_name", task_name)
        if config_fp is not None:
            check_non_empty_string("config_fp", config_fp)
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

    def writer(self, *, max_batch: int = 2000) -> StoreWriter:
        """Start a :class:`StoreWriter` on this store (closed with the store)."""
        return StoreWriter(self, max_batch=max_batch)
