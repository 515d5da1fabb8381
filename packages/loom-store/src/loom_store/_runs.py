"""The run registry of a store: which configurations a task name was run with, and when."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from loom_protocol import LoomUsageError, canonical_json, check_non_empty_string

from ._base import StoreBase
from ._queries import OTHER_CONFIGS, config_infos
from ._rows import ConfigInfo, RunRecord
from ._schema import results_table, runs_table
from ._secrets import scrub_config

__all__ = ["RunRegistry"]


class RunRegistry(StoreBase):
    """The run registry's half of ``ResultStore``."""

    def register_run(self, task_name: str, config_fp: str, config: Mapping[str, Any]) -> bool:
        """Record that ``task_name`` runs with the configuration ``config_fp``, now.

        The first registration stores ``config`` and ``created_at``; every registration sets
        ``last_run_at`` (which :meth:`latest_config` reads). Credentials in ``config`` (keys
        such as ``api_key``, ``Authorization``, ``token``, ``secret``, ``password``, at any
        depth, and URL passwords) are replaced by ``"***"`` before it is written.

        Returns:
            True when this (task_name, config_fp) was not registered before.
        """
        check_non_empty_string("task_name", task_name)
        check_non_empty_string("config_fp", config_fp)
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
        check_non_empty_string("task_name", task_name)
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
        check_non_empty_string("task_name", task_name)
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
        check_non_empty_string("task_name", task_name)
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
        check_non_empty_string("task_name", task_name)
        check_non_empty_string("config_fp", config_fp)
        params = {"task_name": task_name, "config_fp": config_fp}
        with self._op("other_configs"), self._t.engine.connect() as conn:
            return list(conn.execute(OTHER_CONFIGS, params).scalars())
