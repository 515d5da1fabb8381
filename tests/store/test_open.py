"""Opening a store: targets, the schema and its version, and the errors that can happen."""

from __future__ import annotations

import sqlite3
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from loom_protocol import LoomUsageError, StoreError
from loom_store import SCHEMA_VERSION, ResultRow, ResultStore

MakeRow = Callable[..., ResultRow]


def _full_text(exc: BaseException) -> str:
    """What a user sees of an exception: message and repr, of it and of its whole chain."""
    parts: list[str] = []
    current: BaseException | None = exc
    while current is not None:
        parts += [*traceback.format_exception_only(current), repr(current)]
        current = current.__cause__ or current.__context__
    return "".join(parts)


def test_tables_are_created_on_first_use(sqlite_target: Any) -> None:
    path = Path(sqlite_target.target)
    assert not path.exists()
    with ResultStore(path) as store:  # a PathLike works as well as a str
        assert store.dialect == "sqlite"
        assert store.url == f"sqlite+pysqlite:///{path}"
    conn = sqlite3.connect(path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        version = conn.execute("SELECT value FROM loom_meta WHERE key='schema_version'").fetchone()
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()
    assert {"loom_meta", "loom_results", "loom_runs"} <= tables
    assert version == (str(SCHEMA_VERSION),)
    assert journal == "wal"


def test_reopening_keeps_rows(target: Any, make_row: MakeRow) -> None:
    with ResultStore(target.target) as store:
        store.put_many([make_row("a")])
    with ResultStore(target.target) as store:
        assert store.get_many("task", ["a"], "cfg-1").keys() == {"a"}


def test_sqlite_url_and_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with ResultStore(f"sqlite:///{tmp_path / 'by-url.db'}") as store:
        assert store.dialect == "sqlite"
    assert (tmp_path / "by-url.db").exists()
    monkeypatch.chdir(tmp_path)
    with ResultStore() as store:  # the default: .loom.db in the working directory
        assert store.url.endswith(f"{tmp_path}/.loom.db")
    assert (tmp_path / ".loom.db").exists()


def test_memory_store_is_shared_by_threads_and_the_writer(make_row: MakeRow) -> None:
    with ResultStore(":memory:") as store:
        writer = store.writer()
        futures = [writer.submit(make_row(f"w{i}")) for i in range(200)]

        def put(n: int) -> None:
            store.put_many([make_row(f"p{n}-{i}") for i in range(50)])

        threads = [threading.Thread(target=put, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for f in futures:
            f.result(timeout=30)
        assert store.stats("task").total == 400
    with ResultStore("sqlite://") as fresh:  # a new memory database each time
        assert fresh.task_names() == []


def test_none_binds_through_an_adapter_and_an_applications_own_is_kept(
    tmp_path: Path, make_row: MakeRow
) -> None:
    key = (type(None), sqlite3.PrepareProtocol)
    saved = sqlite3.adapters.pop(key, None)
    try:
        with ResultStore(tmp_path / "a.db") as store:
            store.put_many([make_row("x", reasoning=None, usage=None, latency_ms=None)])
            row = next(store.iter_results("task"))
        # pysqlite binds None without its failing __adapt__ lookup: through an adapter.
        assert key in sqlite3.adapters
        assert (row.reasoning, row.usage, row.latency_ms) == (None, None, None)

        def mine(value: None) -> None:
            return value

        sqlite3.adapters[key] = mine
        ResultStore(tmp_path / "b.db").close()
        assert sqlite3.adapters[key] is mine  # the application's adapter stays
    finally:
        sqlite3.adapters.pop(key, None)
        if saved is not None:
            sqlite3.adapters[key] = saved


def test_missing_folder_is_a_store_error(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "loom.db"
    with pytest.raises(StoreError, match=r"folder .*no/such/dir.* does not exist"):
        ResultStore(missing)
    with pytest.raises(StoreError, match="does not exist"):
        ResultStore(f"sqlite:///{missing}")
    assert not missing.parent.exists()


def test_folder_as_target_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="it is a folder"):
        ResultStore(tmp_path)


def test_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.db"
    bogus.write_bytes(b"this is not an SQLite database at all" * 200)
    with pytest.raises(StoreError, match="file is not a database"):
        ResultStore(bogus)


def test_unreachable_url_hides_the_password() -> None:
    url = "postgresql+psycopg://postgres:hunter2pw@127.0.0.1:1/x"
    with pytest.raises(StoreError) as caught:
        ResultStore(url)
    message = str(caught.value)
    assert message.startswith(
        "opening failed on store postgresql+psycopg://postgres:***@127.0.0.1:1/x"
    )
    assert "127.0.0.1" in message and "OperationalError" in message
    assert "hunter2pw" not in _full_text(caught.value)
    assert caught.value.__cause__ is None and caught.value.__context__ is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nosuchdb://user:hunter2pw@host/db", "dialect 'nosuchdb' is not supported"),
        ("mysql+nosuchdriver://user:hunter2pw@host/db", "dialect 'mysql' is not supported"),
        ("sqlite+nosuchdriver:///x.db", "unknown database dialect 'sqlite.nosuchdriver'"),
        ("postgresql+psycopg://user:hunter2pw@host:notaport/db", "not a valid store URL"),
    ],
)
def test_urls_the_store_cannot_use_are_usage_errors_without_secrets(url: str, message: str) -> None:
    # Told from the target alone: the caller's mistake, not a failing database.
    with pytest.raises(LoomUsageError, match=message) as caught:
        ResultStore(url)
    assert not isinstance(caught.value, StoreError)
    assert "hunter2pw" not in _full_text(caught.value)
    assert caught.value.__cause__ is None and caught.value.__context__ is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "postgresql+psycopg://127.0.0.1:1/db?password=hunter2pw&connect_timeout=x",
            "bad value for connect_timeout",
        ),
        ("postgresql+psycopg://127.0.0.1:1/db?password=hunter2pw", "Connection refused"),
    ],
)
def test_unreachable_databases_are_store_errors_without_secrets(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message) as caught:
        ResultStore(url)
    assert "hunter2pw" not in _full_text(caught.value)
    # Nothing foreign hangs off the error either (a driver's text is never redacted).
    assert caught.value.__cause__ is None and caught.value.__context__ is None


