"""map(batch=True) with the job kept in PostgreSQL (two looms, as two machines would be)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from .conftest import BatchFake, LoomFactory

pytestmark = pytest.mark.postgres


def test_two_looms_share_one_job_in_postgres(scratch_pg_url: str, make_loom: LoomFactory) -> None:
    provider = BatchFake()
    provider.polls = 3
    provider.finish_share = 0.7
    first = make_loom(provider, store=scratch_pg_url, max_retries=10)
    second = make_loom(provider, store=scratch_pg_url, max_retries=10)

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
