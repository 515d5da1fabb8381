"""Fixtures shared by every test tree: a scratch PostgreSQL schema for multi-process tests."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

PG_ENV = "LOOM_TEST_POSTGRES_URL"


@pytest.fixture
def scratch_pg_url() -> Iterator[str]:
    """A PostgreSQL store URL whose connections use a fresh schema (dropped after the test).

    Skips when ``LOOM_TEST_POSTGRES_URL`` is not set or the server does not answer. The URL
    (with its password, tests only) is what ``ResultStore`` and ``loom run --db`` are given.
    """
    raw = os.environ.get(PG_ENV)
    if not raw:
        pytest.skip(f"{PG_ENV} is not set: the PostgreSQL variant is skipped")
    url = make_url(raw)
    admin = create_engine(url, connect_args={"connect_timeout": 3})
    schema = f"loom_test_{secrets.token_hex(6)}"
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except SQLAlchemyError as exc:
        admin.dispose()
        shown = url.render_as_string(hide_password=True)
        pytest.skip(f"PostgreSQL at {shown} does not answer ({type(exc).__name__})")
    scoped = url.update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
