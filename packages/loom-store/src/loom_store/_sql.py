"""Pieces of SQL and row handling that the dialects share (see ``_dialect.py``).

The upsert and the cache reads run for every task, so the dialects skip SQLAlchemy's per-row
parameter and result processing (measured: ~27 µs per row of Python overhead on a 1 KB row,
more than SQLite's own work) and hand plain tuples to the driver. Their SQL is built from the
table's column names and from :class:`~loom_store.CachedHit`'s fields, so it cannot drift from
the schema or from the layout of a hit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any

from ._rows import CachedHit, ResultRow, row_from_values
from ._schema import results_table

__all__ = [
    "COLUMNS",
    "DATA_COLUMNS",
    "HIT_COLUMNS",
    "KEY",
    "LAST_RUN",
    "TABLE",
    "aware",
    "on_conflict",
    "row_values",
    "to_rows",
]

TABLE = results_table.name
COLUMNS = [c.name for c in results_table.c]
DATA_COLUMNS = COLUMNS[:-2]  # all but created_at, updated_at
KEY = ("task_name", "config_fp", "task_id")
#: The columns of a hit, in :class:`CachedHit` order after its position.
HIT_COLUMNS: tuple[str, ...] = CachedHit._fields[1:]
if not set(HIT_COLUMNS) <= set(COLUMNS):  # pragma: no cover - a layout change must be seen
    raise RuntimeError("CachedHit names a column loom_results does not have")

#: Schema upgrade 1 → 2: the latest row write of a run (the rows are already in the new
#: table, whose primary key serves the probe per run).
LAST_RUN = (
    "SELECT MAX(x.updated_at) FROM loom_results AS x "
    "WHERE x.task_name = r.task_name AND x.config_fp = r.config_fp"
)


def on_conflict() -> str:
    """The upsert's conflict clause: replace every column but the key and ``created_at``,
    unless the stored row succeeded and the new one failed."""
    keep = {*KEY, "created_at"}
    update = ", ".join(f"{c} = excluded.{c}" for c in COLUMNS if c not in keep)
    return (
        f"ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET {update} "
        f"WHERE NOT ({TABLE}.status = 'succeeded' AND excluded.status = 'failed')"
    )


#: ``row_values(row)``: the row's values in :data:`DATA_COLUMNS` order, as a tuple. One C call
#: per row on the writer thread (``ResultRow`` has normalised every value when it was built).
row_values: Callable[[ResultRow], tuple[Any, ...]] = attrgetter(*DATA_COLUMNS)


def to_rows(
    records: Sequence[Sequence[Any]], stamp: Callable[[Any], datetime | None]
) -> list[ResultRow]:
    """Rows of ``loom_results`` (every column, in order) as :class:`ResultRow`."""
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


def aware(value: datetime | None) -> datetime | None:
    """A driver's timestamp as an aware UTC datetime."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
