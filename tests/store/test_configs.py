"""Results keyed by (task_name, config_fp, task_id): every configuration keeps its own rows,
a failure never replaces a success, and the per-configuration API (schema version 2)."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC
from typing import Any

import pytest
from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine

from loom_protocol import LoomUsageError
from loom_store import ConfigInfo, ResultRow, ResultStore, RunRecord, TaskStats

MakeRow = Callable[..., ResultRow]
WriteLock = Callable[[], contextlib.AbstractContextManager[None]]


def _pause() -> None:
    """Keep two writes' timestamps apart (Windows-grade clocks tick every ~16 ms)."""
    time.sleep(0.02)


# -- every configuration keeps its rows -------------------------------------------------------


def test_each_configuration_keeps_its_own_row_of_an_input(
    store: ResultStore, make_row: MakeRow
) -> None:
    store.put_many([make_row(i, data=f'"A{i}"') for i in ("x", "y")])
    # Another configuration of the same task name and the same inputs: all failed.
    store.put_many([make_row(i, config_fp="cfg-2", status="failed") for i in ("x", "y")])
    store.put_many([make_row("x", config_fp="cfg-3", data='"C"')])

    assert {k: r.data for k, r in store.get_many("task", ["x", "y"], "cfg-1").items()} == {
        "x": '"Ax"',
        "y": '"Ay"',
    }
    assert store.get_many("task", ["x", "y"], "cfg-2") == {}
    assert store.get_many("task", ["x", "y"], "cfg-3").keys() == {"x"}
    assert store.get_hits("task", ["y", "x"], "cfg-3").startswith('[[1,"C",')
    assert store.stats("task").total == 5
    assert store.other_configs("task", "cfg-1") == ["cfg-2", "cfg-3"]


def test_failure_never_replaces_a_success_of_the_same_configuration(
    store: ResultStore, make_row: MakeRow
) -> None:
    store.put_many([make_row("k", data='"paid for"')])
    (first,) = store.iter_results("task")
    _pause()
    store.put_many([make_row("k", status="failed")])
    store.put_many([make_row("k", status="failed"), make_row("other", status="failed")])

    (kept,) = store.iter_results("task", config_fp="cfg-1", status="succeeded")
    assert kept == first  # untouched: same data, no error, same updated_at
    assert store.get_many("task", ["k"], "cfg-1")["k"].data == '"paid for"'
    assert store.stats("task") == TaskStats(
        "task", 2, 1, 1, {"json_invalid": 1}, ("cfg-1",), config_fp=None
    )


def test_failure_never_replaces_a_success_within_one_batch(
    store: ResultStore, make_row: MakeRow
) -> None:
    store.put_many(
        [
            make_row("a", data='"ok"'),
            make_row("a", status="failed"),  # after the success: dropped
            make_row("b", status="failed"),
            make_row("b", data='"later ok"'),  # a success replaces a failure
            make_row("c", data='"one"'),
            make_row("c", data='"two"'),  # a success replaces a success: the last wins
            make_row("d", status="failed", error='{"code": "first"}'),
            make_row("d", status="failed", error='{"code": "second"}'),  # failures: last wins
        ]
    )
    rows = {r.task_id: r for r in store.iter_results("task")}
    assert {k: (r.status, r.data, r.error) for k, r in rows.items()} == {
        "a": ("succeeded", '"ok"', None),
        "b": ("succeeded", '"later ok"', None),
        "c": ("succeeded", '"two"', None),
        "d": ("failed", None, '{"code": "second"}'),
    }


def test_success_replaces_a_failure_and_keeps_created_at(
    store: ResultStore, make_row: MakeRow
) -> None:
    store.put_many([make_row("k", status="failed")])
    (failed,) = store.iter_results("task")
    _pause()
    store.put_many([make_row("k", data='"fixed"')])
    (fixed,) = store.iter_results("task")
    assert (fixed.status, fixed.data, fixed.error) == ("succeeded", '"fixed"', None)
    assert fixed.created_at == failed.created_at
    assert fixed.updated_at is not None and failed.updated_at is not None
    assert fixed.updated_at > failed.updated_at


