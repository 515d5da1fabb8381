"""The two statements on the engine's hot path, per dialect: the upsert and the cache lookup.

Everything else in the store goes through ordinary SQLAlchemy Core constructs. These two run
for every task, so they skip SQLAlchemy's per-row parameter and result processing (measured:
~27 µs per row of Python overhead on a 1 KB row, more than SQLite's own work) and hand plain
tuples to the driver. The SQL is built from the table definition's column names, so it cannot
drift from the schema.

* SQLite: ``executemany`` of ``INSERT … ON CONFLICT DO UPDATE`` (one prepared statement,
  re-executed per row inside one transaction); the lookup is ``task_name = ? AND config_fp = ?
  AND task_id IN (?, …)``, probes of the whole primary key (the only index of the table).
* PostgreSQL: one ``INSERT … SELECT FROM unnest(arrays) ON CONFLICT DO UPDATE`` per batch (one
  round trip whatever the batch size); the lookup probes the primary key once per id of
  ``unnest(array)`` through a LATERAL subquery, a plan no lack of statistics can change.

The key is (task_name, config_fp, task_id). Both upserts update a row only when the new one is
not a failure over a success (``_KEEP_SUCCESS``): within one configuration a failure never
replaces a success, and a success replaces a failure.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Dialect
from sqlalchemy.engine import Connection

from ._rows import CachedHit, ResultRow, row_from_values
from ._schema import results_table

__all__ = ["HotPath", "hot_path_for"]

_COLUMNS = [c.name for c in results_table.c]
_HIT_COLUMNS = list(CachedHit._fields)
_DATA_COLUMNS = _COLUMNS[:-2]  # all but created_at, updated_at
_TABLE = results_table.name


_KEY = ("task_name", "config_fp", "task_id")


def _on_conflict() -> str:
    """The upsert's conflict clause: replace every column but the key and ``created_at``,
    unless the stored row succeeded and the new one failed."""
    keep = {*_KEY, "created_at"}
    update = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c not in keep)
    return (
        f"ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET {update} "
        f"WHERE NOT ({_TABLE}.status = 'succeeded' AND excluded.status = 'failed')"
    )


def _row_values(row: ResultRow) -> tuple[Any, ...]:
    latency = row.latency_ms
    return (
        row.task_name,
        row.task_id,
        row.config_fp,
        row.status,
        row.data,
        row.raw_output,
        row.reasoning,
        row.error,
        row.input,
        row.usage,
        row.attempts,
        None if latency is None else float(latency),
        row.model,
    )


def _to_rows(
    records: Sequence[Sequence[Any]], stamp: Callable[[Any], datetime | None]
) -> list[ResultRow]:
    # Rows written by one transaction share their timestamps: parse each distinct one once.
    stamps: dict[Any, datetime | None] = {}
    rows = []
    build = row_from_values
    for values in records:
        created, updated = values[-2], values[-1]
        created_at = stamps.get(created, _MISSING)
        if created_at is _MISSING:
            created_at = stamps[created] = stamp(created)
        updated_at = stamps.get(updated, _MISSING)
        if updated_at is _MISSING:
            updated_at = stamps[updated] = stamp(updated)
        # Column order of loom_results is the field order of ResultRow.
        rows.append(build((*values[:-2], created_at, updated_at)))
    return rows


_MISSING: Any = object()


class HotPath:
    """Dialect-specific upsert and lookup of result rows on a SQLAlchemy connection."""

    def upsert(self, conn: Connection, rows: Sequence[ResultRow], now: datetime) -> None:
        """Write ``rows`` (distinct keys) stamped ``now`` on ``conn``'s open transaction."""
        raise NotImplementedError

    def select_many(
        self, conn: Connection, task_name: str, config_fp: str, ids: Sequence[str]
    ) -> list[ResultRow]:
        """The succeeded rows of ``config_fp`` among ``ids`` (one query)."""
        raise NotImplementedError

    def select_hits(
        self, conn: Connection, task_name: str, config_fp: str, ids: Sequence[str]
    ) -> list[CachedHit]:
        """The cache-hit columns of the same rows as :meth:`select_many` (one query)."""
        raise NotImplementedError

    def select_hits_json(
        self, conn: Connection, task_name: str, config_fp: str, ids: Sequence[str]
    ) -> str | None:
        """The hits among ``ids`` that have data, as one JSON array text (one query).

        Each element is ``[position, data, usage, raw_output, reasoning, attempts,
        latency_ms, model]``, ``position`` being the index of the row's id in ``ids`` (an id
        given twice yields two elements); ``None`` when nothing matched.
        """
        raise NotImplementedError


