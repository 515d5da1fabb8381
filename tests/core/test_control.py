"""Leaving early, concurrency from threads and tasks, running under a live loop, kill -9."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from loom_backends.testing import FakeLLMServer, FakeReply, RecordedRequest
from loom_store import ResultStore

from .conftest import LoomFactory, echo_json


def slow_echo(req: RecordedRequest) -> FakeReply:
    return FakeReply(echo_json(req), delay=0.05)


def _settle(srv: FakeLLMServer, seconds: float = 0.6) -> int:
    time.sleep(seconds)
    return srv.request_count


def test_breaking_out_of_stream_stops_the_batch(make_loom: LoomFactory) -> None:
    with FakeLLMServer(slow_echo) as srv:
        loom = make_loom(srv, response_model=dict)
        stream = loom.stream([f"t{i}" for i in range(200)], task_name="early", max_workers=5)
        for _ in stream:
            at_first = srv.request_count
            break
        stream.close()  # what a for-loop's break does once the generator is dropped
        total = _settle(srv)
        assert total - at_first <= 10, (at_first, total)
        assert total < 20


async def test_closing_astream_stops_the_batch(amake_loom: LoomFactory) -> None:
    with FakeLLMServer(slow_echo) as srv:
        loom = amake_loom(srv, response_model=dict)
        stream = loom.astream([f"t{i}" for i in range(200)], max_workers=5)
        async with contextlib.aclosing(stream):
            async for _ in stream:
                at_first = srv.request_count
                break
        await asyncio.sleep(0.6)
        assert srv.request_count - at_first <= 10


async def test_cancelling_the_consumer_task_stops_the_batch(amake_loom: LoomFactory) -> None:
    with FakeLLMServer(slow_echo) as srv:
        loom = amake_loom(srv, response_model=dict)
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in loom.astream([f"c{i}" for i in range(200)], max_workers=5):
                first.set()

        task = asyncio.create_task(consume())
        await first.wait()
        at_first = srv.request_count
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.6)
        assert srv.request_count - at_first <= 10


def test_results_seen_before_leaving_are_stored(make_loom: LoomFactory, tmp_path: Path) -> None:
    with FakeLLMServer(slow_echo) as srv:
        loom = make_loom(srv, response_model=dict)
        seen = []
        stream = loom.stream([f"k{i}" for i in range(100)], task_name="kept", max_workers=5)
        for result in stream:
            seen.append(result.task_id)
            if len(seen) == 7:
                break
        stream.close()
    store = ResultStore(tmp_path / "loom.db")
    try:
        stored = {row.task_id for row in store.iter_results("kept")}
    finally:
        store.close()
    assert set(seen) <= stored


def test_one_loom_from_eight_threads(make_loom: LoomFactory, server: FakeLLMServer) -> None:
    loom = make_loom(server, response_model=dict)
    errors: list[BaseException] = []
    outputs: dict[int, list[str]] = {}

    def work(n: int) -> None:
        try:
            inputs = [f"thread{n}-{i}" for i in range(25)]
            task_name = "threads" if n % 2 else None
            batch = loom.map(inputs, task_name=task_name, max_workers=4)
            outputs[n] = [r.data["text"] for r in batch]
            assert loom.process(f"single{n}").data == {"text": f"single{n}"}
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for n in range(8):
        assert outputs[n] == [f"thread{n}-{i}" for i in range(25)]


async def test_concurrent_asyncio_tasks(amake_loom: LoomFactory, server: FakeLLMServer) -> None:
    loom = amake_loom(server, response_model=dict)

    async def one(n: int) -> list[str]:
        batch = await loom.amap([f"task{n}-{i}" for i in range(20)], task_name=f"t{n % 3}")
        return [r.data["text"] for r in batch]

    got = await asyncio.gather(*(one(n) for n in range(8)))
    for n, texts in enumerate(got):
        assert texts == [f"task{n}-{i}" for i in range(20)]


async def test_sync_api_works_under_a_running_loop(
    amake_loom: LoomFactory, server: FakeLLMServer
) -> None:
    # Jupyter runs cells inside a live loop: the sync API must still work there.
    loom = amake_loom(server, response_model=dict)
    batch = loom.map(["inside", "a", "loop"])
    assert [r.data["text"] for r in batch] == ["inside", "a", "loop"]
    assert [r.data["text"] for r in loom.stream(["x", "y"], ordered=True)] == ["x", "y"]


_CHILD = textwrap.dedent(
    """
    import sys
    from loom_core import TaskLoom

    base_url, db = sys.argv[1], sys.argv[2]
    loom = TaskLoom("fake-model", "{{ text }}", response_model=dict, base_url=base_url,
                    api_key="k", db_path=db)
    for result in loom.stream([{"text": f"crash {i}"} for i in range(300)],
                              task_name="crash", max_workers=8):
        print(result.task_id, flush=True)
    """
)


def test_kill_9_loses_no_seen_result(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    with FakeLLMServer(lambda req: FakeReply(echo_json(req), delay=0.02)) as srv:
        child = subprocess.Popen(
            [sys.executable, str(script), srv.base_url, str(db)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        seen: list[str] = []
        deadline = time.monotonic() + 60
        while len(seen) < 60 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            seen.append(line.strip())
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        seen.extend(line.strip() for line in child.stdout.read().splitlines() if line.strip())
        child.stdout.close()
        assert len(seen) >= 60

        store = ResultStore(db)
        try:
            stored = {row.task_id: row for row in store.iter_results("crash")}
        finally:
            store.close()
        assert set(seen) <= set(stored)
        for task_id in seen:
            assert json.loads(stored[task_id].data or "{}")["text"].startswith("crash ")

        # The re-run asks only for what is not stored.
        from loom_core import TaskLoom

        before = srv.request_count
        with TaskLoom(
            "fake-model",
            "{{ text }}",
            response_model=dict,
            base_url=srv.base_url,
            api_key="k",
            db_path=db,
        ) as loom:
            batch = loom.map(
                [{"text": f"crash {i}"} for i in range(300)], task_name="crash", max_workers=16
            )
        assert all(r.is_success for r in batch)
        assert srv.request_count - before == 300 - len(stored)
        assert sum(r.cached for r in batch) == len(stored)
