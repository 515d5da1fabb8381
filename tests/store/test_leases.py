"""Leases of several workers on one task: claims, heartbeats, the registry, the clock.

Every test runs on SQLite and (marked postgres) on PostgreSQL in a scratch schema.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text

from loom_protocol import LoomUsageError
from loom_store import MIN_LEASE_S, ResultRow, ResultStore

T, C = "lease-task", "cfg-1"


def _claims(store: ResultStore) -> dict[str, str]:
    """Every claim of the test task: task id -> owner."""
    engine = store._t.engine  # the test reads the table directly
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT task_id, owner FROM loom_claims WHERE task_name = :t"), {"t": T}
        )
        return {str(row[0]): str(row[1]) for row in rows}


def test_a_claim_takes_free_ids_and_skips_live_claims_of_others(store: ResultStore) -> None:
    assert store.claim(T, C, "w1", ["a", "b", "c"], 30) == {"a", "b", "c"}
    assert store.claim(T, C, "w2", ["b", "c", "d"], 30) == {"d"}
    # Claiming again what one holds renews it: it is still got.
    assert store.claim(T, C, "w1", ["a", "d"], 30) == {"a"}
    assert _claims(store) == {"a": "w1", "b": "w1", "c": "w1", "d": "w2"}


def test_a_claim_is_per_configuration_and_task(store: ResultStore) -> None:
    assert store.claim(T, C, "w1", ["a"], 30) == {"a"}
    assert store.claim(T, "cfg-2", "w2", ["a"], 30) == {"a"}
    assert store.claim("other-task", C, "w2", ["a"], 30) == {"a"}


def test_an_input_with_a_succeeded_row_is_never_claimed(
    store: ResultStore, make_row: Callable[..., ResultRow]
) -> None:
    store.put_many(
        [
            make_row("done", task_name=T, config_fp=C),
            make_row("failed", task_name=T, config_fp=C, status="failed"),
            make_row("other-config", task_name=T, config_fp="cfg-2"),
        ]
    )
    got = store.claim(T, C, "w1", ["done", "failed", "other-config", "new"], 30)
    # A failure is retried (never served from the store); another configuration's row is
    # another configuration's.
    assert got == {"failed", "other-config", "new"}


def test_an_expired_claim_is_taken_over(store: ResultStore) -> None:
    assert store.claim(T, C, "dead", ["a", "b"], MIN_LEASE_S) == {"a", "b"}
    assert store.claim(T, C, "w2", ["a", "b"], 30) == set()
    time.sleep(MIN_LEASE_S + 0.3)
    assert store.claim(T, C, "w2", ["a", "b"], 30) == {"a", "b"}
    assert _claims(store) == {"a": "w2", "b": "w2"}


def test_a_heartbeat_renews_the_claims_and_ends_those_with_a_result(
    store: ResultStore, make_row: Callable[..., ResultRow]
) -> None:
    store.join_task(T, C, "w1", MIN_LEASE_S)
    assert store.claim(T, C, "w1", ["a", "b"], MIN_LEASE_S) == {"a", "b"}
    store.put_many([make_row("b", task_name=T, config_fp=C)])
    store.beat(T, C, "w1", 30, shared=True)
    time.sleep(MIN_LEASE_S + 0.3)
    # Renewed for 30 s: still held; b's claim was deleted by its result.
    assert store.claim(T, C, "w2", ["a", "b"], 30) == set()
    assert _claims(store) == {"a": "w1"}


def test_leaving_releases_every_claim_and_unregisters(store: ResultStore) -> None:
    store.join_task(T, C, "w1", 30)
    store.claim(T, C, "w1", ["a", "b"], 30)
    assert store.join_task(T, C, "w2", 30).peers == 1
    store.leave_task(T, C, "w1")
    assert store.claim(T, C, "w2", ["a", "b"], 30) == {"a", "b"}
    assert store.workers(T, C, "w2").peers == 0


def test_the_registry_tells_who_is_live_and_who_shares(store: ResultStore) -> None:
    first = store.join_task(T, C, "w1", 30)
    assert (first.peers, first.solo_peers, first.task_workers) == (0, 0, 1)
    second = store.join_task(T, C, "w2", 30)
    # w1 ran alone (no claims) and has not switched yet.
    assert (second.peers, second.solo_peers, second.task_workers) == (1, 1, 2)
    store.claim(T, C, "w1", [], 30, share=True)  # w1 switches: it now claims
    assert store.workers(T, C, "w2").solo_peers == 0
    # Another configuration of the task counts for the shared rate, not as a peer.
    third = store.join_task(T, "cfg-2", "w3", 30)
    assert (third.peers, third.task_workers) == (0, 3)
    assert store.workers(T, C, "w1").task_workers == 3
    # A worker with nothing left to call keeps its registration but takes no rate share.
    store.beat(T, "cfg-2", "w3", 30, shared=True, idle=True)
    assert store.workers(T, C, "w1").task_workers == 2
    assert store.workers(T, C, "w1").peers == 1


def test_a_worker_whose_heartbeat_stopped_stops_counting(store: ResultStore) -> None:
    store.join_task(T, C, "dead", MIN_LEASE_S)
    store.claim(T, C, "dead", ["a"], MIN_LEASE_S)
    assert store.join_task(T, C, "w2", 30).peers == 1
    time.sleep(MIN_LEASE_S + 0.3)
    assert store.workers(T, C, "w2").peers == 0
    # A join forgets dead workers and expired claims.
    store.join_task(T, C, "w3", 30)
    assert _claims(store) == {}
    # A worker taken for dead that beats again is registered again.
    view = store.beat(T, C, "dead", 30, shared=True)
    assert view.peers == 2


def test_a_claim_of_many_ids_is_complete(store: ResultStore) -> None:
    ids = [f"id-{i}" for i in range(12_000)]  # more than one statement's worth
    assert store.claim(T, C, "w1", ids + ids[:10], 30) == set(ids)
    assert store.claim(T, C, "w2", ids, 30) == set()


def test_two_threads_claiming_the_same_ids_never_share_one(store: ResultStore) -> None:
    ids = [f"id-{i}" for i in range(2000)]
    got: dict[str, set[str]] = {}

    def claim(worker: str) -> None:
        mine: set[str] = set()
        for start in range(0, len(ids), 100):
            mine |= store.claim(T, C, worker, ids[start : start + 100], 30)
        got[worker] = mine

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    claimed = [task_id for mine in got.values() for task_id in mine]
    assert sorted(claimed) == sorted(ids)


def test_lease_times_come_from_the_database_clock(
    store: ResultStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A machine whose clock is an hour ahead neither expires live claims nor keeps dead ones:
    # no lease time is ever read from the machine.
    real = time.time()
    assert abs(store.db_now() - real) < 5
    store.claim(T, C, "w1", ["a"], 30)
    monkeypatch.setattr(time, "time", lambda: real + 3600)
    assert store.claim(T, C, "w2", ["a"], 30) == set()
    engine = store._t.engine
    with engine.connect() as conn:
        expires = conn.execute(text("SELECT expires_at FROM loom_claims")).scalar_one()
    assert abs(expires - (real + 30)) < 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lease_s": 0.1}, "lease_s must be at least"),
        ({"lease_s": float("nan")}, "lease_s"),
        ({"lease_s": -1}, "lease_s"),
        ({"lease_s": 10**9}, "lease_s"),
        ({"worker_id": ""}, "worker_id"),
        ({"task_name": ""}, "task_name"),
    ],
)
def test_bad_lease_arguments_are_refused(
    store: ResultStore, kwargs: dict[str, Any], message: str
) -> None:
    args: dict[str, Any] = {"task_name": T, "config_fp": C, "worker_id": "w", "lease_s": 30}
    args.update(kwargs)
    with pytest.raises(LoomUsageError, match=message):
        store.join_task(**args)
    with pytest.raises(LoomUsageError, match=message):
        store.claim(args["task_name"], C, args["worker_id"], ["a"], args["lease_s"])


def test_a_claim_of_one_string_is_refused(store: ResultStore) -> None:
    with pytest.raises(LoomUsageError, match="not one string"):
        store.claim(T, C, "w1", "abc", 30)


def test_a_store_without_the_lease_tables_gets_them_when_opened(target: Any) -> None:
    # A store written before leases existed (schema version 2 without loom_claims and
    # loom_workers): opening it adds them, keeping its rows.
    with ResultStore(target.target) as store:
        store.put_many([ResultRow(T, "kept", C, "succeeded", data="1")])
    engine = create_engine(target.url)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE loom_claims"))
            conn.execute(text("DROP TABLE loom_workers"))
        with engine.connect() as conn:
            assert not inspect(conn).has_table("loom_claims")
        with ResultStore(target.target) as store:
            assert store.claim(T, C, "w1", ["kept", "new"], 30) == {"new"}
            assert store.join_task(T, C, "w1", 30).peers == 0
        with engine.connect() as conn:
            assert inspect(conn).has_table("loom_workers")
    finally:
        engine.dispose()
