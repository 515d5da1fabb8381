"""A batch always ends: a failing feeder, worker or store, and closing the loom mid-batch.

Every test here would hang without the engine's guarantees, so each one runs the consumer
under a deadline (a helper thread joined with a timeout, or ``asyncio.wait_for``) and fails
instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from loom_backends import CallableBackend
from loom_backends.testing import FakeLLMServer, FakeReply, RecordedRequest
from loom_core import LoomUsageError, TaskLoom
from loom_protocol import (
    BatchErrorEvent,
    ChatRequest,
    ChatResponse,
    ErrorCode,
    StoreError,
    StreamEvent,
    TaskResultEvent,
)
from loom_store import ResultStore

from .conftest import LoomFactory, echo_json

pytestmark = pytest.mark.timeout(120)


def slow_echo(req: RecordedRequest) -> FakeReply:
    return FakeReply(echo_json(req), delay=0.05)


def within(seconds: float, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on a helper thread; fail (instead of hanging) if it takes over ``seconds``."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:  # handed back to the test below
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still running after {seconds} s: the batch hangs")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def settled(count: Callable[[], int], quiet: float, seconds: float) -> int:
    """``count()`` once it has not changed for ``quiet`` seconds; fail if it keeps changing
    for ``seconds`` (a loaded machine stops calls late, a bug never does)."""
    deadline = time.monotonic() + seconds
    last, since = count(), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            pytest.fail(f"still changing after {seconds} s (now {last})")
        time.sleep(0.05)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
    return last


def count_rows(db: Path, task_name: str) -> int:
    # A plain sqlite3 connection: counting must not depend on the engine under test.
    with contextlib.closing(sqlite3.connect(db)) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM loom_results WHERE task_name = ?", (task_name,)
        ).fetchone()
    return int(count)


class LookupFailsStore(ResultStore):
    """A store whose chunk lookup raises from its ``fail_from``-th call on."""

    def __init__(self, target: str | os.PathLike[str], fail_from: int) -> None:
        super().__init__(target)
        self.fail_from = fail_from
        self.calls = 0

    def get_hits(self, task_name: str, task_ids: Sequence[str], config_fp: str) -> str:
        self.calls += 1
        if self.calls >= self.fail_from:
            raise RuntimeError("disk I/O error (injected)")
        return super().get_hits(task_name, task_ids, config_fp)


# -- item 3: whatever fails inside the engine ends the batch ----------------------------------


@pytest.mark.parametrize("fail_from", [1, 2])
def test_a_failing_store_lookup_ends_map(
    make_loom: LoomFactory,
    server: FakeLLMServer,
    tmp_path: Path,
    fail_from: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = LookupFailsStore(tmp_path / "flaky.db", fail_from=fail_from)
    try:
        loom = make_loom(server, response_model=dict, store=store)
        inputs = [f"x{i}" for i in range(3000)]
        with pytest.raises(RuntimeError, match="disk I/O error"):
            within(20, lambda: loom.map(inputs, task_name="flaky", max_workers=4))
        stopped = [r for r in caplog.records if r.name == "loom.engine"]
        assert [r.levelname for r in stopped] == ["WARNING"]
        assert "a batch stopped: RuntimeError: disk I/O error" in stopped[0].getMessage()
        # The loom is still usable: a batch without a store runs to the end.
        assert within(20, lambda: len(loom.map(["a", "b"], max_workers=2).successful())) == 2
    finally:
        store.close()


def test_a_failing_store_lookup_ends_stream(
    make_loom: LoomFactory, server: FakeLLMServer, tmp_path: Path
) -> None:
    store = LookupFailsStore(tmp_path / "flaky.db", fail_from=2)
    try:
        loom = make_loom(server, response_model=dict, store=store)
        stream = loom.stream([f"s{i}" for i in range(3000)], task_name="flaky", max_workers=4)
        with pytest.raises(RuntimeError, match="disk I/O error"):
            within(20, lambda: list(stream))
    finally:
        store.close()


def test_a_failing_store_lookup_is_a_batch_error_event(
    make_loom: LoomFactory, server: FakeLLMServer, tmp_path: Path
) -> None:
    store = LookupFailsStore(tmp_path / "flaky.db", fail_from=2)
    try:
        loom = make_loom(server, response_model=dict, store=store)
        events = loom.stream_events([f"e{i}" for i in range(3000)], task_name="flaky")
        seen: list[StreamEvent] = within(20, lambda: list(events))
        assert seen[0].type == "batch_start"
        last = seen[-1]
        assert isinstance(last, BatchErrorEvent)
        assert "disk I/O error" in last.error.message
    finally:
        store.close()


async def test_a_failing_store_lookup_is_a_batch_error_event_async(
    amake_loom: LoomFactory, server: FakeLLMServer, tmp_path: Path
) -> None:
    store = LookupFailsStore(tmp_path / "flaky.db", fail_from=2)
    try:
        loom = amake_loom(server, response_model=dict, store=store)

        async def collect() -> list[StreamEvent]:
            return [e async for e in loom.astream_events([f"a{i}" for i in range(3000)], "flaky")]

        seen = await asyncio.wait_for(collect(), 20)
        last = seen[-1]
        assert isinstance(last, BatchErrorEvent)
        assert "disk I/O error" in last.error.message
        # Whatever was delivered before the error is a real result.
        assert all(isinstance(e, TaskResultEvent) for e in seen[1:-1])
    finally:
        store.close()


def test_a_store_closed_mid_run_ends_the_batch(
    make_loom: LoomFactory, server: FakeLLMServer, tmp_path: Path
) -> None:
    """The store's owner closes it while a batch reads from it: the batch ends, no hang."""
    store = ResultStore(tmp_path / "owned.db")
    loom = make_loom(server, response_model=dict, store=store)

    def inputs() -> Iterator[str]:
        for i in range(3000):
            if i == 40:
                store.close()  # on the loom's loop thread, as a shutting-down app would
            yield f"c{i}"

    with pytest.raises(StoreError, match="closed"):
        within(20, lambda: loom.map(inputs(), task_name="owned", max_workers=4))


