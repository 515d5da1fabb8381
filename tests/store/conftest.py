"""Fixtures of the store tests: every store test runs on SQLite and, when
``LOOM_TEST_POSTGRES_URL`` is set and answers, on PostgreSQL in a scratch schema of its own."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import URL, Connection, Engine

from loom_store import ResultRow, ResultStore


@dataclass(frozen=True)
class Target:
    """Where a test's store lives."""

    kind: str  # "sqlite" | "postgres"
    target: str  # what ResultStore is given
    url: URL  # the full URL, password included (tests only)

    def same_database(self, url: URL) -> bool:
        if self.kind == "sqlite":
            return url.get_backend_name() == "sqlite" and url.database == str(self.target)
        return url == self.url


@pytest.fixture
def pg_target(pg_schema_url: URL) -> Target:
    """A scratch schema of its own (tests/conftest.py), the search_path of every connection."""
    return Target("postgres", pg_schema_url.render_as_string(hide_password=False), pg_schema_url)


@pytest.fixture
def sqlite_target(tmp_path: Path) -> Target:
    path = tmp_path / "loom.db"
    return Target("sqlite", str(path), URL.create("sqlite+pysqlite", database=str(path)))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def target(request: pytest.FixtureRequest) -> Target:
    """Every database the suite runs on."""
    name = "sqlite_target" if request.param == "sqlite" else "pg_target"
    value: Target = request.getfixturevalue(name)
    return value


@pytest.fixture
def store(target: Target) -> Iterator[ResultStore]:
    with ResultStore(target.target) as opened:
        yield opened


def _make_row(
    task_id: str,
    *,
    task_name: str = "task",
    config_fp: str = "cfg-1",
    status: str = "succeeded",
    **fields: object,
) -> ResultRow:
    """A row whose data names its id, so that any mix-up between rows shows."""
    if status == "succeeded":
        fields.setdefault("data", f'{{"id": "{task_id}"}}')
    else:
        fields.setdefault("error", '{"code": "json_invalid", "message": "no JSON"}')
    return ResultRow(task_name, task_id, config_fp, status, **fields)  # type: ignore[arg-type]


@pytest.fixture(name="make_row")
def make_row_fixture() -> Callable[..., ResultRow]:
    """``make_row(task_id, task_name=..., config_fp=..., status=..., **fields)``."""
    return _make_row


@contextlib.contextmanager
def _write_lock(target: Target) -> Iterator[None]:
    """Hold the database's write lock from another connection while the block runs."""
    if target.kind == "sqlite":
        conn = sqlite3.connect(target.target, isolation_level=None, timeout=30)
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield
            conn.execute("ROLLBACK")
        finally:
            conn.close()
        return
    engine = create_engine(target.url)
    try:
        with engine.connect() as conn:
            conn.execute(text("LOCK TABLE loom_results IN EXCLUSIVE MODE"))
            yield
            conn.rollback()
    finally:
        engine.dispose()


@pytest.fixture
def write_lock(target: Target) -> Callable[[], contextlib.AbstractContextManager[None]]:
    """``with write_lock():`` holds the test database's write lock from another connection."""
    return lambda: _write_lock(target)


@pytest.fixture
def write_lock_on() -> Callable[[Target], contextlib.AbstractContextManager[None]]:
    """``with write_lock_on(some_target):``, for tests outside the ``target`` parametrization."""
    return _write_lock


@dataclass(eq=False)  # hashable: SQLAlchemy keys its listeners by identity
class CommitCounter:
    """Counts committed transactions on one database, across every engine of the process."""

    target: Target
    commits: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, conn: Connection) -> None:
        if self.target.same_database(conn.engine.url):
            with self._lock:
                self.commits += 1


@pytest.fixture
def commit_counter(target: Target) -> Iterator[CommitCounter]:
    counter = CommitCounter(target)
    event.listen(Engine, "commit", counter)
    try:
        yield counter
    finally:
        event.remove(Engine, "commit", counter)
