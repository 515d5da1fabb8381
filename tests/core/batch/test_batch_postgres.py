"""map(batch=True) with the job kept in PostgreSQL (two looms, as two machines would be)."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from .conftest import BatchFake, LoomFactory

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_store() -> Iterator[str]:
    raw = os.environ.get("LOOM_TEST_POSTGRES_URL")
    if not raw:
        pytest.skip("LOOM_TEST_POSTGRES_URL is not set")
    url = make_url(raw)
    admin = create_engine(url, connect_args={"connect_timeout": 3})
    schema = f"loom_batchjob_{secrets.token_hex(6)}"
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except SQLAlchemyError as exc:
        admin.dispose()
        pytest.skip(f"PostgreSQL does not answer ({type(exc).__name__})")
    try:
        scoped = url.update_query_dict({"options": f"-csearch_path={schema}"})
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_two_looms_share_one_job_in_postgres(pg_store: str, make_loom: LoomFactory) -> None:
    provider = BatchFake()
    provider.polls = 3
    provider.finish_share = 0.7
    first = make_loom(provider, store=pg_store, max_retries=10)
    second = make_loom(provider, store=pg_store, max_retries=10)

    async def both() -> list[Any]:
        return await asyncio.gather(
            first.amap([f"doc {i}" for i in range(60)], task_name="pg", batch=True),
            second.amap([f"doc {i}" for i in range(60)], task_name="pg", batch=True),
        )

    a, b = asyncio.run(both())
    assert [r.data for r in a] == [{"text": f"doc {i}"} for i in range(60)]
    assert [r.data for r in b] == [r.data for r in a]
    first_round = provider.submissions[0][1]
    assert len(first_round) == 60
    # No input was answered twice: each round sent only what the round before did not finish.
    answered = [o for b in provider.batches.values() for o in b.outcomes if o.response]
    assert len(answered) == 60
    assert first.batch_status("pg", refresh=False).done