def test_a_store_closed_mid_run_is_a_store_error_event(
    make_loom: LoomFactory, server: FakeLLMServer, tmp_path: Path
) -> None:
    store = ResultStore(tmp_path / "owned.db")
    loom = make_loom(server, response_model=dict, store=store)

    def inputs() -> Iterator[str]:
        for i in range(3000):
            if i == 40:
                store.close()
            yield f"v{i}"

    events: list[StreamEvent] = within(20, lambda: list(loom.stream_events(inputs(), "owned")))
    last = events[-1]
    assert isinstance(last, BatchErrorEvent)
    assert last.error.code is ErrorCode.STORE_ERROR
    assert "closed" in last.error.message


class FatalBackend:
    """A backend that raises a BaseException (not an Exception) on one input."""

    def __init__(self) -> None:
        self.calls = 0

    async def acomplete(self, request: ChatRequest) -> ChatResponse:
        self.calls += 1
        text = request.messages[-1].content
        if text == "w7":
            raise Fatal("the backend gave up the ghost")
        await asyncio.sleep(0.01)
        return ChatResponse(content='{"ok": true}')

    async def aclose(self) -> None:
        return None


class Fatal(BaseException):
    """Not an Exception: the engine must not turn it into a result, nor lose it."""


def test_a_worker_failure_ends_map(make_loom: LoomFactory, server: FakeLLMServer) -> None:
    backend = FatalBackend()
    loom = make_loom(server, response_model=dict, backend=backend)
    with pytest.raises(Fatal, match="gave up the ghost"):
        within(20, lambda: loom.map([f"w{i}" for i in range(200)], max_workers=3))
    assert backend.calls < 200  # the batch stopped; it did not run to the end
    assert within(20, lambda: loom.process("w1").is_success)


