"""The runnable examples: quickstart and images as scripts, the FastAPI and Gradio handlers."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import itertools
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from loom_backends.testing import FakeLLMServer, RecordedRequest
from loom_core import TaskLoom
from loom_protocol import (
    BatchEndEvent,
    BatchStartEvent,
    LoomUsageError,
    StreamEvent,
    TaskResultEvent,
    parse_stream_event,
)

from .conftest import REPO, cli_env, profile_of, sensible_answer, subject_of

EXAMPLES = REPO / "examples"


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` under a private module name (importing runs nothing)."""
    module_name = f"loom_example_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # pydantic resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def run_example(name: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = cli_env()
    del env["OPENAI_API_KEY"]  # offline mode
    return subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        check=False,
    )


# -- scripts ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.xdist_group("ray")  # one local Ray at a time (tests/ray/conftest.py)
@pytest.mark.timeout(600)
def test_ray_batch_runs_offline_and_resumes_from_the_store(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="loom-ray's example needs ray[data]")
    # ~75 s on a quiet machine (a Ray start, two runs of 60 rows); far more beside the
    # parallel workers of the suite on two cores.
    run = run_example("ray_batch", tmp_path, timeout=540)
    if run.returncode != 0 and "timed out during startup" in run.stderr:
        # Ray's own limit (30 s for its raylet to register), missed on an overloaded machine.
        pytest.skip("a local Ray could not start here (its node timed out during startup)")
    assert run.returncode == 0, run.stderr
    assert "OPENAI_API_KEY is not set: using the offline fake model" in run.stdout
    assert "first run: 60/60 succeeded, 0 from the store, 60 requests to the model" in run.stdout
    assert "second run: 60/60 succeeded, 60 from the store, 0 requests to the model" in run.stdout
    assert " 2  mixed     Great battery, terrible screen. (order 0)" in run.stdout
    assert (tmp_path / ".loom-ray.db").is_file()