#: The columns after the position in an element of select_hits_json, in order.
_HIT_JSON_FIELDS = ("data", "usage", "raw_output", "reasoning", "attempts", "latency_ms", "model")


class _SQLiteHotPath(HotPath):
    def __init__(self) -> None:
        placeholders = ", ".join("?" for _ in _COLUMNS)
        self._upsert = (
            f"INSERT INTO {_TABLE} ({', '.join(_COLUMNS)}) VALUES ({placeholders}) {_on_conflict()}"
        )
        self._select_hits_json = self._select_json()

    @staticmethod
    @functools.lru_cache(maxsize=16)
    def _select(n: int, hits: bool = False) -> str:
        marks = ", ".join("?" for _ in range(n))
        columns = _HIT_COLUMNS if hits else _COLUMNS
        return (
            f"SELECT {', '.join(columns)} FROM {_TABLE} "
            f"WHERE task_name = ? AND config_fp = ? AND task_id IN ({marks}) "
            "AND status = 'succeeded'"
        )

    @staticmethod
    def _select_json() -> str:
        # One printf per row, not a chain of ||: each || copies the string built so far
        # (measured: 4.1 → 3.2 µs per id for the whole query). json_quote would render a REAL
        # with 15 significant digits; %!.17g keeps every bit of latency_ms.
        latency = (
            "CASE WHEN r.latency_ms IS NULL THEN 'null' ELSE printf('%!.17g', r.latency_ms) END"
        )
        element = (
            "printf('[%d,%s,%s,%s,%s,%d,%s,%s]', j.key, r.data, COALESCE(r.usage, 'null'), "
            f"json_quote(r.raw_output), json_quote(r.reasoning), r.attempts, {latency}, "
            "json_quote(r.model))"
        )
        # One statement, one step, whatever the number of ids (they arrive as one JSON array,
        # so no bound-parameter limit applies): SQLite builds the whole text without the GIL,
        # and the calling thread takes the GIL back once, not once per row. CROSS JOIN keeps
        # the ids as the outer loop: one primary-key probe per id.
        return (
            f"SELECT '[' || group_concat({element}, ',') || ']' "
            f"FROM json_each(?) AS j CROSS JOIN {_TABLE} AS r "
            "WHERE r.task_name = ? AND r.config_fp = ? AND r.task_id = j.value "
            "AND r.status = 'succeeded' AND r.data IS NOT NULL"
        )

    def upsert(self, conn: Connection, rows: Sequence[ResultRow], now: datetime) -> None:
        # The same text SQLAlchemy's DateTime stores on SQLite: naive UTC, microseconds.
        stamp = now.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        params = [(*_row_values(row), stamp, stamp) for row in rows]
        conn.exec_driver_sql(self._upsert, params)

    def select_many(
        self, conn: Connection, task_name: str, config_fp: str, ids: Sequence[str]
    ) -> list[ResultRow]:
        cursor = conn.exec_driver_sql(self._select(len(ids)), (task_name, config_fp, *ids))
        return _to_rows(cursor.fetchall(), _sqlite_stamp)

    def select_hits(
        self, conn: Connection, task_name: str, config_fp: str, ids: Sequence[str]
    ) -> list[CachedHit]:
        cursor = conn.exec_driver_sql(self._select(len(ids), True), (task_name, config_fp, *ids))
        return list(map(CachedHit._make, cursor.fetchall()))

    def select_hits_json(
        self, conn: Connection, task_name: str, config_fp: str, ids: Sequence[str]
    ) -> str | None:
        params = (_ids_json(ids), task_name, config_fp)
        text: str | None = conn.exec_driver_sql(self._select_hits_json, params).scalar()
        return text


_ids_json = json.JSONEncoder(separators=(",", ":")).encode


def _sqlite_stamp(value: Any) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


_PG_ARRAY_TYPES = {
    "attempts": "integer[]",
    "latency_ms": "double precision[]",
}