async def test_a_worker_failure_ends_astream(
    amake_loom: LoomFactory, server: FakeLLMServer
) -> None:
    loom = amake_loom(server, response_model=dict, backend=FatalBackend())

    async def consume() -> int:
        return len([r async for r in loom.astream([f"w{i}" for i in range(200)], max_workers=3)])

    with pytest.raises(Fatal):
        await asyncio.wait_for(consume(), 20)


# -- item 4: closing the loom while a batch runs ---------------------------------------------


def _close_when(loom: TaskLoom[Any], ready: Callable[[], bool], record: dict[str, float]) -> None:
    def closer() -> None:
        while not ready():
            time.sleep(0.01)
        record["closing"] = time.monotonic()
        loom.close()
        record["closed"] = time.monotonic()

    threading.Thread(target=closer, daemon=True).start()


def test_close_from_another_thread_during_map(make_loom: LoomFactory, tmp_path: Path) -> None:
    db = tmp_path / "loom.db"
    with FakeLLMServer(slow_echo) as srv:
        loom = make_loom(srv, response_model=dict)
        record: dict[str, float] = {}
        counts: dict[str, int] = {}

        def ready() -> bool:
            try:
                if count_rows(db, "closing") < 10:
                    return False
            except sqlite3.OperationalError:  # the store is not created yet
                return False
            counts["before"] = count_rows(db, "closing")
            return True

        _close_when(loom, ready, record)
        inputs = [f"m{i}" for i in range(2000)]
        with pytest.raises(LoomUsageError, match="closed while"):
            within(30, lambda: loom.map(inputs, task_name="closing", max_workers=4))
        raised = time.monotonic()
        assert raised - record["closing"] < 1.0
        within(10, lambda: loom.close())  # a second close is a no-op
        assert count_rows(db, "closing") >= counts["before"]
        assert srv.request_count < 2000


def test_close_from_another_thread_during_stream(make_loom: LoomFactory, tmp_path: Path) -> None:
    with FakeLLMServer(slow_echo) as srv:
        loom = make_loom(srv, response_model=dict)
        stream = loom.stream([f"s{i}" for i in range(2000)], task_name="closing", max_workers=4)
        seen = []
        record: dict[str, float] = {}
        _close_when(loom, lambda: len(seen) >= 5, record)

        def consume() -> None:
            for result in stream:
                seen.append(result.task_id)

        with pytest.raises(LoomUsageError, match="closed while"):
            within(30, consume)
        assert time.monotonic() - record["closing"] < 1.0
        stored = count_rows(tmp_path / "loom.db", "closing")
        assert stored >= len(seen)


def test_close_from_the_stream_loop_body(make_loom: LoomFactory, tmp_path: Path) -> None:
    with FakeLLMServer(slow_echo) as srv:
        loom = make_loom(srv, response_model=dict)
        seen: list[str] = []

        def consume() -> None:
            for result in loom.stream([f"b{i}" for i in range(500)], "body", max_workers=4):
                seen.append(result.task_id)
                if len(seen) == 3:
                    loom.close()

        started = time.monotonic()
        with pytest.raises(LoomUsageError, match="closed"):
            within(20, consume)
        assert time.monotonic() - started < 5
        assert count_rows(tmp_path / "loom.db", "body") >= len(seen)


def test_a_stream_started_after_close_raises(make_loom: LoomFactory, server: FakeLLMServer) -> None:
    loom = make_loom(server, response_model=dict)
    stream = loom.stream(["a", "b"])
    loom.close()
    with pytest.raises(LoomUsageError, match="closed"):
        within(10, lambda: list(stream))


def test_a_stream_left_open_across_close_raises(
    make_loom: LoomFactory, server: FakeLLMServer
) -> None:
    loom = make_loom(server, response_model=dict)
    stream = loom.stream([f"o{i}" for i in range(100)], max_workers=2)
    first = within(10, lambda: next(stream))
    assert first.is_success
    within(10, loom.close)
    with pytest.raises(LoomUsageError, match="closed"):
        within(10, lambda: list(stream))


