"""What every test tree shares: the parallel run (pytest-xdist), and PostgreSQL.

``uv run pytest`` runs the suite on ``WORKERS`` pytest-xdist processes, the tests of an
``xdist_group`` (Ray's) on one of them (``--dist loadgroup``). Under xdist each worker gets a
PostgreSQL database of its own (``pg_url``); a test gets a scratch schema of it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError

PG_ENV = "LOOM_TEST_POSTGRES_URL"

#: pytest-xdist workers of a run given no ``-n``. Run in one process the suite mostly waits
#: (leases that expire, polling, child processes, Ray; a load average near 1 on 2 cores): 4
#: workers fill both cores. More would only queue for the CPU, stretching the timing tests.
WORKERS = 4


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Run the suite, or a directory of it, on ``WORKERS`` xdist workers unless ``-n`` is given.

    A run of test files or test ids stays in one process: starting the workers would cost more
    than it saves (``-n 4`` makes it parallel). A hook rather than ``-n`` in ``addopts``, so that
    ``-p no:xdist`` (xdist not loaded: its options would be unknown) works as well as ``-n 0``;
    ``--pdb``/``--trace`` run in-process.
    """
    option = config.option
    if not config.pluginmanager.hasplugin("xdist") or hasattr(config, "workerinput"):
        return  # no xdist, or this is one of its workers
    if option.numprocesses is not None or option.usepdb or option.trace:
        return
    paths = [config.invocation_params.dir / arg.split("::", 1)[0] for arg in config.args]
    if all(path.is_dir() for path in paths):
        option.numprocesses = WORKERS
        if option.dist == "no":
            option.dist = "loadgroup"


def _render(url: URL) -> str:
    """The URL with its password (tests only): what ``ResultStore`` is given."""
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[URL]:
    """The suite's PostgreSQL database: ``LOOM_TEST_POSTGRES_URL``'s, or under pytest-xdist a
    database of this worker's own, created on first use and dropped at the end of the session.

    A worker's database is also put in ``LOOM_TEST_POSTGRES_URL`` for the rest of the session,
    so that child processes started by tests see it. Skips when the variable is not set or the
    server does not answer (once per session: pytest keeps a session fixture's skip).
    """
    raw = os.environ.get(PG_ENV)
    if not raw:
        pytest.skip(f"{PG_ENV} is not set: the PostgreSQL tests are skipped")
    url = make_url(raw)
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    # CREATE/DROP DATABASE cannot run in a transaction.
    admin = create_engine(url, connect_args={"connect_timeout": 3}, isolation_level="AUTOCOMMIT")
    # Random as well as per worker: two runs at once on one server must not meet either.
    name = f"{url.database or 'loom'}_{worker}_{secrets.token_hex(4)}" if worker else None
    shown = url.render_as_string(hide_password=True)
    try:
        conn = admin.connect()
    except SQLAlchemyError as exc:
        admin.dispose()
        pytest.skip(f"PostgreSQL at {shown} does not answer ({type(exc).__name__})")
    refused: SQLAlchemyError | None = None
    with conn:
        try:
            if name is not None:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        except SQLAlchemyError as exc:
            refused = exc
    if refused is not None:
        # A server that answers but refuses is a setup to mend, not a reason to skip.
        admin.dispose()
        pytest.fail(
            f"PostgreSQL at {shown}: cannot create this worker's database {name!r} "
            f"({type(refused).__name__}); the user needs CREATEDB, or run with -n 0"
        )
    if name is None:
        admin.dispose()
        yield url
        return
    own = url.set(database=name)
    patch = pytest.MonkeyPatch()
    patch.setenv(PG_ENV, _render(own))
    try:
        yield own
    finally:
        patch.undo()
        with admin.connect() as conn:
            # FORCE: a connection a test leaked (or a child process left) must not keep it.
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pg_schema_url(pg_url: URL) -> Iterator[URL]:
    """``pg_url`` with a fresh schema as the search_path of its connections; dropped after."""
    schema = f"loom_test_{secrets.token_hex(6)}"
    admin = create_engine(pg_url, connect_args={"connect_timeout": 3})
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        try:
            yield pg_url.update_query_dict({"options": f"-csearch_path={schema}"})
        finally:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()


@pytest.fixture
def scratch_pg_url(pg_schema_url: URL) -> str:
    """A PostgreSQL store URL whose connections use a fresh schema (dropped after the test).

    Skips as ``pg_url`` does. The URL (with its password, tests only) is what ``ResultStore``
    and ``loom run --db`` are given.
    """
    return _render(pg_schema_url)
