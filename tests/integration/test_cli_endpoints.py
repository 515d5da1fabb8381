"""``loom run --base-url A --base-url B``: several endpoints from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loom_backends.testing import FakeLLMServer, FakeReply, RecordedRequest
from loom_core._cli import main

from .conftest import read_jsonl, write_jsonl

KEY = "sk-cli-endpoints-secret-77"


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_jsonl(tmp_path / "in.jsonl", [f"doc {i}" for i in range(40)])
    monkeypatch.chdir(tmp_path)
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOOM_CLI_KEY", KEY)
    return tmp_path


def test_repeated_base_url_spreads_over_the_servers(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with FakeLLMServer() as a, FakeLLMServer() as b:
        dead = FakeLLMServer().start()
        dead_url = dead.base_url
        dead.stop()  # a third server that refuses connections: its tasks go elsewhere
        status = main(
            [
                "run", "in.jsonl", "--model", "m", "-t", "{{ text }}", "-o", "out.jsonl",
                "--base-url", a.base_url, "--base-url", b.base_url, "--base-url", dead_url,
                "--api-key-env", "LOOM_CLI_KEY", "--workers", "4", "--no-progress",
            ]
        )  # fmt: skip
        captured = capsys.readouterr()
        assert status == 0, captured.err
        assert a.request_count >= 10 and b.request_count >= 10
        assert {r.headers["authorization"] for r in a.requests + b.requests} == {f"Bearer {KEY}"}
    rows = read_jsonl(in_tmp / "out.jsonl")
    assert len(rows) == 40 and all(row["is_success"] for row in rows)
    assert KEY not in captured.err + captured.out + json.dumps(rows)


def test_a_repeated_base_url_twice_the_same_is_refused(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "http://127.0.0.1:9/v1"
    status = main(
        ["run", "in.jsonl", "--model", "m", "-t", "x", "--base-url", url, "--base-url", url + "/"]
    )
    assert status == 2
    assert "base_url[1]" in capsys.readouterr().err


def test_fallback_model_from_the_command_line(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def handler(req: RecordedRequest) -> FakeReply:
        if req.body.get("model") == "big":
            return FakeReply(content="overloaded", status=503)
        return FakeReply(content=f"from {req.body.get('model')}")

    with FakeLLMServer(handler, model="") as server:
        status = main(
            [
                "run", "in.jsonl", "--model", "big", "-t", "{{ text }}", "-o", "out.jsonl",
                "--base-url", server.base_url, "--fallback-model", "small",
                "--max-retries", "0", "--no-progress",
            ]
        )  # fmt: skip
    captured = capsys.readouterr()
    assert status == 0, captured.err
    rows = read_jsonl(in_tmp / "out.jsonl")
    assert {row["data"] for row in rows} == {"from small"}
    assert {row["model"] for row in rows} == {"small"}
