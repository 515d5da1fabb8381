"""FakeLLMServer's Batch APIs on the wire: validation, scripting, recording, process mode."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from loom_backends.testing import BatchPlan, FakeLLMServer
from loom_protocol import LoomUsageError


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=30) as client:
        yield client


def _line(
    custom_id: Any, text: str = "hi", model: str = "m", url: str = "/v1/chat/completions"
) -> str:
    body = {"model": model, "messages": [{"role": "user", "content": text}]}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def _openai_batch(http: httpx.Client, server: FakeLLMServer, text: str) -> dict[str, Any]:
    upload = http.post(
        f"{server.base_url}/files",
        data={"purpose": "batch"},
        files={"file": ("in.jsonl", text.encode())},
    )
    upload.raise_for_status()
    created = http.post(
        f"{server.base_url}/batches",
        json={
            "input_file_id": upload.json()["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
    )
    created.raise_for_status()
    answer = http.get(f"{server.base_url}/batches/{created.json()['id']}")
    answer.raise_for_status()
    data: dict[str, Any] = answer.json()
    return data


@pytest.mark.parametrize(
    ("lines", "code"),
    [
        ([_line("a"), "not json"], "invalid_json_line"),
        ([_line("a"), _line("a")], "duplicate_custom_id"),
        ([_line(None)], "missing_custom_id"),
        ([_line("a", url="/v1/embeddings")], "invalid_url"),
        ([_line("a", model="m1"), _line("b", model="m2")], "mixed_models"),
        ([""], "empty_file"),
    ],
)
def test_openai_input_files_are_validated_like_the_real_api(
    http: httpx.Client, lines: list[str], code: str
) -> None:
    with FakeLLMServer() as server:
        batch = _openai_batch(http, server, "\n".join(lines))
        assert batch["status"] == "failed"
        assert code in [e["code"] for e in batch["errors"]["data"]]
        assert batch["output_file_id"] is None and batch["error_file_id"] is None
        # Nothing of a failed batch reaches the handler.
        assert all(r.path.startswith(("/v1/files", "/v1/batches")) for r in server.requests)


def test_openai_refuses_bad_uploads_and_creates(http: httpx.Client) -> None:
    with FakeLLMServer(batch=BatchPlan(max_bytes=100)) as server:
        wrong = http.post(
            f"{server.base_url}/files", data={"purpose": "fine-tune"}, files={"file": ("a", b"x")}
        )
        assert wrong.status_code == 400
        big = http.post(
            f"{server.base_url}/files", data={"purpose": "batch"}, files={"file": ("a", b"x" * 101)}
        )
        assert big.status_code == 413
        assert big.json()["error"]["code"] == "request_too_large"
        nofile = http.post(f"{server.base_url}/batches", json={"input_file_id": "file-nope"})
        assert nofile.status_code == 400
        assert http.get(f"{server.base_url}/batches/batch_nope").status_code == 404
        assert http.get(f"{server.base_url}/files/file-nope/content").status_code == 404
        assert http.get(f"{server.base_url}/batches?limit=0").status_code == 400
        assert [r.status for r in server.requests] == [400, 413, 400, 404, 404, 400]


def test_anthropic_refuses_bad_creates(http: httpx.Client) -> None:
    with FakeLLMServer(batch=BatchPlan(max_bytes=400)) as server:
        base = f"{server.anthropic_base_url}/v1/messages/batches"
        params = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
        cases = [
            ({"requests": []}, 400, "non-empty"),
            ({"requests": [{"custom_id": "a b", "params": params}]}, 400, "custom_id"),
            ({"requests": [{"custom_id": "a", "params": params}] * 2}, 400, "not unique"),
            ({"requests": [{"custom_id": "a", "params": "x"}]}, 400, "params"),
            ({"requests": [{"custom_id": f"c{i}", "params": params} for i in range(9)]}, 413, ""),
        ]
        for body, status, words in cases:
            answer = http.post(base, json=body)
            assert answer.status_code == status, body
            assert words in answer.json()["error"]["message"]
        assert http.get(f"{base}/msgbatch_nope/results").status_code == 404


def test_results_wait_for_the_end_and_polls_can_fail(http: httpx.Client) -> None:
    plan = BatchPlan(complete_after=3600, poll_failures=1, poll_failure_status=500)
    with FakeLLMServer(batch=plan) as server:
        base = f"{server.anthropic_base_url}/v1/messages/batches"
        params = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
        created = http.post(base, json={"requests": [{"custom_id": "a", "params": params}]})
        batch_id = created.json()["id"]
        assert http.get(f"{base}/{batch_id}").status_code == 500  # the one failing poll
        running = http.get(f"{base}/{batch_id}").json()
        assert running["processing_status"] == "in_progress" and running["results_url"] is None
        assert http.get(f"{base}/{batch_id}/results").status_code == 404


def test_the_plan_is_checked_and_fixed_in_process_mode() -> None:
    for bad in (
        {"complete_after": -1},
        {"expire_after_fraction": 1.5},
        {"max_bytes": 0},
        {"poll_failures": -1},
        {"poll_failure_status": 200},
        {"shuffle": "yes"},
    ):
        with pytest.raises(LoomUsageError, match="BatchPlan"):
            BatchPlan(**bad)  # type: ignore[arg-type]
    with pytest.raises(LoomUsageError, match="must be a BatchPlan"):
        FakeLLMServer(batch={"shuffle": True})  # type: ignore[arg-type]
    server = FakeLLMServer(batch=BatchPlan(shuffle=True), process=True)
    assert server.batch_plan == BatchPlan(shuffle=True)
    with pytest.raises(LoomUsageError, match="fixed at construction"):
        server.batch_plan = BatchPlan()


def test_batches_run_in_a_process_mode_server(http: httpx.Client) -> None:
    lines = "\n".join(_line(f"r{i}", f"t{i}") for i in range(20))
    with FakeLLMServer(process=True, batch=BatchPlan(shuffle=True), seed=1) as server:
        batch = _openai_batch(http, server, lines)
        assert batch["status"] == "completed"
        content = http.get(f"{server.base_url}/files/{batch['output_file_id']}/content")
        rows = [json.loads(x) for x in content.text.splitlines()]
        order = [row["custom_id"] for row in rows]
        assert sorted(order) == sorted(f"r{i}" for i in range(20))
        assert order != [f"r{i}" for i in range(20)]  # shuffled
        for row in rows:
            answer = row["response"]["body"]["choices"][0]["message"]["content"]
            assert json.loads(answer) == {"echo": "t" + row["custom_id"][1:]}
        calls = [(r.method, r.path) for r in server.requests]
        assert calls[:3] == [
            ("POST", "/v1/files"),
            ("POST", "/v1/batches"),
            ("GET", f"/v1/batches/{batch['id']}"),
        ]
