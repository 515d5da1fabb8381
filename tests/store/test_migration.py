"""Stores written by the 0.1 schema (version 1) are upgraded in place when opened.

The fixtures in ``data/`` were written by the real 0.1 code (``data/make_store_v01.py``): a
SQLite file, and for PostgreSQL the statements the 0.1 code sent to create its tables plus the
rows it wrote. They hold 15 rows of three task names (two configurations under ``invoices``,
the second having overwritten two rows of the first, as 0.1 did; successes and failures) and
four registered runs; ``orphan`` has rows but no registered run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine

from loom_protocol import StoreError
from loom_store import SCHEMA_VERSION, ResultRow, ResultStore

DATA = Path(__file__).parent / "data"
WriteLockOn = Callable[[Any], contextlib.AbstractContextManager[None]]

FP_A = "2babe69353ad0e3e725aa97c0a4a5f2e3a330ac0ce0707d2ed3967793795cd55"
FP_B = "f8f92d9c12b3ba18c267ddae8b4700bf182e9496ab92566d5c7466bbf06d24a0"
FP_C = "712ad1fe641564008de4956ac4e726629236aa1c8b9d71c4f3bc4b24a06b16c5"
FP_E = "09618a81"  # prefix: the fallback winner of "orphan"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def v01(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A store as the 0.1 code left it, on every database of the suite."""
    if request.param == "sqlite":
        target = request.getfixturevalue("sqlite_target")
        shutil.copyfile(DATA / "store_v01.sqlite", target.target)
        return target
    target = request.getfixturevalue("pg_target")
    _run_sql(target, (DATA / "store_v01.sql").read_text(encoding="utf-8"))
    return target


def _run_sql(target: Any, sql: str, params: Any = None) -> None:
    engine = create_engine(target.url)
    try:
        with engine.begin() as conn:
            if params is None:
                conn.exec_driver_sql(sql)
            else:
                conn.execute(text(sql), params)
    finally:
        engine.dispose()


def _raw_state(target: Any) -> dict[str, Any]:
    """Everything in the database, read without loom-store (its layout and its rows)."""
    engine = create_engine(target.url)
    try:
        with engine.connect() as conn:
            inspector = inspect(conn)
            results = conn.execute(text("SELECT * FROM loom_results")).mappings().all()
            runs = conn.execute(text("SELECT * FROM loom_runs")).mappings().all()
            return {
                "version": conn.execute(
                    text("SELECT value FROM loom_meta WHERE key = 'schema_version'")
                ).scalar_one(),
                "key": inspector.get_pk_constraint("loom_results")["constrained_columns"],
                "indexes": sorted(i["name"] for i in inspector.get_indexes("loom_results")),
                "run_columns": [c["name"] for c in inspector.get_columns("loom_runs")],
                "results": sorted((dict(r) for r in results), key=_key_of),
                "runs": sorted(
                    (dict(r) for r in runs), key=lambda r: (r["task_name"], r["config_fp"])
                ),
            }
    finally:
        engine.dispose()


def _key_of(row: dict[str, Any]) -> tuple[str, str, str]:
    return (row["task_name"], row["config_fp"], row["task_id"])


def _stamp(value: Any) -> datetime:
    stamp = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def _as_result_row(raw: dict[str, Any]) -> ResultRow:
    fields = {
        **raw,
        "created_at": _stamp(raw["created_at"]),
        "updated_at": _stamp(raw["updated_at"]),
    }
    return ResultRow(**fields)


@contextlib.contextmanager
def _statements(target: Any) -> Iterator[list[str]]:
    sent: list[str] = []

    def log(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if target.same_database(conn.engine.url):
            sent.append(" ".join(statement.split()))

    event.listen(Engine, "before_cursor_execute", log)
    try:
        yield sent
    finally:
        event.remove(Engine, "before_cursor_execute", log)


def _store_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "loom.store"]


# -- the upgrade --------------------------------------------------------------------------------