def test_close_twice_at_once_during_map(make_loom: LoomFactory) -> None:
    with FakeLLMServer(slow_echo) as srv:
        loom = make_loom(srv, response_model=dict)
        outcome: dict[str, BaseException] = {}

        def run() -> None:
            try:
                loom.map([f"t{i}" for i in range(500)], max_workers=4)
            except BaseException as exc:
                outcome["map"] = exc

        runner = threading.Thread(target=run, daemon=True)
        runner.start()
        while srv.request_count < 8:
            time.sleep(0.01)
        closers = [threading.Thread(target=loom.close, daemon=True) for _ in range(3)]
        for closer in closers:
            closer.start()
        for thread in [*closers, runner]:
            thread.join(10)
            assert not thread.is_alive(), "close() or map() deadlocked"
        assert isinstance(outcome["map"], LoomUsageError)


class ClosingBackend:
    """A backend that closes its own loom from inside a call (on the loom's loop thread)."""

    def __init__(self) -> None:
        self.loom: TaskLoom[Any] | None = None
        self.calls = 0
        self.close_error: BaseException | None = None

    async def acomplete(self, request: ChatRequest) -> ChatResponse:
        self.calls += 1
        if self.calls == 5:
            assert self.loom is not None
            try:
                self.loom.close()
            except BaseException as exc:
                self.close_error = exc
        await asyncio.sleep(0.01)
        return ChatResponse(content='{"ok": true}')

    async def aclose(self) -> None:
        return None


def test_close_from_inside_the_loop_does_not_deadlock(
    make_loom: LoomFactory, server: FakeLLMServer
) -> None:
    threshold = gc.get_threshold()
    backend = ClosingBackend()
    loom = make_loom(server, response_model=dict, backend=backend)
    backend.loom = loom
    with pytest.raises(LoomUsageError, match="closed"):
        within(20, lambda: loom.map([f"i{i}" for i in range(300)], max_workers=2))
    assert backend.close_error is None
    assert backend.calls < 300
    assert gc.get_threshold() == threshold  # the batch's GC policy was undone
    with pytest.raises(LoomUsageError, match="closed"):
        loom.map(["again"])


def test_close_from_a_sync_callable_backend(make_loom: LoomFactory, server: FakeLLMServer) -> None:
    """A plain function backend (run on a worker thread) that closes its loom mid-batch."""
    calls: list[int] = []
    holder: dict[str, TaskLoom[Any]] = {}

    def answer(request: ChatRequest) -> str:
        calls.append(1)
        if len(calls) == 5:
            holder["loom"].close()
        time.sleep(0.01)
        return '{"ok": true}'

    loom = make_loom(server, response_model=dict, backend=CallableBackend(answer))
    holder["loom"] = loom
    with pytest.raises(LoomUsageError, match="closed"):
        within(20, lambda: loom.map([f"f{i}" for i in range(300)], max_workers=3))
    assert len(calls) < 300


class AsyncClosingBackend(ClosingBackend):
    """Awaits its loom's aclose() from inside a call: one of the batch's own workers."""

    async def acomplete(self, request: ChatRequest) -> ChatResponse:
        self.calls += 1
        if self.calls == 5:
            assert self.loom is not None
            await self.loom.aclose()
        await asyncio.sleep(0.01)
        return ChatResponse(content='{"ok": true}')


async def test_aclose_from_a_worker_of_the_batch(
    amake_loom: LoomFactory, server: FakeLLMServer
) -> None:
    threshold = gc.get_threshold()
    backend = AsyncClosingBackend()
    loom = amake_loom(server, response_model=dict, backend=backend)
    backend.loom = loom
    with pytest.raises(LoomUsageError, match="closed while"):
        await asyncio.wait_for(loom.amap([f"i{i}" for i in range(300)], max_workers=3), 20)
    assert backend.calls < 300
    await asyncio.sleep(0.1)
    assert gc.get_threshold() == threshold  # the batch's GC policy was undone