def test_writer_never_lets_a_failure_replace_a_success(
    store: ResultStore, make_row: MakeRow, write_lock: WriteLock
) -> None:
    writer = store.writer()
    writer.submit(make_row("early", data='"ok"')).result(timeout=30)
    with write_lock():  # everything below is queued, then written as one group
        futures = [
            writer.submit(make_row("early", status="failed")),
            writer.submit(make_row("grouped", data='"ok"')),
            writer.submit(make_row("grouped", status="failed")),
            writer.submit_many([make_row("many", data='"ok"'), make_row("many", status="failed")]),
        ]
        time.sleep(0.3)
    for future in futures:
        assert future.result(timeout=30) is None  # dropped, not refused
    found = store.get_many("task", ["early", "grouped", "many"], "cfg-1")
    assert {k: r.data for k, r in found.items()} == {
        "early": '"ok"',
        "grouped": '"ok"',
        "many": '"ok"',
    }
    assert store.stats("task").failed == 0


# -- iter_results, stats, delete per configuration --------------------------------------------


@pytest.fixture
def three_configs(store: ResultStore, make_row: MakeRow) -> ResultStore:
    rows = [make_row(f"{i:03d}", config_fp="cfg-b") for i in range(25)]
    rows += [
        make_row(f"{i:03d}", config_fp="cfg-a", status="failed" if i % 3 else "succeeded")
        for i in range(10)
    ]
    rows += [make_row(f"{i:03d}", config_fp="cfg-c") for i in range(5, 12)]
    rows += [make_row("000", task_name="elsewhere", config_fp="cfg-a")]
    store.put_many(rows[::-1])
    return store


@pytest.mark.parametrize("batch_size", [1, 3, 7, 1000])
def test_iter_results_all_configurations_in_key_order(
    three_configs: ResultStore, batch_size: int
) -> None:
    got = [
        (r.config_fp, r.task_id) for r in three_configs.iter_results("task", batch_size=batch_size)
    ]
    expected = sorted(
        [("cfg-a", f"{i:03d}") for i in range(10)]
        + [("cfg-b", f"{i:03d}") for i in range(25)]
        + [("cfg-c", f"{i:03d}") for i in range(5, 12)]
    )
    assert got == expected  # every row once, across page and configuration boundaries
    failed = list(three_configs.iter_results("task", "failed", batch_size=batch_size))
    assert [(r.config_fp, r.task_id) for r in failed] == [
        ("cfg-a", f"{i:03d}") for i in range(10) if i % 3
    ]


@pytest.mark.parametrize("batch_size", [1, 4, 1000])
def test_iter_results_of_one_configuration(three_configs: ResultStore, batch_size: int) -> None:
    rows = list(three_configs.iter_results("task", config_fp="cfg-c", batch_size=batch_size))
    assert [r.task_id for r in rows] == [f"{i:03d}" for i in range(5, 12)]
    assert {r.config_fp for r in rows} == {"cfg-c"}
    succeeded = three_configs.iter_results(
        "task", status="succeeded", config_fp="cfg-a", batch_size=batch_size
    )
    assert [r.task_id for r in succeeded] == ["000", "003", "006", "009"]
    assert list(three_configs.iter_results("task", config_fp="nope")) == []


def test_stats_of_one_configuration_or_all(three_configs: ResultStore) -> None:
    assert three_configs.stats("task", "cfg-a") == TaskStats(
        task_name="task",
        total=10,
        succeeded=4,
        failed=6,
        failures_by_code={"json_invalid": 6},
        config_fps=("cfg-a",),
        config_fp="cfg-a",
    )
    assert three_configs.stats("task", config_fp="cfg-b").total == 25
    assert three_configs.stats("task", "nope") == TaskStats(
        "task", 0, 0, 0, {}, (), config_fp="nope"
    )
    every = three_configs.stats("task")
    assert (every.total, every.succeeded, every.failed) == (42, 36, 6)
    assert every.config_fps == ("cfg-a", "cfg-b", "cfg-c") and every.config_fp is None