def test_a_01_store_is_upgraded_and_every_row_is_found(
    v01: Any, caplog: pytest.LogCaptureFixture
) -> None:
    before = _raw_state(v01)
    assert before["version"] == "1" and before["key"] == ["task_name", "task_id"]
    assert before["indexes"] == ["ix_loom_results_config"]
    assert "last_run_at" not in before["run_columns"]
    assert len(before["results"]) == 15 and len(before["runs"]) == 4

    caplog.set_level(logging.INFO, logger="loom.store")
    with ResultStore(v01.target) as store:
        # Every row of the 0.1 store, column for column, timestamps included.
        expected = [_as_result_row(raw) for raw in before["results"]]
        found = sorted(
            (row for name in store.task_names() for row in store.iter_results(name)),
            key=lambda r: (r.task_name, r.config_fp, r.task_id),
        )
        assert found == expected
        assert store.task_names() == ["invoices", "orphan", "people"]
        assert store.stats("invoices").config_fps == (FP_A, FP_B)
        assert (store.stats("invoices", FP_A).succeeded, store.stats("invoices", FP_A).failed) == (
            4,
            0,
        )
        assert (store.stats("invoices", FP_B).succeeded, store.stats("invoices", FP_B).failed) == (
            2,
            2,
        )
        # The cache serves the succeeded rows of each configuration.
        for name, fp in {(r.task_name, r.config_fp) for r in expected}:
            ids = [r.task_id for r in expected if (r.task_name, r.config_fp) == (name, fp)]
            served = store.get_many(name, ids, fp)
            assert served == {
                r.task_id: r
                for r in expected
                if (r.task_name, r.config_fp) == (name, fp) and r.status == "succeeded"
            }
            assert len(json.loads(store.get_hits(name, ids, fp))) == len(served)

        # The runs, with last_run_at: the latest of registration and last row write.
        runs = {
            (r.task_name, r.config_fp): r
            for name in ("invoices", "people")
            for r in store.runs(name)
        }
        assert len(runs) == 4
        for raw in before["runs"]:
            run = runs[(raw["task_name"], raw["config_fp"])]
            assert run.config == json.loads(raw["config"])
            assert run.created_at == _stamp(raw["created_at"])
            writes = [
                r.updated_at
                for r in expected
                if (r.task_name, r.config_fp) == (raw["task_name"], raw["config_fp"])
            ]
            assert run.last_run_at == max([run.created_at, *(w for w in writes if w)])
        assert store.latest_config("invoices") == FP_B
        assert store.latest_config("people") == FP_A
        latest_orphan = store.latest_config("orphan")
        assert latest_orphan is not None and latest_orphan.startswith(FP_E)
        assert [c.config_fp for c in store.configs("people")] == [FP_C, FP_A]

        # From now on every configuration keeps its rows: A's answer for inv-5 (which B
        # overwrote under 0.1) comes back next to B's.
        inv5 = next(r for r in expected if r.config_fp == FP_B and r.status == "succeeded")
        store.put_many([replace(inv5, config_fp=FP_A, data='"A again"')])
        assert store.get_many("invoices", [inv5.task_id], FP_A)[inv5.task_id].data == '"A again"'
        assert store.get_many("invoices", [inv5.task_id], FP_B)[inv5.task_id].data == inv5.data

    after = _raw_state(v01)
    if v01.kind == "sqlite":
        conn = sqlite3.connect(v01.target)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            conn.close()
    assert after["version"] == str(SCHEMA_VERSION) == "2"
    assert after["key"] == ["task_name", "config_fp", "task_id"]
    assert after["indexes"] == []
    assert "last_run_at" in after["run_columns"]

    records = _store_records(caplog)
    assert [r.levelname for r in records] == ["WARNING", "INFO"]
    assert "from schema version 1 to 2 in place: 15 result rows, 4 runs" in records[0].getMessage()
    assert "15 result rows and 4 runs kept" in records[1].getMessage()


