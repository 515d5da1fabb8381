"""StoreWriter: commit-before-release, group commit, failures, flush, close, threads, asyncio."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from loom_protocol import LoomUsageError, StoreError
from loom_store import ResultRow, ResultStore, StoreWriter

MakeRow = Callable[..., ResultRow]
WriteLockCM = contextlib.AbstractContextManager[None]
WriteLock = Callable[[], WriteLockCM]

SETTLE_S = 0.5  # long enough for a writer that wrongly released early to have done so


def _poisoned(row: ResultRow) -> ResultRow:
    """A row the database refuses (CHECK constraint on status), slipped past validation."""
    object.__setattr__(row, "status", "exploded")
    return row


def _wait_all(futures: list[concurrent.futures.Future[None]], timeout: float = 60) -> None:
    _done, not_done = concurrent.futures.wait(futures, timeout=timeout)
    assert not not_done, f"{len(not_done)} futures still pending after {timeout} s"


def test_future_completes_only_after_commit(
    store: ResultStore, target: Any, make_row: MakeRow, write_lock: WriteLock
) -> None:
    observer = ResultStore(target.target)  # its own connections: sees only committed rows
    seen_at_release: dict[str, bool] = {}

    def check_visible(task_id: str) -> Callable[[concurrent.futures.Future[None]], None]:
        def callback(_future: concurrent.futures.Future[None]) -> None:
            seen_at_release[task_id] = bool(observer.get_many("task", [task_id], "cfg-1"))

        return callback

    try:
        writer = store.writer()
        with write_lock():
            futures = []
            for i in range(50):
                future = writer.submit(make_row(f"r{i}"))
                future.add_done_callback(check_visible(f"r{i}"))
                futures.append(future)
            time.sleep(SETTLE_S)
            assert not any(f.done() for f in futures)  # the lock holds the commit back
            assert observer.get_many("task", [f"r{i}" for i in range(50)], "cfg-1") == {}
        _wait_all(futures)
        writer.flush()  # returns once every callback of the released futures has run
        assert all(f.result() is None for f in futures)
        assert seen_at_release == {f"r{i}": True for i in range(50)}
    finally:
        observer.close()


def test_group_commit_groups(
    store: ResultStore,
    make_row: MakeRow,
    write_lock: WriteLock,
    commit_counter: Any,
) -> None:
    writer = store.writer()
    with write_lock():
        # The first row may be taken alone before the rest arrive; all later ones queue
        # up behind the held lock and must share one transaction.
        futures = [writer.submit(make_row(f"g{i}")) for i in range(300)]
        time.sleep(SETTLE_S)
        commit_counter.commits = 0
    _wait_all(futures)
    assert 1 <= commit_counter.commits <= 2
    assert store.stats("task").succeeded == 300


def test_max_batch_bounds_a_group(
    store: ResultStore, make_row: MakeRow, write_lock: WriteLock, commit_counter: Any
) -> None:
    writer = store.writer(max_batch=50)
    with write_lock():
        futures = [writer.submit(make_row(f"m{i}")) for i in range(200)]
        big = writer.submit_many([make_row(f"big{i}") for i in range(120)])  # never split
        time.sleep(SETTLE_S)
        commit_counter.commits = 0
    _wait_all([*futures, big])
    # 200 single rows in groups of <= 50 (the first may be alone), then the 120 together.
    assert 5 <= commit_counter.commits <= 6
    assert store.stats("task").total == 320


def test_same_key_twice_in_one_group(
    store: ResultStore, make_row: MakeRow, write_lock: WriteLock
) -> None:
    writer = store.writer()
    with write_lock():
        futures = [writer.submit(make_row("dup", data=f'"v{i}"')) for i in range(5)]
        futures.append(writer.submit_many([make_row("twin", data='"a"'), make_row("twin")]))
        time.sleep(SETTLE_S)
    _wait_all(futures)
    assert all(f.exception() is None for f in futures)
    found = store.get_many("task", ["dup", "twin"], "cfg-1")
    assert found["dup"].data == '"v4"'
    assert found["twin"].data == '{"id": "twin"}'


def test_rejected_row_fails_alone_and_the_writer_keeps_serving(
    store: ResultStore, make_row: MakeRow, write_lock: WriteLock
) -> None:
    writer = store.writer()
    with write_lock():
        before = [writer.submit(make_row(f"ok{i}")) for i in range(10)]
        bad = writer.submit(_poisoned(make_row("bad")))
        after = [writer.submit(make_row(f"ok{i}")) for i in range(10, 20)]
        time.sleep(SETTLE_S)
    _wait_all([*before, bad, *after])

    error = bad.exception()
    assert isinstance(error, StoreError)
    assert "put_many failed" in str(error) and "ck_loom_results_status" in str(error)
    assert all(f.exception() is None for f in [*before, *after])
    assert store.stats("task").succeeded == 20
    # A rejected row on its own, then a good one: still served.
    alone = writer.submit(_poisoned(make_row("bad-again")))
    with pytest.raises(StoreError, match="ck_loom_results_status"):
        alone.result(timeout=30)
    writer.submit(make_row("later")).result(timeout=30)
    assert "later" in store.get_many("task", ["later"], "cfg-1")


def test_failed_transaction_reaches_every_waiter(sqlite_target: Any, make_row: MakeRow) -> None:
    # SQLite only: a lock held beyond busy_timeout_s fails the whole group (not the rows).
    with ResultStore(sqlite_target.target, busy_timeout_s=0.3) as store:
        import sqlite3

        holder = sqlite3.connect(sqlite_target.target, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            writer = store.writer()
            futures = [writer.submit(make_row(f"x{i}")) for i in range(30)]
            futures.append(writer.submit_many([make_row("y1"), make_row("y2")]))
            _wait_all(futures)
            holder.execute("ROLLBACK")
        finally:
            holder.close()
        errors = [f.exception() for f in futures]
        assert all(isinstance(e, StoreError) for e in errors)
        assert all("database is locked" in str(e) for e in errors)
        assert len({id(e) for e in errors}) == len(errors)  # one exception object per waiter
        writer.submit(make_row("after")).result(timeout=30)  # the writer keeps serving
        assert store.stats("task").total == 1


def test_flush_waits_for_everything_submitted(
    store: ResultStore, make_row: MakeRow, write_lock: WriteLock
) -> None:
    writer = store.writer()
    writer.flush()  # nothing pending: returns at once
    with write_lock():
        futures = [writer.submit(make_row(f"f{i}")) for i in range(20)]
        with pytest.raises(StoreError, match=r"flush timed out after 0.2 s with \d+ submissions"):
            writer.flush(timeout=0.2)
        assert writer.pending > 0
    writer.flush()
    assert all(f.done() for f in futures)
    assert writer.pending == 0
    assert store.stats("task").total == 20


def test_close_drains_the_queue(target: Any, make_row: MakeRow, write_lock: WriteLock) -> None:
    store = ResultStore(target.target)
    writer = StoreWriter(store, max_batch=100)
    with write_lock():
        futures = [writer.submit(make_row(f"c{i}")) for i in range(500)]
    store.close()  # closes its writers first, draining them
    assert writer.closed
    assert all(f.done() and f.exception() is None for f in futures)
    with pytest.raises(StoreError, match=r"writer of store .* is closed"):
        writer.submit(make_row("late"))
    writer.close()  # idempotent
    with ResultStore(target.target) as reopened:
        assert reopened.stats("task").total == 500


def test_writer_close_then_submit(store: ResultStore, make_row: MakeRow) -> None:
    with store.writer() as writer:
        future = writer.submit(make_row("one"))
    assert future.done()
    assert "closed" in repr(writer)
    for call in (
        lambda: writer.submit(make_row("two")),
        lambda: writer.submit_many([make_row("three")]),
        lambda: writer.submit_many([]),
    ):
        with pytest.raises(StoreError, match="is closed"):
            call()
    assert store.stats("task").total == 1  # the store itself stays usable


def test_submit_many_and_bad_arguments(store: ResultStore, make_row: MakeRow) -> None:
    writer = store.writer()
    assert writer.submit_many([]).result(timeout=1) is None
    writer.submit_many(tuple(make_row(f"s{i}") for i in range(10))).result(timeout=30)
    assert store.stats("task").total == 10
    with pytest.raises(LoomUsageError, match="submit takes a ResultRow, got dict"):
        writer.submit({"task_id": "x"})  # type: ignore[arg-type]
    with pytest.raises(LoomUsageError, match="use submit"):
        writer.submit_many(make_row("x"))  # type: ignore[arg-type]
    with pytest.raises(LoomUsageError, match="StoreWriter needs a ResultStore"):
        StoreWriter("loom.db")  # type: ignore[arg-type]
    with pytest.raises(LoomUsageError, match=r"max_batch must be an int >= 1, got 1\.5"):
        StoreWriter(store, max_batch=1.5)  # type: ignore[arg-type]


def test_flush_from_the_writer_thread_is_refused(store: ResultStore, make_row: MakeRow) -> None:
    writer = store.writer()
    raised: list[BaseException] = []

    def callback(_f: concurrent.futures.Future[None]) -> None:
        try:
            writer.flush()
        except LoomUsageError as exc:
            raised.append(exc)

    future = writer.submit(make_row("a"))
    future.add_done_callback(callback)
    future.result(timeout=30)
    writer.flush()
    assert len(raised) == 1 and "writer thread" in str(raised[0])


def test_eight_threads(store: ResultStore, make_row: MakeRow) -> None:
    writer = store.writer()
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(250):
                writer.submit(make_row(f"t{n}-{i}")).result(timeout=60)
        except BaseException as exc:  # reported in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert store.stats("task").succeeded == 2_000
    ids = [f"t{n}-{i}" for n in range(8) for i in range(250)]
    assert len(store.get_many("task", ids, "cfg-1")) == 2_000


async def test_asyncio_wrap_future_and_asubmit(store: ResultStore, make_row: MakeRow) -> None:
    writer = store.writer()
    await asyncio.gather(
        *(asyncio.wrap_future(writer.submit(make_row(f"w{i}"))) for i in range(300)),
        *(writer.asubmit(make_row(f"a{i}")) for i in range(300)),
        writer.asubmit_many([make_row(f"m{i}") for i in range(5)]),
        writer.asubmit_many([]),
    )
    assert store.stats("task").succeeded == 605


async def test_waiting_does_not_block_the_event_loop(
    store: ResultStore, make_row: MakeRow, write_lock: WriteLock
) -> None:
    writer = store.writer()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    tick_task = asyncio.create_task(ticker())
    try:
        with write_lock():
            pending = asyncio.gather(
                asyncio.wrap_future(writer.submit(make_row("w"))), writer.asubmit(make_row("a"))
            )
            await asyncio.sleep(SETTLE_S)
            assert not pending.done()
            assert ticks >= 5  # the loop kept running while both waited for the commit
        await asyncio.wait_for(pending, timeout=60)
    finally:
        tick_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tick_task
    assert store.get_many("task", ["w", "a"], "cfg-1").keys() == {"w", "a"}


async def test_asubmit_errors_and_cancellation(
    store: ResultStore, make_row: MakeRow, write_lock: WriteLock
) -> None:
    writer = store.writer()
    with pytest.raises(StoreError, match="ck_loom_results_status") as caught:
        await writer.asubmit(_poisoned(make_row("bad")))
    assert "exploded" not in str(caught.value)  # the row's content stays out of the message
    with pytest.raises(LoomUsageError, match="takes a ResultRow"):
        await writer.asubmit("row")  # type: ignore[arg-type]

    with write_lock():
        waiting = asyncio.create_task(writer.asubmit(make_row("cancelled-waiter")))
        wrapped = asyncio.wrap_future(writer.submit(make_row("cancelled-wrapped")))
        await asyncio.sleep(0.1)
        waiting.cancel()
        wrapped.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    await asyncio.to_thread(writer.flush, 60)
    # Cancelling a wait does not withdraw the row: the work was done, it is kept.
    found = store.get_many("task", ["cancelled-waiter", "cancelled-wrapped"], "cfg-1")
    assert found.keys() == {"cancelled-waiter", "cancelled-wrapped"}
    writer.close()
    with pytest.raises(StoreError, match="is closed"):
        await writer.asubmit(make_row("late"))


def test_postgres_refuses_nul_and_only_that_row_fails(
    pg_target: Any, make_row: MakeRow, write_lock_on: Callable[[Any], WriteLockCM]
) -> None:
    # PostgreSQL text cannot hold NUL (SQLite can): the row is refused with a clear message,
    # the rows written alongside it are kept.
    with ResultStore(pg_target.target) as store:
        writer = store.writer()
        with write_lock_on(pg_target):
            good = [writer.submit(make_row(f"g{i}")) for i in range(5)]
            bad = writer.submit(make_row("nul", raw_output="before\x00after"))
            time.sleep(SETTLE_S)
        _wait_all([*good, bad])
        assert all(f.exception() is None for f in good)
        with pytest.raises(StoreError, match=r"cannot contain NUL \(0x00\) bytes"):
            bad.result()
        assert store.stats("task").total == 5


async def test_submit_each_on_loop_judges_each_row_on_its_own(
    store: ResultStore, make_row: MakeRow
) -> None:
    writer = store.writer()
    rows = [make_row("each-1"), _poisoned(make_row("each-bad")), make_row("each-2")]
    first, bad, second = await writer.submit_each_on_loop(rows)
    assert first is None and second is None
    assert isinstance(bad, StoreError) and "ck_loom_results_status" in str(bad)
    assert set(store.get_many("task", ["each-1", "each-bad", "each-2"], "cfg-1")) == {
        "each-1",
        "each-2",
    }
    # All good, one row, nothing: one outcome per row, in order.
    assert await writer.submit_each_on_loop([make_row("each-3"), make_row("each-4")]) == [
        None,
        None,
    ]
    assert await writer.submit_each_on_loop([]) == []
    with pytest.raises(LoomUsageError, match="takes ResultRow items"):
        writer.submit_each_on_loop(["not a row"])  # type: ignore[list-item]
    writer.close()
    with pytest.raises(StoreError, match="closed"):
        writer.submit_each_on_loop([make_row("late")])


async def test_submit_each_on_loop_beside_other_submissions(
    store: ResultStore, make_row: MakeRow, write_lock: WriteLock
) -> None:
    # One group holding a thread submission, an asyncio one and a per-row one, one row bad:
    # only that row fails; every waiter hears of its own rows.
    writer = store.writer()
    with write_lock():
        plain = writer.submit(make_row("g-plain"))
        each = writer.submit_each_on_loop([make_row("g-1"), _poisoned(make_row("g-bad"))])
        awaited = asyncio.ensure_future(writer.asubmit(make_row("g-async")))
        await asyncio.sleep(SETTLE_S)
    outcomes = await each
    await awaited
    assert plain.result(timeout=30) is None
    assert outcomes[0] is None and isinstance(outcomes[1], StoreError)
    assert store.stats("task").succeeded == 3