def test_delete_one_configuration(three_configs: ResultStore) -> None:
    three_configs.register_run("task", "cfg-a", {"model": "a"})
    three_configs.register_run("task", "cfg-b", {"model": "b"})
    assert three_configs.delete("task", "cfg-a") == 11  # ten rows and its run
    assert three_configs.stats("task").config_fps == ("cfg-b", "cfg-c")
    assert [r.config_fp for r in three_configs.runs("task")] == ["cfg-b"]
    assert three_configs.stats("elsewhere").total == 1  # same config, other task: kept
    assert three_configs.delete("task", "cfg-a") == 0
    assert three_configs.delete("task") == 25 + 7 + 1
    assert three_configs.task_names() == ["elsewhere"]


# -- the run registry and the latest configuration --------------------------------------------


def test_register_run_sets_last_run_at_every_time(store: ResultStore) -> None:
    assert store.register_run("task", "fp-a", {"model": "a"}) is True
    (first,) = store.runs("task")
    assert isinstance(first, RunRecord)
    assert first.last_run_at == first.created_at and first.last_run_at.tzinfo is UTC
    _pause()
    assert store.register_run("task", "fp-a", {"model": "changed"}) is False
    (again,) = store.runs("task")
    assert again.created_at == first.created_at and again.config == {"model": "a"}
    assert again.last_run_at > first.last_run_at


def test_latest_config_is_the_last_registered_run(store: ResultStore, make_row: MakeRow) -> None:
    assert store.latest_config("task") is None
    store.register_run("task", "fp-a", {})
    _pause()
    store.register_run("task", "fp-b", {})
    assert store.latest_config("task") == "fp-b"
    _pause()
    store.register_run("task", "fp-a", {})  # switching back
    assert store.latest_config("task") == "fp-a"
    store.put_many([make_row("x", config_fp="fp-unregistered")])  # rows alone never win
    assert store.latest_config("task") == "fp-a"
    assert store.latest_config("other") is None


def test_latest_config_falls_back_to_the_last_written_rows(
    store: ResultStore, make_row: MakeRow
) -> None:
    store.put_many([make_row("1", config_fp="fp-z"), make_row("2", config_fp="fp-z")])
    _pause()
    store.put_many([make_row("3", config_fp="fp-a")])
    assert store.latest_config("task") == "fp-a"
    _pause()
    store.put_many([make_row("1", config_fp="fp-z", status="failed", error="{}")])  # dropped
    assert store.latest_config("task") == "fp-a"
    store.put_many([make_row("4", config_fp="fp-z")])
    assert store.latest_config("task") == "fp-z"


def test_configs_lists_registrations_and_rows(store: ResultStore, make_row: MakeRow) -> None:
    assert store.configs("task") == []
    store.put_many([make_row("1", config_fp="fp-rows-only")])
    _pause()
    store.register_run("task", "fp-new", {"model": "n", "api_key": "sk-SECRET"})  # no rows yet
    _pause()
    store.register_run("task", "fp-old", {"model": "o"})
    store.put_many(
        [
            make_row("1", config_fp="fp-old"),
            make_row("2", config_fp="fp-old", status="failed"),
            make_row("x", task_name="elsewhere", config_fp="fp-old"),
        ]
    )
    _pause()
    store.register_run("task", "fp-new", {})

    infos = store.configs("task")
    assert all(isinstance(info, ConfigInfo) for info in infos)
    assert [i.config_fp for i in infos] == ["fp-rows-only", "fp-old", "fp-new"]
    assert infos[-1].config_fp == store.latest_config("task")
    rows_only, old, new = infos
    assert (rows_only.config, rows_only.created_at, rows_only.last_run_at) == (None, None, None)
    assert (rows_only.total, rows_only.succeeded, rows_only.failed) == (1, 1, 0)
    assert (old.config, old.total, old.succeeded, old.failed) == ({"model": "o"}, 2, 1, 1)
    assert old.last_write_at is not None and old.last_write_at.tzinfo is UTC
    assert new.config == {"model": "n", "api_key": "***"}
    assert (new.total, new.last_write_at) == (0, None)
    assert new.created_at is not None and new.last_run_at is not None
    assert new.created_at < new.last_run_at
    assert store.configs("elsewhere")[0].total == 1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.iter_results("task", config_fp=""), "config_fp must be a non-empty string"),
        (lambda s: s.stats("task", 3), "config_fp must be a non-empty string"),
        (lambda s: s.delete("task", ""), "config_fp must be a non-empty string"),
        (lambda s: s.latest_config(""), "task_name must be a non-empty string"),
        (lambda s: s.configs(None), "task_name must be a non-empty string"),
    ],
)
def test_bad_arguments(
    store: ResultStore, call: Callable[[ResultStore], Any], message: str
) -> None:
    with pytest.raises(LoomUsageError, match=message):
        call(store)