class _PostgresHotPath(HotPath):
    def __init__(self) -> None:
        arrays = ", ".join(f"%({c})s::{_PG_ARRAY_TYPES.get(c, 'text[]')}" for c in _DATA_COLUMNS)
        self._upsert = (
            f"INSERT INTO {_TABLE} ({', '.join(_COLUMNS)}) "
            f"SELECT u.*, %(now)s::timestamptz, %(now)s::timestamptz FROM unnest({arrays}) AS u "
            f"{_on_conflict()}"
        )
        # One primary-key probe per id: a LATERAL subquery with LIMIT is never flattened into
        # the outer query, and an equality on the whole key is served by the primary key
        # whatever the statistics say. (Plain ``task_id = ANY(…)`` with the config and status
        # conditions let a planner without statistics, on a fresh table, scan the whole task
        # or the whole config for every lookup.)
        self._select = self._lateral(_COLUMNS)
        self._select_hits = self._lateral(_HIT_COLUMNS)
        # data and usage are JSON texts already (the engine wrote them), spliced in as they
        # are; plain texts are quoted by to_json. A NULL data makes the element NULL (||
        # propagates it), which string_agg skips. float8 prints its shortest exact form.
        quoted = {c: f"COALESCE(to_json(h.{c})::text, 'null')" for c in _HIT_JSON_FIELDS}
        element = (
            "'[' || CAST(h._n - 1 AS TEXT) || ',' || h.data || ',' || COALESCE(h.usage, 'null') "
            f"|| ',' || {quoted['raw_output']} || ',' || {quoted['reasoning']} || ',' || "
            f"CAST(h.attempts AS TEXT) || ',' || {quoted['latency_ms']} || ',' || "
            f"{quoted['model']} || ']'"
        )
        self._select_hits_json = (
            f"SELECT '[' || string_agg({element}, ',') || ']' FROM ("
            f"{self._lateral(_HIT_JSON_FIELDS, ordinal=True)}) AS h"
        )

    @staticmethod
    def _lateral(columns: Sequence[str], *, ordinal: bool = False) -> str:
        # status is selected for the outer filter and dropped by the caller. With ``ordinal``,
        # the id's 1-based position in the array comes first, as _n.
        inner = ", ".join([*columns, "status AS _status"])
        selected = ", ".join(f"r.{c}" for c in columns)
        ids = "unnest(%(ids)s::text[]) AS i(id)"
        if ordinal:
            selected = f"i.n AS _n, {selected}"
            ids = "unnest(%(ids)s::text[]) WITH ORDINALITY AS i(id, n)"
        return (
            f"SELECT {selected} FROM {ids} CROSS JOIN LATERAL ("
            f"SELECT {inner} FROM {_TABLE} "
            "WHERE task_name = %(task_name)s AND config_fp = %(config_fp)s AND task_id = i.id "
            "LIMIT 1) AS r WHERE r._status = 'succeeded'"
        )

    def upsert(self, conn: Connection, rows: Sequence[ResultRow], now: datetime) -> None:
        columns = list(zip(*(_row_values(row) for row in rows), strict=True))
        params: dict[str, Any] = {
            name: list(values) for name, values in zip(_DATA_COLUMNS, columns, strict=True)
        }
        params["now"] = now
        conn.exec_driver_sql(self._upsert, params)

    def select_many(
        self, conn: Connection, task_name: str, config_fp: str, ids: Sequence[str]
    ) -> list[ResultRow]:
        params = {"task_name": task_name, "config_fp": config_fp, "ids": list(ids)}
        cursor = conn.exec_driver_sql(self._select, params)
        return _to_rows(cursor.fetchall(), _aware)

    def select_hits(
        self, conn: Connection, task_name: str, config_fp: str, ids: Sequence[str]
    ) -> list[CachedHit]:
        params = {"task_name": task_name, "config_fp": config_fp, "ids": list(ids)}
        cursor = conn.exec_driver_sql(self._select_hits, params)
        return list(map(CachedHit._make, cursor.fetchall()))

    def select_hits_json(
        self, conn: Connection, task_name: str, config_fp: str, ids: Sequence[str]
    ) -> str | None:
        params = {"task_name": task_name, "config_fp": config_fp, "ids": list(ids)}
        text: str | None = conn.exec_driver_sql(self._select_hits_json, params).scalar()
        return text


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def hot_path_for(dialect: Dialect) -> HotPath:
    """The hot path for ``dialect`` (``"sqlite"`` or ``"postgresql"``)."""
    if dialect.name == "sqlite":
        return _SQLiteHotPath()
    if dialect.name == "postgresql":
        return _PostgresHotPath()
    raise ValueError(f"no hot path for dialect {dialect.name!r}")