def test_a_second_open_does_nothing(v01: Any, caplog: pytest.LogCaptureFixture) -> None:
    ResultStore(v01.target).close()
    upgraded = _raw_state(v01)
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="loom.store")
    with _statements(v01) as sent, ResultStore(v01.target) as store:
        assert store.stats("invoices").total == 8
    assert _store_records(caplog) == []
    writes = ("CREATE", "ALTER", "DROP", "INSERT", "UPDATE", "DELETE", "BEGIN IMMEDIATE")
    assert [s for s in sent if s.upper().startswith(writes)] == []
    assert _raw_state(v01) == upgraded


def test_a_01_store_missing_its_runs_table(v01: Any) -> None:
    _run_sql(v01, "DROP TABLE loom_runs")
    with ResultStore(v01.target) as store:
        assert store.stats("invoices").total == 8
        assert store.runs("invoices") == []
        assert store.register_run("invoices", FP_A, {}) is True
        assert store.latest_config("invoices") == FP_A


# -- a failed upgrade changes nothing -----------------------------------------------------------

_REFUSE = {
    "sqlite": "CREATE TRIGGER refuse_upgrade BEFORE UPDATE ON loom_meta "
    "BEGIN SELECT RAISE(ABORT, 'upgrades refused here'); END",
    "postgres": "CREATE FUNCTION refuse_upgrade() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN RAISE EXCEPTION 'upgrades refused here'; END $$; "
    "CREATE TRIGGER refuse_upgrade BEFORE UPDATE ON loom_meta "
    "FOR EACH ROW EXECUTE FUNCTION refuse_upgrade()",
}


def test_an_upgrade_refused_at_its_last_step_leaves_the_01_store_intact(v01: Any) -> None:
    # The database itself refuses the upgrade's last statement (the version update), after
    # the tables were rebuilt or altered: everything before it must be rolled back.
    _run_sql(v01, _REFUSE[v01.kind])
    before = _raw_state(v01)
    with pytest.raises(StoreError) as caught:
        ResultStore(v01.target)
    message = str(caught.value)
    assert "upgrading from schema version 1 to 2 failed on store" in message
    assert "upgrades refused here" in message
    assert "the upgrade was rolled back and the store is unchanged (still schema version 1" in (
        message
    )
    assert _raw_state(v01) == before  # layout and rows, exactly

    _run_sql(
        v01, "DROP TRIGGER refuse_upgrade" + (" ON loom_meta" if v01.kind == "postgres" else "")
    )
    with ResultStore(v01.target) as store:
        assert sum(store.stats(n).total for n in store.task_names()) == 15


_DISK_FULL_CHILD = """
import resource, signal, sys
from loom_protocol import StoreError
from loom_store import ResultStore

# Every file of this process may grow to 1 MiB: the WAL fills up during the copy.
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
try:
    ResultStore(sys.argv[1])
except StoreError as exc:
    print(exc)
"""


