"""A store that cannot be used: the caller's mistake is a LoomUsageError, a failing database a
StoreError, never relabelled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loom_backends.testing import FakeBackend, FakeLLMServer
from loom_core import TaskLoom
from loom_protocol import LoomUsageError, StoreError
from loom_store import ResultStore

from .conftest import LoomFactory

UNREACHABLE = "postgresql+psycopg://postgres:hunter2pw@127.0.0.1:1/x"


def _loom(server: FakeLLMServer, **kwargs: object) -> TaskLoom[object]:
    return TaskLoom(
        model="fake-model",
        prompt_template="{{ text }}",
        base_url=server.base_url,
        api_key="k",
        **kwargs,  # type: ignore[arg-type]
    )


def test_an_unreachable_store_is_a_store_error(server: FakeLLMServer) -> None:
    pytest.importorskip("psycopg")
    with pytest.raises(
        StoreError, match=r"opening failed on store postgresql\+psycopg://postgres:\*\*\*@"
    ) as caught:
        _loom(server, store=UNREACHABLE)
    assert not isinstance(caught.value, LoomUsageError)
    assert "hunter2pw" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nosuchdb://u:hunter2pw@h/db", "dialect 'nosuchdb' is not supported"),
        ("postgresql+psycopg://u:hunter2pw@h:notaport/db", "not a valid store URL"),
    ],
)
def test_a_store_url_the_store_cannot_use_is_a_usage_error(
    server: FakeLLMServer, url: str, message: str
) -> None:
    with pytest.raises(LoomUsageError, match=message) as caught:
        _loom(server, store=url)
    assert "hunter2pw" not in str(caught.value)


def test_a_db_path_that_cannot_be_opened_fails_map_with_a_store_error(
    make_loom: LoomFactory, server: FakeLLMServer, tmp_path: Path
) -> None:
    loom = make_loom(server, db_path=tmp_path / "no" / "such" / "dir" / "x.db")
    with pytest.raises(StoreError, match="does not exist") as caught:
        loom.map(["a"], task_name="t")
    assert not isinstance(caught.value, LoomUsageError)
    assert server.request_count == 0


async def test_amap_reports_the_same_store_error(
    amake_loom: LoomFactory, server: FakeLLMServer, tmp_path: Path
) -> None:
    loom = amake_loom(server, db_path=tmp_path / "missing" / "x.db")
    with pytest.raises(StoreError, match="does not exist"):
        await loom.amap(["a"], task_name="t")
    assert server.request_count == 0


def test_a_row_the_database_refuses_fails_only_its_own_task(
    tmp_path: Path, fake: FakeBackend
) -> None:
    # Rows finished in one turn of the loop reach the writer together; the database refusing
    # one of them must cost that one result only, never its neighbours (nor lose them).
    from loom_store._host import RowRejectedError

    class Picky(ResultStore):
        def put_many(self, rows: Any) -> None:
            if any("REFUSE" in (row.raw_output or "") for row in rows):
                raise RowRejectedError("put_many failed: the database refused a row")
            super().put_many(rows)

    with Picky(tmp_path / "picky.db") as store:
        with TaskLoom("m", "{{ text }}", backend=fake, store=store) as loom:
            inputs = [f"fine {i}" for i in range(40)] + ["REFUSE me"]
            batch = loom.map(inputs, task_name="picky", max_workers=8)
        refused = batch[40]
        assert not refused.is_success
        assert refused.error is not None and refused.error.code.value == "store_error"
        assert all(result.is_success for result in batch[:40])
        assert store.stats("picky").succeeded == 40