def test_unsupported_dialect_is_refused() -> None:
    pytest.importorskip("sqlalchemy.dialects.mysql")
    # SQLAlchemy knows MySQL, the store does not: refused before any driver is imported.
    with pytest.raises(LoomUsageError, match="dialect 'mysql' is not supported") as caught:
        ResultStore("mysql+pymysql://root:hunter2pw@127.0.0.1:1/x")
    assert "hunter2pw" not in _full_text(caught.value)


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        ("3", r"schema version 3, newer than version 2 that this loom-store understands; "),
        ("99", r"schema version 99, newer than version 2.*; upgrade loom-store"),
        ("abc", r"unknown schema version 'abc'; this loom-store understands version 2 \(and "),
        ("0", r"unknown schema version '0'"),
        ("-1", r"unknown schema version '-1'"),
    ],
)
def test_schema_version_mismatch(target: Any, stored: str, message: str) -> None:
    ResultStore(target.target).close()
    engine = create_engine(target.url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE loom_meta SET value = :v WHERE key = 'schema_version'"), {"v": stored}
            )
    finally:
        engine.dispose()
    with pytest.raises(StoreError, match=message):
        ResultStore(target.target)


def test_missing_table_is_recreated(target: Any, make_row: MakeRow) -> None:
    ResultStore(target.target).close()
    engine = create_engine(target.url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE loom_runs"))
    finally:
        engine.dispose()
    with ResultStore(target.target) as store:
        assert store.register_run("task", "fp", {}) is True


def test_password_never_in_repr_or_url(pg_url: Any, pg_target: Any) -> None:
    # The test server trusts local connections, so any password gets in: a real open store.
    url = pg_target.url.set(password="hunter2-secret")
    with ResultStore(url.render_as_string(hide_password=False)) as store:
        assert store.dialect == "postgresql"
        for shown in (repr(store), store.url, str(store.writer())):
            assert "hunter2" not in shown
            assert ":***@" in shown


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "30", True])
def test_bad_busy_timeout(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(
        LoomUsageError, match="busy_timeout_s must be a finite number of seconds > 0"
    ):
        ResultStore(tmp_path / "x.db", busy_timeout_s=bad)


@pytest.mark.parametrize(
    ("bad", "message"), [(42, "got int"), ("", "target is empty"), ("   ", "target is empty")]
)
def test_bad_target(bad: Any, message: str) -> None:
    with pytest.raises(LoomUsageError, match=message):
        ResultStore(bad)


def test_busy_timeout_waits_for_the_lock_then_fails_clearly(
    sqlite_target: Any, make_row: MakeRow
) -> None:
    ResultStore(sqlite_target.target).close()
    holder = sqlite3.connect(sqlite_target.target, isolation_level=None, check_same_thread=False)
    try:
        holder.execute("BEGIN IMMEDIATE")
        release = threading.Timer(1.0, holder.execute, args=("ROLLBACK",))
        release.start()
        try:
            # Generous timeout: waits for the holder instead of failing at once.
            with ResultStore(sqlite_target.target, busy_timeout_s=60) as patient:
                patient.put_many([make_row("waited")])
        finally:
            release.join()
        holder.execute("BEGIN IMMEDIATE")
        with ResultStore(sqlite_target.target, busy_timeout_s=0.3) as hasty:
            with pytest.raises(StoreError, match=r"database is locked \(waited busy_timeout_s=0.3"):
                hasty.put_many([make_row("refused")])
            # Reads never take the write lock, so they go on while another process writes.
            assert hasty.get_many("task", ["waited", "refused"], "cfg-1").keys() == {"waited"}
        holder.execute("ROLLBACK")
    finally:
        holder.close()
