"""The statements and small checks of ``ResultStore`` that are not on the hot path."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, select, text, tuple_
from sqlalchemy.engine import Connection

from loom_protocol import LoomUsageError

from ._rows import ConfigInfo
from ._schema import results_table

__all__ = [
    "OTHER_CONFIGS",
    "check_ids",
    "config_infos",
    "distinct_by_seek",
    "error_code",
    "page_query",
    "task_filter",
]


def task_filter(task_name: str, config_fp: str | None) -> list[ColumnElement[bool]]:
    c = results_table.c
    where = [c.task_name == task_name]
    if config_fp is not None:
        where.append(c.config_fp == config_fp)
    return where


def page_query(
    columns: list[Any],
    task_name: str,
    config_fp: str | None,
    status: str | None,
    after: tuple[str, str] | None,
    limit: int,
) -> Select[Any]:
    """One page in primary-key order after the key ``after`` (a keyset, never an OFFSET)."""
    c = results_table.c
    stmt = select(*columns).where(*task_filter(task_name, config_fp))
    if status is not None:
        stmt = stmt.where(c.status == status)
    if config_fp is not None:
        if after is not None:
            stmt = stmt.where(c.task_id > after[1])
        return stmt.order_by(c.task_id).limit(limit)
    if after is not None:
        # A row-value comparison: both databases seek the primary key to it.
        stmt = stmt.where(tuple_(c.config_fp, c.task_id) > tuple_(*after))
    return stmt.order_by(c.config_fp, c.task_id).limit(limit)


def config_infos(
    task_name: str,
    registered: dict[str, tuple[str, datetime, datetime]],
    counted: Sequence[Sequence[Any]],
) -> list[ConfigInfo]:
    """``configs()``'s answer from its two reads, ordered by last activity, oldest first.

    Args:
        task_name: The task.
        registered: Per registered config: its config JSON, created_at and last_run_at.
        counted: Rows of (config_fp, status, count, last updated_at).
    """
    counts: dict[str, dict[str, int]] = {}
    written: dict[str, datetime] = {}
    for fp, status, n, last_write in counted:
        counts.setdefault(fp, {})[status] = int(n)
        if fp not in written or last_write > written[fp]:
            written[fp] = last_write
    infos = []
    for fp in registered.keys() | counts.keys():
        config, created_at, last_run_at = registered.get(fp, (None, None, None))
        by_status = counts.get(fp, {})
        succeeded, failed = by_status.get("succeeded", 0), by_status.get("failed", 0)
        infos.append(
            ConfigInfo(
                task_name=task_name,
                config_fp=fp,
                config=None if config is None else json.loads(config),
                created_at=created_at,
                last_run_at=last_run_at,
                last_write_at=written.get(fp),
                total=succeeded + failed,
                succeeded=succeeded,
                failed=failed,
            )
        )
    infos.sort(key=_activity)
    return infos


_EPOCH = datetime.min.replace(tzinfo=UTC)


def _activity(info: ConfigInfo) -> tuple[int, datetime, datetime, str]:
    """Unregistered configs by last row write, then registered ones by last run."""
    if info.last_run_at is None or info.created_at is None:
        return (0, info.last_write_at or _EPOCH, _EPOCH, info.config_fp)
    return (1, info.last_run_at, info.created_at, info.config_fp)


def distinct_by_seek(conn: Connection, column: Any) -> list[str]:
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


# The distinct configs of one task by a loose scan of the primary key (task_name, config_fp,
# task_id): one seek per config, in one statement, whatever the number of rows. Plain SQL
# understood alike by SQLite and PostgreSQL.
OTHER_CONFIGS = text(
    """
    WITH RECURSIVE fps(fp) AS (
        SELECT (SELECT MIN(config_fp) FROM loom_results WHERE task_name = :task_name)
        UNION ALL
        SELECT (
            SELECT MIN(config_fp) FROM loom_results
            WHERE task_name = :task_name AND config_fp > fps.fp
        )
        FROM fps WHERE fps.fp IS NOT NULL
    )
    SELECT fp FROM fps
    WHERE fp IS NOT NULL AND fp <> :config_fp
    ORDER BY fp
    """
)


def error_code(error: str | None) -> str:
    if not error:
        return "unknown"
    try:
        code = json.loads(error).get("code")
    except (ValueError, AttributeError):
        return "unknown"
    return code if isinstance(code, str) and code else "unknown"


def check_ids(task_ids: Sequence[str], *, dedupe: bool = True) -> list[str]:
    if isinstance(task_ids, str | bytes):
        raise LoomUsageError("task_ids must be a sequence of ids, not a single string")
    ids = list(dict.fromkeys(task_ids)) if dedupe else list(task_ids)
    for task_id in ids:
        if not isinstance(task_id, str):
            raise LoomUsageError(f"task ids must be strings, got {type(task_id).__name__}")
    return ids