def test_quickstart_runs_offline_and_resumes_from_the_store(tmp_path: Path) -> None:
    first = run_example("quickstart", tmp_path)
    assert first.returncode == 0, first.stderr
    assert "OPENAI_API_KEY is not set: using the offline fake model" in first.stdout
    assert "Zhang San      Python, SQL" in first.stdout
    assert "Maria Garcia   Rust, statistics" in first.stdout
    assert first.stdout.count("(model)") == 4
    assert "4/4 succeeded, 0 from the store" in first.stdout
    assert (tmp_path / ".loom.db").exists()

    second = run_example("quickstart", tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("(store)") == 4
    assert "4/4 succeeded, 4 from the store, 0 tokens" in second.stdout


def test_images_runs_offline(tmp_path: Path) -> None:
    done = run_example("images", tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "input 1: {'colours': ['red', 'green']}" in lines
    assert "input 2: {'colours': ['blue']}" in lines
    assert any(
        line.startswith("input 3: failed: image_unreadable:") and "outside image_root" in line
        for line in lines
    )
    assert "input 4: failed: image_unreadable: image 'missing.png' not found" in lines
    assert not list(tmp_path.iterdir())  # no store without a task_name, images in a temp dir


def test_tiny_png_decodes_to_its_colour() -> None:
    images = load_example("images")
    png = images.tiny_png((1, 2, 3))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert images.first_pixel(png) == (1, 2, 3)


# -- FastAPI + SSE ----------------------------------------------------------------------------


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run ``app`` under uvicorn on 127.0.0.1 (an ephemeral port) in a thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped while starting"
            assert time.monotonic() < deadline, "uvicorn did not start within 30 s"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def parse_sse(lines: list[str]) -> list[tuple[str, StreamEvent]]:
    """Split SSE lines into (event name, parsed data) pairs, checking the framing."""
    events: list[tuple[str, StreamEvent]] = []
    name: str | None = None
    data: str | None = None
    for line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif line == "":
            assert name is not None
            assert data is not None
            events.append((name, parse_stream_event(data)))
            name = data = None
        else:
            pytest.fail(f"unexpected SSE line {line!r}")
    assert name is None, "the stream ended inside an event"
    assert data is None, "the stream ended inside an event"
    return events


def test_sse_events_arrive_as_tasks_finish(tmp_path: Path) -> None:
    gate = threading.Event()

    async def handler(request: RecordedRequest) -> str:
        text = subject_of(request.last_user_text)
        if "slow" in text:
            # Held until the client has seen a result: only an incremental stream lets it.
            deadline = time.monotonic() + 60
            while not gate.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        return json.dumps({"number": text.split()[-1], "vendor": "ACME"})

    fastapi_sse = load_example("fastapi_sse")
    invoices = [{"text": "fast invoice 1"}, {"text": "slow invoice 2"}, {"text": "fast invoice 3"}]
    with FakeLLMServer(handler) as srv:
        loom: TaskLoom[Any] = TaskLoom(
            "fake-model",
            fastapi_sse.PROMPT,
            response_model=dict,
            base_url=srv.base_url,
            api_key="sk-test",
            db_path=tmp_path / "sse.db",
        )
        app = fastapi_sse.build_app(loom, task_name="sse_test")
        lines: list[str] = []
        slow_pending_at_first_result: bool | None = None
        with (
            serve(app) as url,
            httpx.Client(timeout=120) as client,
            client.stream("POST", f"{url}/api/batch_extract", json=invoices) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                lines.append(line)
                if line != "event: task_result":
                    continue
                if slow_pending_at_first_result is None:
                    slow_pending_at_first_result = not gate.is_set() and any(
                        "slow" in r.last_user_text and r.status == 0 for r in srv.requests
                    )
                if lines.count("event: task_result") == 2:
                    gate.set()  # both fast results are out: let the held one finish
        with pytest.raises(LoomUsageError, match="closed"):
            loom.process("x")  # the app closed the loom it served at shutdown

    assert slow_pending_at_first_result is True
    events = parse_sse(lines)
    assert [name for name, _ in events] == [event.type for _, event in events]
    assert isinstance(events[0][1], BatchStartEvent)
    assert isinstance(events[-1][1], BatchEndEvent)
    results = [event for _, event in events if isinstance(event, TaskResultEvent)]
    assert sorted(e.index for e in results) == [0, 1, 2]
    assert results[-1].index == 1  # the held task finished last
    assert results[-1].result.data == {"number": "2", "vendor": "ACME"}
    assert events[-1][1].summary.succeeded == 3


def test_default_app_serves_from_env_and_refuses_paths_outside_image_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fastapi_sse = load_example("fastapi_sse")
    (tmp_path / "uploads").mkdir()
    monkeypatch.chdir(tmp_path)
    with FakeLLMServer(sensible_answer) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("LOOM_DB", str(tmp_path / "service.db"))
        monkeypatch.setenv("LOOM_IMAGE_ROOT", str(tmp_path / "uploads"))
        payload = [{"text": "Ann Lee knows Python"}, {"text": "x", "images": "/etc/hostname"}]
        app = fastapi_sse.build_app()
        with TestClient(app) as client:
            response = client.post("/api/batch_extract", json=payload)
            again = client.post("/api/batch_extract", json=payload[:1])
            bad = client.post("/api/batch_extract", json={"not": "a list"})
        assert srv.request_count == 1

    assert response.status_code == 200
    events = parse_sse(response.text.splitlines())
    by_index = {e.index: e.result for _, e in events if isinstance(e, TaskResultEvent)}
    assert by_index[0].data == {**profile_of("Ann Lee knows Python"), "words": 4}
    assert by_index[1].error is not None
    assert by_index[1].error.code == "image_unreadable"
    assert "outside image_root" in by_index[1].error.message
    cached = [
        e.result.cached for _, e in parse_sse(again.text.splitlines()) if e.type == "task_result"
    ]
    assert cached == [True]
    assert bad.status_code == 422
    assert (tmp_path / "service.db").exists()


def test_importing_the_fastapi_example_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    fastapi_sse = load_example("fastapi_sse")
    assert [route.path for route in fastapi_sse.app.routes if "batch" in route.path] == [
        "/api/batch_extract"
    ]
    assert not list(tmp_path.iterdir())


# -- Gradio -----------------------------------------------------------------------------------


def test_gradio_handler_yields_growing_tables_and_resumes(tmp_path: Path) -> None:
    gradio_app = load_example("gradio_app")
    papers = [f"Paper {i}: we fit model number {i} with statistics" for i in range(5)]
    progress: list[tuple[float, str]] = []

    def track(fraction: float, desc: str = "") -> None:
        progress.append((fraction, desc))

    with (
        FakeLLMServer(sensible_answer, latency=0.02) as srv,
        TaskLoom(
            "fake-model",
            gradio_app.PROMPT,
            response_model=dict,
            base_url=srv.base_url,
            api_key="sk-test",
            db_path=tmp_path / "gradio.db",
        ) as loom,
    ):
        tables = list(gradio_app.process_papers("\n\n".join(papers), track, loom=loom))
        assert srv.request_count == 5
        again = list(gradio_app.process_papers("\n\n".join(papers), track, loom=loom))
        assert srv.request_count == 5  # the second press is served from the store

    assert [len(table) for table in tables] == [1, 2, 3, 4, 5]
    for smaller, larger in itertools.pairwise(tables):
        assert larger[: len(smaller)] == smaller
    final = tables[-1]
    assert sorted(row[0] for row in final) == sorted(p[:60] for p in papers)
    assert all(row[1] == "✅ done" and row[3] is False for row in final)
    assert json.loads(final[0][2])["skills"] == ["statistics"]
    assert all(row[3] is True for row in again[-1])
    assert [round(f, 2) for f, _ in progress[:5]] == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert progress[4][1] == "5/5 | latest: ✅ done"


def test_gradio_handler_with_no_papers_yields_an_empty_table() -> None:
    gradio_app = load_example("gradio_app")
    assert list(gradio_app.process_papers("  \n\n ")) == [[]]
    assert gradio_app.split_papers("a\nb\n\n\nc") == [{"text": "a b"}, {"text": "c"}]


async def test_gradio_demo_builds_without_launching() -> None:
    # Built inside a running loop: gradio's Blocks() otherwise creates (and leaks) new event
    # loops for its queue locks, which pytest would report as unclosed-resource warnings.
    gradio_app = load_example("gradio_app")
    demo = gradio_app.build_demo()
    assert demo.title == "Loom: paper summaries"
    assert demo.analytics_enabled is False  # no telemetry, no version check online
    assert not getattr(demo, "is_running", False)
