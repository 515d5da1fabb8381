"""map(batch=True) end to end: TaskLoom, OpenAIChatBackend / AnthropicBackend, FakeLLMServer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loom_backends import AnthropicBackend, OpenAIChatBackend
from loom_backends.testing import BatchPlan, FakeLLMServer, RecordedRequest
from loom_core import BatchPolicy, TaskLoom
from loom_protocol import ProviderBatchLimits

KEY = "sk-batch-e2e-secret"
FAST = BatchPolicy(poll_interval=0.01, poll_max=0.05, submit_timeout=5.0, clock_skew=0.5)


def echo(request: RecordedRequest) -> str:
    return json.dumps({"text": request.last_user_text})


def submissions(server: FakeLLMServer) -> list[RecordedRequest]:
    """The batch-creating requests the server received (OpenAI and Anthropic)."""
    return [
        r
        for r in server.requests
        if (r.path == "/v1/batches" and "input_file_id" in r.body)
        or (r.path == "/v1/messages/batches" and "requests" in r.body)
    ]


def uploads(server: FakeLLMServer) -> list[RecordedRequest]:
    return [r for r in server.requests if r.path == "/v1/files"]


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(echo) as srv:
        yield srv


def make_loom(
    provider: str,
    server: FakeLLMServer,
    db: Path,
    limits: ProviderBatchLimits | None = None,
    **kwargs: Any,
) -> TaskLoom[Any]:
    """A loom on the server's OpenAI or Anthropic API (``limits``: the backend's, made here
    and so owned by the test, closed by ``close_backend``)."""
    kwargs.setdefault("batch_policy", FAST)
    if provider == "openai":
        model, base_url = "gpt-4o-mini", server.base_url
    else:
        model, base_url = "claude-3-5-haiku-latest", server.anthropic_base_url
    if limits is not None:
        backend_type = OpenAIChatBackend if provider == "openai" else AnthropicBackend
        kwargs["backend"] = backend_type(base_url=base_url, api_key=KEY, batch_limits=limits)
    else:
        kwargs.update(api_key=KEY, base_url=base_url)
    return TaskLoom(model, "{{ text }}", response_model=dict, db_path=db, max_tokens=64, **kwargs)


def close_backend(loom: TaskLoom[Any]) -> None:
    asyncio.run(loom._engine.backend.aclose())


@pytest.mark.slow
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_ten_thousand_inputs(provider: str, server: FakeLLMServer, tmp_path: Path) -> None:
    max_requests = 3000
    server.batch_plan = BatchPlan(complete_after=0.2, shuffle=True, max_requests=max_requests)
    inputs = [f"document number {i}" for i in range(10_000)]
    limits = ProviderBatchLimits(max_requests=max_requests, max_bytes=100_000_000)
    with make_loom(provider, server, tmp_path / "loom.db", limits) as loom:
        result = loom.map(inputs, task_name="big", batch=True)
        assert [r.data for r in result] == [{"text": t} for t in inputs]
        assert result.summary.provider_batch == 10_000
        status = loom.batch_status("big", refresh=False)
    close_backend(loom)
    # The split rule: every batch within the provider's limits, filled in order.
    expected = [max_requests, max_requests, max_requests, 10_000 - 3 * max_requests]
    assert [b.requests for b in status.batches] == expected
    assert len(submissions(server)) == len(expected)
    if provider == "openai":
        assert len(uploads(server)) == len(expected)
    assert all(b.state == "collected" for b in status.batches)
    before = len(server.requests)
    with make_loom(provider, server, tmp_path / "loom.db", limits) as loom:
        again = loom.map(inputs, task_name="big", batch=True)
    close_backend(loom)
    assert all(r.cached for r in again)
    assert len(server.requests) == before


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_expiry_with_sixty_percent_done(
    provider: str, server: FakeLLMServer, tmp_path: Path
) -> None:
    server.batch_plan = BatchPlan(expire_after_fraction=0.6, shuffle=True)
    inputs = [f"doc {i}" for i in range(100)]
    with make_loom(provider, server, tmp_path / "loom.db") as loom:
        # Expire only the first batch: later batches run whole.
        first = loom.submit_batch(inputs, task_name="exp")
        assert first.submitted == 100
        server.batch_plan = BatchPlan(shuffle=True)
        result = loom.map(inputs, task_name="exp", batch=True)
        status = loom.batch_status("exp", refresh=False)
    assert all(r.is_success for r in result)
    assert [b.requests for b in status.batches] == [100, 40]
    assert status.batches[0].counts.succeeded == 60
    sent = submissions(server)
    assert len(sent) == 2


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_cancel_against_the_server(provider: str, server: FakeLLMServer, tmp_path: Path) -> None:
    server.batch_plan = BatchPlan(complete_after=30.0)
    with make_loom(provider, server, tmp_path / "loom.db") as loom:
        loom.submit_batch([f"doc {i}" for i in range(10)], task_name="c")
        status = loom.cancel_batch("c")
        assert status.batches[0].cancel_requested
        collected = loom.collect_batch("c", wait=True)
        assert len(collected) == 10
        assert all(not r.is_success for r in collected)
        assert loom.batch_status("c").done
    assert len(submissions(server)) == 1


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_polling_survives_5xx(provider: str, server: FakeLLMServer, tmp_path: Path) -> None:
    server.batch_plan = BatchPlan(complete_after=0.1, poll_failures=5, poll_failure_status=503)
    inputs = [f"doc {i}" for i in range(10)]
    with make_loom(provider, server, tmp_path / "loom.db") as loom:
        result = loom.map(inputs, task_name="flaky", batch=True)
    assert [r.data for r in result] == [{"text": t} for t in inputs]
    assert server.status_counts.get(503, 0) == 5
    assert len(submissions(server)) == 1


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_reask_in_a_follow_up_batch(provider: str, server: FakeLLMServer, tmp_path: Path) -> None:
    def answer(request: RecordedRequest) -> str:
        # The first answer is not JSON; the re-ask (with the feedback) answers properly.
        if len(request.messages) == 1:
            return "Sure! Here it is: no JSON today"
        return json.dumps({"text": request.messages[0]["content"], "turns": len(request.messages)})

    server.handler = answer
    with make_loom(provider, server, tmp_path / "loom.db", auto_repair_json=False) as loom:
        result = loom.map(["a", "b"], task_name="reask", batch=True)
    assert [r.data for r in result] == [{"text": "a", "turns": 3}, {"text": "b", "turns": 3}]
    assert [r.attempts for r in result] == [2, 2]
    assert len(submissions(server)) == 2
