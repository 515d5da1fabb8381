"""The official ``openai`` and ``anthropic`` SDKs drive FakeLLMServer's Batch APIs.

If the SDKs (which parse every answer into their own models) accept the fake's files, batches,
pages and results, the fake speaks the real protocols, not only Loom's reading of them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from loom_backends.testing import BatchPlan, FakeLLMServer, FakeReply, RecordedRequest


def _handler(request: RecordedRequest) -> str | FakeReply:
    text = request.last_user_text
    if text == "bad":
        return FakeReply(status=400, content="bad input")
    return json.dumps({"echo": text})


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(_handler, batch=BatchPlan(shuffle=True), seed=3) as server:
        yield server


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    # trust_env=False: a proxy in the environment must not capture 127.0.0.1.
    with httpx.Client(trust_env=False) as client:
        yield client


def _openai_line(custom_id: str, text: str) -> str:
    body = {"model": "gpt-x", "messages": [{"role": "user", "content": text}]}
    return json.dumps(
        {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
    )


def test_openai_sdk_upload_create_retrieve_list_cancel_and_read(
    server: FakeLLMServer, http: httpx.Client
) -> None:
    client = openai.OpenAI(
        base_url=server.base_url, api_key="sk-test", http_client=http, max_retries=0
    )
    lines = [_openai_line(f"r{i}", "bad" if i == 2 else f"t{i}") for i in range(5)]
    uploaded = client.files.create(
        file=("in.jsonl", ("\n".join(lines) + "\n").encode()), purpose="batch"
    )
    assert uploaded.purpose == "batch"
    assert client.files.retrieve(uploaded.id).bytes == uploaded.bytes
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"loom_task": "t1"},
    )
    assert batch.status == "validating"
    assert batch.metadata == {"loom_task": "t1"}
    done = client.batches.retrieve(batch.id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (5, 4)
    assert done.request_counts.failed == 1
    assert done.output_file_id is not None and done.error_file_id is not None
    output = client.files.content(done.output_file_id).text.splitlines()
    answers = {json.loads(line)["custom_id"]: json.loads(line) for line in output}
    assert set(answers) == {"r0", "r1", "r3", "r4"}
    body = answers["r3"]["response"]["body"]
    assert json.loads(body["choices"][0]["message"]["content"]) == {"echo": "t3"}
    errors = [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()]
    assert [(e["custom_id"], e["response"]["status_code"]) for e in errors] == [("r2", 400)]

    # A second batch, cancelled while it runs; then the list, page by page.
    server.batch_plan = BatchPlan(complete_after=3600)
    second = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert client.batches.cancel(second.id).status == "cancelling"
    cancelled = client.batches.retrieve(second.id)
    assert cancelled.status == "cancelled"
    assert cancelled.error_file_id is not None
    codes = {
        json.loads(line)["error"]["code"]
        for line in client.files.content(cancelled.error_file_id).text.splitlines()
    }
    assert codes == {"batch_cancelled"}
    listed = [b.id for b in client.batches.list(limit=1)]  # the SDK follows has_more/after
    assert listed == [second.id, batch.id]
    paths = [r.path for r in server.requests]
    assert paths.count("/v1/files") == 1
    assert paths.count("/v1/batches") == 2 + 2  # two creates, two list pages
    with pytest.raises(openai.BadRequestError):
        client.batches.cancel(batch.id)  # completed: nothing to cancel


@pytest.fixture
def claude(server: FakeLLMServer) -> Iterator[anthropic.Anthropic]:
    # This SDK brings its own HTTP client package: its default client, without the environment.
    with anthropic.Anthropic(
        base_url=server.anthropic_base_url,
        api_key="sk-ant-test",
        http_client=anthropic.DefaultHttpxClient(trust_env=False),
        max_retries=0,
    ) as client:
        yield client


def test_anthropic_sdk_create_retrieve_list_cancel_and_results(
    server: FakeLLMServer, claude: anthropic.Anthropic
) -> None:
    client = claude
    requests = [
        {
            "custom_id": f"r{i}",
            "params": {
                "model": "claude-x",
                "max_tokens": 64,
                "messages": [{"role": "user", "content": "bad" if i == 1 else f"t{i}"}],
            },
        }
        for i in range(4)
    ]
    batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    assert batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 4
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert (ended.request_counts.succeeded, ended.request_counts.errored) == (3, 1)
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    assert set(results) == {"r0", "r1", "r2", "r3"}
    ok = results["r2"]
    assert ok.type == "succeeded"
    assert ok.message.content[0].type == "text"
    assert json.loads(ok.message.content[0].text) == {"echo": "t2"}
    bad = results["r1"]
    assert bad.type == "errored"
    assert bad.error.error.type == "invalid_request_error"

    server.batch_plan = BatchPlan(complete_after=3600)
    second = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    assert client.messages.batches.cancel(second.id).processing_status == "canceling"
    gone = client.messages.batches.retrieve(second.id)
    assert gone.processing_status == "ended"
    assert gone.request_counts.canceled == 4
    kinds = {r.result.type for r in client.messages.batches.results(second.id)}
    assert kinds == {"canceled"}
    listed = [b.id for b in client.messages.batches.list(limit=1)]
    assert listed == [second.id, batch.id]
    assert [r.path for r in server.requests].count("/v1/messages/batches") == 2 + 2