# -- the primary key serves every query ---------------------------------------------------------


class _Capture:
    """The read statements (and their parameters) one store sends to its database."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.seen: dict[str, Any] = {}

    def __call__(self, conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        reads = statement.lstrip().upper().startswith(("SELECT", "WITH", "DELETE"))
        if reads and "loom_results" in statement and self.target.same_database(conn.engine.url):
            self.seen.setdefault(statement, params)


@contextlib.contextmanager
def _capturing(target: Any) -> Iterator[_Capture]:
    capture = _Capture(target)
    event.listen(Engine, "before_cursor_execute", capture)
    try:
        yield capture
    finally:
        event.remove(Engine, "before_cursor_execute", capture)


def test_only_the_primary_key_and_every_query_uses_it(
    target: Any, store: ResultStore, make_row: MakeRow
) -> None:
    store.put_many([make_row(f"{i:03d}", config_fp=f"cfg-{i % 3}") for i in range(30)])
    store.put_many([make_row("f", status="failed")])
    store.register_run("task", "cfg-1", {})
    with _capturing(target) as capture:
        store.get_many("task", ["001", "004"], "cfg-1")
        store.get_hits("task", ["001"], "cfg-1")
        list(store.iter_results("task", batch_size=4))
        list(store.iter_results("task", "failed", config_fp="cfg-1", batch_size=4))
        store.stats("task")
        store.stats("task", "cfg-2")
        store.other_configs("task", "cfg-1")
        store.latest_config("task")
        store.configs("task")
        store.delete("task", "cfg-0")
    assert len(capture.seen) >= 10

    engine = create_engine(target.url)
    try:
        with engine.connect() as conn:
            indexes = inspect(conn).get_indexes("loom_results")
            key = inspect(conn).get_pk_constraint("loom_results")["constrained_columns"]
        assert indexes == []  # the primary key is the table's only index
        assert key == ["task_name", "config_fp", "task_id"]
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            if target.kind == "postgres":
                cursor.execute("SET enable_seqscan = off")  # an index plan must exist
            for statement, params in capture.seen.items():
                prefix = "EXPLAIN QUERY PLAN " if target.kind == "sqlite" else "EXPLAIN "
                cursor.execute(prefix + statement, params)
                plan = "\n".join(
                    str(row[-1] if target.kind == "sqlite" else row[0]) for row in cursor
                )
                assert "SCAN loom_results\n" not in plan + "\n", (statement, plan)
                assert "Seq Scan on loom_results" not in plan, (statement, plan)
                assert (
                    "loom_results" not in plan
                    or "autoindex_loom_results" in plan
                    or ("pk_loom_results" in plan)
                ), (statement, plan)
        finally:
            raw.close()
    finally:
        engine.dispose()


def test_sqlite_lookup_is_a_probe_of_the_whole_key(sqlite_target: Any, make_row: MakeRow) -> None:
    with ResultStore(sqlite_target.target) as store:
        store.put_many([make_row("a")])
        with _capturing(sqlite_target) as capture:
            store.get_many("task", ["a", "b"], "cfg-1")
            store.get_hits("task", ["a"], "cfg-1")
    conn = sqlite3.connect(sqlite_target.target)
    try:
        for statement, params in capture.seen.items():
            plan = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + statement, params)]
            assert any("(task_name=? AND config_fp=? AND task_id=?)" in step for step in plan), plan
    finally:
        conn.close()
