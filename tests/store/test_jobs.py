"""The provider batch job tracker: its tables on open, and writes that decide who acts."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import inspect

from loom_store import NewProviderBatch, ProviderItem, ResultRow, ResultStore

from .conftest import Target


def _batch(token: str, *task_ids: str, round_: int = 0) -> NewProviderBatch:
    items = [
        ProviderItem(f"{token}-{n:06d}", t, f'{{"text": "{t}"}}') for n, t in enumerate(task_ids)
    ]
    return NewProviderBatch(token, round_, "model-a", items)


def test_an_existing_store_gets_the_job_tables_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with ResultStore(path) as store:
        store.put_many([ResultRow("t", "a", "cfg", "succeeded", data="1")])
    # A store written before the job tables existed: drop them, as a 0.2 store is.
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE loom_provider_items")
        conn.execute("DROP TABLE loom_provider_batches")
    with ResultStore(path) as store:
        assert store.add_provider_batches("t", "cfg", [_batch("tok", "b")])
        assert store.get_many("t", ["a"], "cfg")["a"].data == "1"
        names = set(inspect(store._t.engine).get_table_names())
    assert {"loom_provider_batches", "loom_provider_items"} <= names


def test_the_01_store_upgrade_creates_them_too(tmp_path: Path) -> None:
    path = tmp_path / "v01.db"
    shutil.copyfile(Path(__file__).with_name("data") / "store_v01.sqlite", path)
    with ResultStore(path) as store:
        assert store.provider_batches("anything") == []
        assert store.add_provider_batches("t", "cfg", [_batch("tok", "b")])


def test_lifecycle_and_conditional_writes(
    store: ResultStore, make_row: Callable[..., ResultRow]
) -> None:
    assert store.add_provider_batches("t", "cfg", [_batch("t1", "a", "b"), _batch("t2", "c")])
    # Inputs an open batch holds are refused, whole.
    assert not store.add_provider_batches("t", "cfg", [_batch("t3", "c", "d")])
    assert store.open_task_ids("t", "cfg") == {"a", "b", "c"}
    assert store.open_task_ids("t", "other") == set()
    assert [r.token for r in store.provider_batches("t")] == ["t1", "t2"]

    stamp = store.claim_provider_batch("t1")
    assert stamp is not None
    assert store.claim_provider_batch("t1") is None  # claimed once
    got = store.provider_batch("t1")
    assert got is not None and got.state == "submitting" and got.submitted_at == stamp

    counts = {"total": 2, "processing": 2}
    assert store.attach_provider_batch(
        "t1", batch_id="b-1", state="in_progress", provider_status="validating", counts=counts
    )
    assert not store.attach_provider_batch(
        "t1", batch_id="b-x", state="in_progress", provider_status="x", counts={}
    )
    assert store.known_batch_ids(["b-1", "b-2"]) == {"b-1"}
    # A lost submission is abandoned only while still unattached.
    assert not store.finish_provider_batch("t1", [], state="abandoned", unattached=True)

    rows = [make_row("a", task_name="t", config_fp="cfg")]
    follow = _batch("t4", "b", round_=1)
    assert store.finish_provider_batch("t1", rows, [follow])
    assert not store.finish_provider_batch("t1", rows)  # collected once
    record = store.provider_batch("t1")
    assert record is not None and record.state == "collected" and record.closed
    assert store.get_many("t", ["a"], "cfg")["a"].status == "succeeded"
    assert store.open_task_ids("t", "cfg") == {"b", "c"}
    assert [i.task_id for i in store.provider_items("t4")] == ["b"]

    assert store.request_cancel("t") == 2
    assert store.claim_provider_batch("t2") is None  # cancelled: never sent
    assert store.provider_task_names() == ["t"]


def test_two_threads_claim_once(store: ResultStore) -> None:
    assert store.add_provider_batches("t", "cfg", [_batch("tok", "a")])
    won: list[bool] = []
    threads = [
        threading.Thread(target=lambda: won.append(store.claim_provider_batch("tok") is not None))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won) == [False] * 7 + [True]


def test_adding_concurrently_never_holds_one_input_twice(target: Target) -> None:
    stores = [ResultStore(target.target) for _ in range(4)]
    try:
        outcomes: list[bool] = []

        def add(n: int) -> None:
            outcomes.append(stores[n].add_provider_batches("t", "cfg", [_batch(f"k{n}", "x", "y")]))

        threads = [threading.Thread(target=add, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == [False, False, False, True]
        assert len(stores[0].provider_batches("t")) == 1
    finally:
        for s in stores:
            s.close()