async def test_aclose_while_astream_is_consumed(amake_loom: LoomFactory, tmp_path: Path) -> None:
    with FakeLLMServer(slow_echo) as srv:
        loom = amake_loom(srv, response_model=dict)
        seen: list[str] = []
        enough = asyncio.Event()

        async def consume() -> None:
            async for result in loom.astream([f"a{i}" for i in range(2000)], "aclosing", 4):
                seen.append(result.task_id)
                if len(seen) == 5:
                    enough.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(enough.wait(), 20)
        closing = time.monotonic()
        await asyncio.wait_for(loom.aclose(), 10)
        with pytest.raises(LoomUsageError, match="closed while"):
            await asyncio.wait_for(task, 5)
        assert time.monotonic() - closing < 1.5
        assert count_rows(tmp_path / "loom.db", "aclosing") >= len(seen)


async def test_aclose_while_astream_events_is_consumed(amake_loom: LoomFactory) -> None:
    with FakeLLMServer(slow_echo) as srv:
        loom = amake_loom(srv, response_model=dict)
        seen: list[StreamEvent] = []
        enough = asyncio.Event()

        async def consume() -> None:
            async for event in loom.astream_events([f"e{i}" for i in range(2000)], "ev", 4):
                seen.append(event)
                if len(seen) == 5:
                    enough.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(enough.wait(), 20)
        await asyncio.wait_for(loom.aclose(), 10)
        await asyncio.wait_for(task, 5)
        last = seen[-1]
        assert isinstance(last, BatchErrorEvent)
        assert last.error.code is ErrorCode.CANCELLED
        assert "closed while" in last.error.message


def test_close_from_another_thread_during_amap_on_a_user_loop(
    make_loom: LoomFactory,
) -> None:
    """amap runs on the caller's loop (not the loom's): close() from a thread still ends it."""
    with FakeLLMServer(slow_echo) as srv:
        loom = make_loom(srv, response_model=dict)
        record: dict[str, float] = {}
        _close_when(loom, lambda: srv.request_count >= 8, record)

        async def run() -> None:
            await loom.amap([f"u{i}" for i in range(2000)], max_workers=4)

        with pytest.raises(LoomUsageError, match="closed while"):
            within(30, lambda: asyncio.run(run()))
        assert time.monotonic() - record["closing"] < 1.5


# -- item 6: a stream nobody pulls from stops calling the provider ---------------------------


@pytest.mark.parametrize("task_name", [None, "kept"])
def test_a_stream_kept_after_break_stops_calling(
    make_loom: LoomFactory, task_name: str | None
) -> None:
    with FakeLLMServer(lambda req: FakeReply(echo_json(req), delay=0.005)) as srv:
        loom = make_loom(srv, response_model=dict)
        stream = loom.stream([f"k{i}" for i in range(1000)], task_name, max_workers=4)
        taken = []
        for result in stream:  # the iterator stays referenced below
            taken.append(result)
            if len(taken) == 3:
                break
        # It stopped, it is not just slow: the count settles, stays, and stays small.
        received = settled(lambda: srv.request_count, quiet=1.0, seconds=30)
        time.sleep(1.0)
        assert srv.request_count == received
        assert received <= 3 * 4 + 3, received
        # Pulling again resumes the batch and it still ends with every input.
        rest = within(30, lambda: list(stream))
        assert len(taken) + len(rest) == 1000


async def test_an_astream_kept_after_break_stops_calling(amake_loom: LoomFactory) -> None:
    with FakeLLMServer(lambda req: FakeReply(echo_json(req), delay=0.005)) as srv:
        loom = amake_loom(srv, response_model=dict)
        stream = loom.astream([f"k{i}" for i in range(1000)], max_workers=4)
        taken = []
        async for result in stream:
            taken.append(result)
            if len(taken) == 3:
                break
        await asyncio.sleep(1.0)
        assert srv.request_count <= 3 * 4 + 3, srv.request_count
        await stream.aclose()  # type: ignore[attr-defined]


def test_map_is_not_held_back(make_loom: LoomFactory, server: FakeLLMServer) -> None:
    loom = make_loom(server, response_model=dict)
    batch = within(60, lambda: loom.map([f"n{i}" for i in range(600)], max_workers=4))
    assert len(batch.successful()) == 600