def test_a_full_disk_during_the_upgrade_leaves_the_01_store_intact(sqlite_target: Any) -> None:
    shutil.copyfile(DATA / "store_v01.sqlite", sqlite_target.target)
    _add_big_task(sqlite_target, 2_000)  # ~4 MB to copy
    before = _raw_state(sqlite_target)
    done = subprocess.run(
        [sys.executable, "-c", _DISK_FULL_CHILD, sqlite_target.target],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "upgrading from schema version 1 to 2 failed on store" in done.stdout
    # EFBIG from write(): SQLite reports it as an I/O error (ENOSPC: "database or disk is full").
    assert "disk I/O error" in done.stdout or "disk is full" in done.stdout
    assert "the upgrade was rolled back and the store is unchanged" in done.stdout
    assert _raw_state(sqlite_target) == before
    with ResultStore(sqlite_target.target) as store:  # with room to grow, it upgrades
        assert store.stats("big").total == 2_000


# -- several processes ----------------------------------------------------------------------------

_CHILD = """
import json, logging, sys
from loom_store import ResultStore

class Tell(logging.Handler):
    def emit(self, record):
        print("LOG", record.levelname, record.getMessage(), flush=True)

log = logging.getLogger("loom.store")
log.addHandler(Tell())
log.setLevel(logging.INFO)
print("READY", flush=True)
with ResultStore(sys.argv[1]) as store:
    totals = {name: store.stats(name).total for name in store.task_names()}
    print("OPEN", json.dumps(totals), flush=True)
"""


def _child(target: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD, target.target],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_processes_opening_a_01_store_at_once_upgrade_it_once(
    v01: Any, write_lock_on: WriteLockOn
) -> None:
    # Another connection holds the write lock while three processes open the store, so
    # that all three read version 1 before any can upgrade; then it lets go.
    with write_lock_on(v01):
        children = [_child(v01) for _ in range(3)]
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "READY"
        time.sleep(1.5)  # each is now past its read-only version check, waiting on the lock
        assert all(child.poll() is None for child in children)
    outputs = []
    for child in children:
        assert child.stdout is not None and child.stderr is not None
        # Read through the same text stream as readline() above, not communicate(): that reads
        # the pipe's file descriptor and would miss lines readline() already buffered (the
        # upgrader logs its WARNING right after READY, often before the parent reads READY).
        with child.stdout, child.stderr:
            out = child.stdout.read()
            err = child.stderr.read()
        assert child.wait(timeout=120) == 0, err
        outputs.append(out)
    upgrades = [line for out in outputs for line in out.splitlines() if "WARNING upgrading" in line]
    assert len(upgrades) == 1, outputs
    totals = [json.loads(out.split("OPEN ", 1)[1]) for out in outputs]
    assert totals == [{"invoices": 8, "orphan": 3, "people": 4}] * 3
    assert _raw_state(v01)["version"] == "2"


def _add_big_task(target: Any, rows: int) -> None:
    """Rows in the 0.1 layout, written directly, to make an upgrade take a while."""
    stamp = "2026-01-01 00:00:00.000000" + ("+00:00" if target.kind == "postgres" else "")
    filler = "x" * 2000
    values = [
        {"id": f"{i:064d}", "data": json.dumps({"n": i, "filler": filler}), "at": stamp}
        for i in range(rows)
    ]
    _run_sql(
        target,
        "INSERT INTO loom_results (task_name, task_id, config_fp, status, data, attempts, "
        "created_at, updated_at) VALUES ('big', :id, 'cfg-big', 'succeeded', :data, 1, :at, :at)",
        values,
    )


@contextlib.contextmanager
def _runs_table_held(target: Any) -> Iterator[None]:
    """PostgreSQL: hold a lock on loom_runs, so that an upgrade stops half-way, after
    altering loom_results and before altering loom_runs. (SQLite has no such lock: its upgrade
    is one write transaction, slowed down by the rows to copy.)"""
    if target.kind == "sqlite":
        yield
        return
    engine = create_engine(target.url)
    try:
        with engine.connect() as conn:
            conn.execute(text("LOCK TABLE loom_runs IN ACCESS SHARE MODE"))
            yield
            conn.rollback()
    finally:
        engine.dispose()


@pytest.mark.slow
def test_kill_9_during_the_upgrade_leaves_the_01_store_intact(v01: Any) -> None:
    _add_big_task(v01, 20_000)
    before = _raw_state(v01)
    with _runs_table_held(v01):
        child = _child(v01)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "READY"
        line = child.stdout.readline()
        assert "WARNING upgrading" in line and "20015 result rows" in line
        if v01.kind == "postgres":
            time.sleep(0.5)  # loom_results altered; now waiting for loom_runs
        os.kill(child.pid, signal.SIGKILL)  # SQLite: the copy of 40 MB has just begun
        child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL

    assert _raw_state(v01) == before  # still the 0.1 store, every row
    with ResultStore(v01.target) as store:
        assert store.stats("big").total == 20_000
        assert sum(store.stats(n).total for n in store.task_names()) == 20_015
