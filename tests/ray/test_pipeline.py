"""LoomMapper inside real Ray Data pipelines on a local Ray (2 CPUs), against FakeLLMServer.

Each pipeline starts its own actors (a few seconds each on a quiet machine): the tests are
few and each checks several things of one run.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from loom_backends.testing import FakeLLMServer, FakeReply, RecordedRequest
from loom_store import ResultStore

pytestmark = [
    pytest.mark.slow,
    # Ray warns about its own deprecations from its modules; Loom's warnings still fail a test.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*"),
]

TEMPLATE = "Echo {{ text }}"


def answer(req: RecordedRequest) -> str | FakeReply:
    text = req.last_user_text
    if text.endswith("7"):
        return FakeReply(status=400, body={"error": {"message": "no sevens"}})
    return json.dumps({"echo": text})


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(answer) as srv:
        yield srv


def mapper_kwargs(server: FakeLLMServer, store: Path, task: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "fake-model",
        "prompt_template": TEMPLATE,
        "response_model": dict,
        "task_name": task,
        "store": str(store),
        "base_url": server.base_url,
        "api_key": "sk-test",
        "max_retries": 0,
        **extra,
    }


def run_pipeline(ray: Any, items: list[dict[str, Any]], kwargs: dict[str, Any]) -> list[Any]:
    from loom_ray import LoomMapper

    ds = ray.data.from_items(items)
    out = ds.map_batches(
        LoomMapper,
        fn_constructor_kwargs=kwargs,
        concurrency=2,
        batch_size=100,
        # The actors wait on HTTP: half a CPU each leaves room for Ray's own tasks on 2 CPUs.
        num_cpus=0.5,
    )
    rows: list[Any] = out.take_all()
    return rows


def check_rows(rows: list[Any], n: int) -> None:
    assert len(rows) == n
    by_i = {row["i"]: row for row in rows}
    assert sorted(by_i) == list(range(n))
    for i, row in by_i.items():
        if str(i).endswith("7"):
            assert not row["loom_ok"] and row["loom_error_code"] == "provider_bad_request"
            assert row["loom_data"] is None
        else:
            # Each result is on the row of its own input.
            assert row["loom_ok"], row
            assert json.loads(row["loom_data"]) == {"echo": f"Echo item {i}"}


def test_each_input_called_once_then_served_from_the_store(
    ray_cluster: Any, server: FakeLLMServer, tmp_path: Path
) -> None:
    n = 2000
    items = [{"i": i, "text": f"item {i}"} for i in range(n)]
    kwargs = mapper_kwargs(server, tmp_path / "loom.db", "ray-once", input_columns=["text"])
    rows = run_pipeline(ray_cluster, items, kwargs)
    check_rows(rows, n)
    assert server.request_count == n  # each input reached exactly one actor, once
    assert not any(row["loom_cached"] for row in rows)
    sevens = sum(1 for i in range(n) if str(i).endswith("7"))

    again = run_pipeline(ray_cluster, items, kwargs)
    check_rows(again, n)
    # Only the failures are called again: failed rows are never served from the store.
    assert server.request_count == n + sevens
    assert sum(1 for row in again if row["loom_cached"]) == n - sevens
    stats = ResultStore(tmp_path / "loom.db").stats("ray-once")
    assert (stats.total, stats.succeeded, stats.failed) == (n, n - sevens, sevens)


def mapper_pids() -> list[int]:
    pids = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "MapBatches(LoomMapper)" in " ".join(proc.cmdline()):
                pids.append(proc.pid)
        except psutil.Error:
            continue
    return pids


def test_an_actor_killed_mid_run(ray_cluster: Any, tmp_path: Path) -> None:
    n = 1500
    with FakeLLMServer(lambda req: json.dumps({"echo": req.last_user_text}), latency=0.02) as srv:
        kwargs = mapper_kwargs(srv, tmp_path / "loom.db", "ray-kill", max_workers=8)
        killed: list[int] = []

        def kill_one() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if srv.request_count >= n // 4 and (pids := mapper_pids()):
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
                    return
                time.sleep(0.05)

        killer = threading.Thread(target=kill_one, daemon=True)
        killer.start()
        items = [{"text": f"item {i}"} for i in range(n)]
        rows = run_pipeline(ray_cluster, items, kwargs)
        killer.join(timeout=5)
        assert killed, "no LoomMapper actor was found to kill"
        assert (
            srv.request_count < n + 200
        )  # at most what the killed actor had in flight, and its batch
    assert len(rows) >= n and all(row["loom_ok"] for row in rows)
    assert {row["text"] for row in rows} == {item["text"] for item in items}
    stats = ResultStore(tmp_path / "loom.db").stats("ray-kill")
    assert (stats.total, stats.succeeded) == (n, n)  # exactly one stored row per input


def test_the_pipeline_wide_rpm_limit(ray_cluster: Any, tmp_path: Path) -> None:
    rpm = 1200  # 20 requests a second for the whole pipeline, whatever the actors
    n = 120
    usage = '{"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}'
    with FakeLLMServer(lambda req: usage, rpm_limit=rpm) as srv:
        kwargs = mapper_kwargs(srv, tmp_path / "loom.db", "ray-rpm", rpm=rpm, max_workers=16)
        # A response model by its import path: imported in each actor, not pickled.
        kwargs["response_model"] = "loom_protocol:Usage"
        items = [{"text": f"item {i}"} for i in range(n)]
        rows = run_pipeline(ray_cluster, items, kwargs)
        received = srv.requests
    assert len(rows) == n and all(row["loom_ok"] for row in rows)
    data = json.loads(rows[0]["loom_data"])
    assert data == {**json.loads(usage), "cached_tokens": 0}  # Usage's defaults filled in
    assert [r.status for r in received].count(429) == 0  # the server's own limit was never hit
    times = sorted(r.received_at for r in received)
    # 10 at once (the burst), then 19.6 a second: 110 more take about 5.6 s.
    assert times[-1] - times[0] >= 110 / 20 * 0.9


def test_two_pipelines_sharing_a_limit_name_must_agree(ray_cluster: Any) -> None:
    from loom_protocol import LoomUsageError
    from loom_ray._shared import SharedLimit

    first = SharedLimit("loom-test-agree", 600.0, None)
    assert SharedLimit("loom-test-agree", 600.0, None).rpm == 600.0
    with pytest.raises(LoomUsageError, match=r"already runs with rpm=600\.0"):
        SharedLimit("loom-test-agree", 1200.0, None)
    assert first.stats()["calls"] == 0
