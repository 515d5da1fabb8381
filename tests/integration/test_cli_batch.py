"""``loom run --batch``, ``loom batches`` and ``loom cancel`` against FakeLLMServer."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from loom_backends.testing import BatchPlan, FakeLLMServer, RecordedRequest

from .conftest import SECRET_KEY, CliRunner, cli_env, read_jsonl, write_jsonl


def echo(request: RecordedRequest) -> str:
    return json.dumps({"text": request.last_user_text})


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(echo, batch=BatchPlan(complete_after=0.2, shuffle=True)) as srv:
        yield srv


def _creates(server: FakeLLMServer) -> int:
    return sum(r.path == "/v1/batches" and "input_file_id" in r.body for r in server.requests)


def test_run_batch_then_batches_then_nothing_sent_again(
    run_cli: CliRunner, server: FakeLLMServer, tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "in.jsonl", [{"text": f"doc {i}"} for i in range(25)])
    args = ["run", "in.jsonl", "--model", "gpt-4o-mini", "--base-url", server.base_url]
    args += ["-t", "{{ text }}", "--json", "--batch", "--poll-interval", "0.01", "-o", "out.jsonl"]
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert [row["data"] for row in rows] == [{"text": f"doc {i}"} for i in range(25)]
    assert "25 succeeded" in done.stderr and "25 by provider batch" in done.stderr
    assert SECRET_KEY not in done.stderr + done.stdout
    assert _creates(server) == 1

    listed = run_cli("batches")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].split()[:3] == ["in", "1", "0"]
    one = run_cli("batches", "in")
    assert "collected" in one.stdout and "25" in one.stdout
    assert run_cli("batches", "nope").returncode == 2

    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert "25 cached" in again.stderr
    assert _creates(server) == 1


def test_cancel(run_cli: CliRunner, server: FakeLLMServer, tmp_path: Path) -> None:
    # Requests come due evenly over complete_after: an hour, so that none has run by the
    # cancel however slowly the machine starts the CLI (60 s: one of five had, under load).
    server.batch_plan = BatchPlan(complete_after=3600.0)
    write_jsonl(tmp_path / "in.jsonl", [{"text": f"doc {i}"} for i in range(5)])
    args = ["run", "in.jsonl", "--model", "gpt-4o-mini", "--base-url", server.base_url]
    args += ["-t", "{{ text }}", "--json", "--batch", "--poll-interval", "0.01"]
    # A run that waits is interrupted (its job stays), then cancelled from another command.
    proc = subprocess.Popen(
        [sys.executable, "-m", "loom_core._cli", *args],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    # Interrupted while it polls (the batch's id is stored by then).
    while not any(r.path.startswith("/v1/batches/batch") for r in server.requests):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "resume" in err.lower()
    cancelled = run_cli("cancel", "in", "--base-url", server.base_url)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "1 asked to stop" in cancelled.stdout
    finished = run_cli(*args)
    assert finished.returncode == 1, finished.stderr
    assert "cancelled" in finished.stderr
    assert _creates(server) == 1
    row = run_cli("batches", "in").stdout.splitlines()[1].split()
    assert row[1:4] == ["collected", "0", "5"] and row[7] == "5"  # state, round, 5 cancelled


def test_run_batch_refuses_the_spending_caps(
    run_cli: CliRunner, server: FakeLLMServer, tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "in.jsonl", [{"text": "doc"}])
    args = ["run", "in.jsonl", "--model", "gpt-4o-mini", "--base-url", server.base_url]
    args += ["-t", "{{ text }}", "--batch", "--max-cost", "1", "-o", "out.jsonl"]
    done = run_cli(*args)
    assert done.returncode == 2, done.stderr
    assert "--max-cost and --max-tokens-total do not apply to --batch" in done.stderr
    assert server.requests == []
    assert not (tmp_path / "out.jsonl").exists()
