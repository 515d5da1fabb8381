"""FakeLLMServer itself: scripting, faults, rate limits, recording, process mode, fixtures."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import fake_handlers
import httpx
import pytest

from loom_backends.testing import FakeLLMServer, FakeReply, FaultPlan, RecordedRequest
from loom_protocol import LoomUsageError


def body(text: str = "hi", *, system: str | None = None) -> dict[str, Any]:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": text})
    return {"model": "m", "messages": messages}


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=30) as client:
        yield client


def post(http: httpx.Client, server: FakeLLMServer, text: str = "hi") -> httpx.Response:
    return http.post(f"{server.base_url}/chat/completions", json=body(text))


def content(response: httpx.Response) -> Any:
    return response.json()["choices"][0]["message"]["content"]


# -- scripting -----------------------------------------------------------------------------------


def test_the_default_handler_echoes_the_last_user_text(
    server: FakeLLMServer, http: httpx.Client
) -> None:
    response = post(http, server, "ping")
    assert response.status_code == 200
    answer = response.json()
    assert json.loads(content(response)) == {"echo": "ping"}
    assert answer["model"] == "fake-model"
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"]["completion_tokens"] == 4  # ceil(len('{"echo": "ping"}') / 4)


def test_a_scripted_reply_sets_status_headers_and_body(
    server: FakeLLMServer, http: httpx.Client
) -> None:
    server.handler = lambda req: FakeReply(status=418, headers={"X-Why": "tea"}, body={"a": 1})
    response = post(http, server)
    assert (response.status_code, response.headers["x-why"], response.json()) == (
        418,
        "tea",
        {"a": 1},
    )
    server.handler = lambda req: FakeReply("overloaded", status=529)
    response = post(http, server)
    assert response.status_code == 529
    assert response.json()["error"]["message"] == "overloaded"
    server.handler = lambda req: FakeReply(body="plain text")
    assert post(http, server).text == "plain text"


def test_an_async_handler_and_content_null(server: FakeLLMServer, http: httpx.Client) -> None:
    async def handler(request: RecordedRequest) -> FakeReply:
        await asyncio.sleep(0.01)
        return FakeReply(None, reasoning_content="hmm")

    server.handler = handler
    message = post(http, server).json()["choices"][0]["message"]
    assert message == {"role": "assistant", "content": None, "reasoning_content": "hmm"}


def test_a_failing_handler_answers_500_naming_the_error(
    server: FakeLLMServer, http: httpx.Client
) -> None:
    def handler(request: RecordedRequest) -> str:
        raise RuntimeError("handler bug")

    server.handler = handler
    response = post(http, server)
    assert response.status_code == 500
    assert "RuntimeError: handler bug" in response.json()["error"]["message"]
    server.handler = lambda req: 42  # type: ignore[assignment,return-value]
    assert "must return str or FakeReply, got int" in post(http, server).text


def test_the_anthropic_endpoint_answers_in_anthropic_shape(
    server: FakeLLMServer, http: httpx.Client
) -> None:
    server.handler = lambda req: FakeReply(
        "cut", reasoning_content="thought", finish_reason="length", usage={"prompt_tokens": 5}
    )
    request = {**body("q"), "system": "sys", "max_tokens": 10}
    answer = http.post(f"{server.anthropic_base_url}/v1/messages", json=request).json()
    assert answer["type"] == "message"
    assert answer["content"] == [
        {"type": "thinking", "thinking": "thought", "signature": "fake"},
        {"type": "text", "text": "cut"},
    ]
    assert answer["stop_reason"] == "max_tokens"
    assert answer["usage"] == {"input_tokens": 5, "output_tokens": 0}
    assert server.requests[0].system_text == "sys"
    server.handler = lambda req: FakeReply("nope", status=401)
    error = http.post(f"{server.anthropic_base_url}/v1/messages", json=request).json()
    assert error == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "nope"},
    }


def test_a_body_that_is_not_json_gets_400_and_is_recorded(
    server: FakeLLMServer, http: httpx.Client
) -> None:
    response = http.post(f"{server.base_url}/chat/completions", content=b"{not json")
    assert response.status_code == 400
    assert "not a JSON object" in response.json()["error"]["message"]
    assert [(r.body, r.status) for r in server.requests] == [({}, 400)]


# -- recording -----------------------------------------------------------------------------------


def test_every_request_is_recorded_in_order(server: FakeLLMServer, http: httpx.Client) -> None:
    server.handler = lambda req: FakeReply(status=503) if req.last_user_text == "b" else "ok"
    before = time.time()
    for text in ("a", "b", "c"):
        http.post(
            f"{server.base_url}/chat/completions",
            json=body(text, system="S"),
            headers={"X-Trace": "T", "Authorization": "Bearer hidden-key"},
        )
    requests = server.requests
    assert [r.last_user_text for r in requests] == ["a", "b", "c"]
    assert [r.status for r in requests] == [200, 503, 200]
    assert all(r.path == "/v1/chat/completions" for r in requests)
    assert all(r.headers["x-trace"] == "T" for r in requests)
    assert all(before <= r.received_at <= time.time() for r in requests)
    assert requests[0].system_text == "S"
    assert requests[0].messages[1] == {"role": "user", "content": "a"}
    assert server.request_count == 3
    assert server.status_counts == {200: 2, 503: 1}
    # The key the client sent is kept for assertions but never shown in a repr.
    assert requests[0].headers["authorization"] == "Bearer hidden-key"
    assert "hidden-key" not in repr(requests[0])
    server.clear()
    assert (server.requests, server.request_count, server.status_counts) == ([], 0, {})


def test_recorded_request_helpers_read_multimodal_and_anthropic_shapes() -> None:
    record = RecordedRequest(
        path="/v1/messages",
        headers={},
        body={
            "system": [{"type": "text", "text": "rules"}],
            "messages": [
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "reply"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "line 1"},
                        {"type": "image", "source": {"type": "url", "url": "http://x"}},
                        {"type": "text", "text": "line 2"},
                    ],
                },
            ],
        },
        received_at=0.0,
    )
    assert record.last_user_text == "line 1\nline 2"
    assert record.system_text == "rules"
    assert RecordedRequest("/", {}, {}, 0.0).system_text is None
    assert RecordedRequest("/", {}, {}, 0.0).last_user_text == ""


# -- faults --------------------------------------------------------------------------------------


def statuses(server: FakeLLMServer, http: httpx.Client, n: int) -> list[int]:
    return [post(http, server, str(i)).status_code for i in range(n)]


def test_faults_follow_the_seed(http: httpx.Client) -> None:
    plan = FaultPlan(rate_429=0.3, rate_500=0.2, rate_503=0.1, retry_after=(2.0, 4.0))
    with FakeLLMServer(faults=plan, seed=7) as one, FakeLLMServer(faults=plan, seed=7) as two:
        first, second = statuses(one, http, 200), statuses(two, http, 200)
    with FakeLLMServer(faults=plan, seed=8) as three:
        third = statuses(three, http, 200)
    assert first == second
    assert first != third
    counts = {s: first.count(s) for s in set(first)}
    assert set(counts) == {200, 429, 500, 503}
    assert 30 <= counts[429] <= 90
    assert 15 <= counts[500] <= 65
    assert 5 <= counts[503] <= 40


def test_a_fault_429_carries_its_wait(http: httpx.Client) -> None:
    plan = FaultPlan(rate_429=1.0, retry_after=(2.0, 4.0))
    with FakeLLMServer(faults=plan, seed=1) as server:
        response = post(http, server)
    assert response.status_code == 429
    wait = float(response.headers["retry-after"])
    assert 2.0 <= wait <= 4.0
    assert int(response.headers["retry-after-ms"]) == round(wait * 1000)


def test_broken_json_truncation_think_prefix_and_reasoning(http: httpx.Client) -> None:
    answer = '{"name": "Ada", "tags": ["x", "y"]}'
    plan = FaultPlan(rate_broken_json=1.0)
    with FakeLLMServer(lambda req: answer, faults=plan) as server:
        broken = content(post(http, server))
    assert broken != answer
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken)
    plan = FaultPlan(rate_truncated=1.0, think_prefix=True, reasoning_content="pondering")
    with FakeLLMServer(lambda req: answer, faults=plan) as server:
        response = post(http, server).json()["choices"][0]
    assert response["finish_reason"] == "length"
    assert response["message"]["content"] == "<think>pondering</think>" + answer[: len(answer) // 2]
    assert response["message"]["reasoning_content"] == "pondering"


def test_rpm_limit_answers_429_with_retry_after(http: httpx.Client) -> None:
    # 120 rpm: a bucket of 2 tokens refilled at 2 per second.
    with FakeLLMServer(rpm_limit=120) as server:
        burst = [post(http, server) for _ in range(5)]
        assert [r.status_code for r in burst[:2]] == [200, 200]
        limited = [r for r in burst[2:] if r.status_code == 429]
        assert limited, "five requests in a burst must exceed a 2-token bucket"
        assert all(int(r.headers["retry-after"]) >= 1 for r in limited)
        time.sleep(1.5)
        assert post(http, server).status_code == 200
        assert server.status_counts[429] == len(limited)


async def test_latency_delays_answers_without_blocking_the_server() -> None:
    with FakeLLMServer(latency=0.5, jitter=0.1, seed=3) as server:
        async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
            started = time.monotonic()
            answers = await asyncio.gather(
                *(
                    client.post(f"{server.base_url}/chat/completions", json=body(str(i)))
                    for i in range(20)
                )
            )
            elapsed = time.monotonic() - started
    assert all(a.status_code == 200 for a in answers)
    assert elapsed >= 0.5
    assert elapsed < 5.0  # 20 x 0.5 s in sequence would be 10 s


# -- lifecycle, process mode, fixtures -----------------------------------------------------------


def test_lifecycle(http: httpx.Client) -> None:
    server = FakeLLMServer()
    with pytest.raises(LoomUsageError, match="not running"):
        _ = server.base_url
    assert server.start() is server
    assert server.start() is server
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    assert server.anthropic_base_url == f"http://127.0.0.1:{server.port}"
    assert post(http, server).status_code == 200
    port = server.port
    server.stop()
    server.stop()
    with pytest.raises(httpx.ConnectError):
        http.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body())


def test_process_mode(http: httpx.Client) -> None:
    with FakeLLMServer(fake_handlers.refuse_secrets, process=True) as server:
        assert "process" in repr(server)
        assert content(post(http, server, "hello")) == "fine"
        assert post(http, server, "a secret").status_code == 400
        requests = server.requests
        assert [r.last_user_text for r in requests] == ["hello", "a secret"]
        assert [r.status for r in requests] == [200, 400]
        assert server.request_count == 2
        assert server.status_counts == {200: 1, 400: 1}
        server.clear()
        assert server.request_count == 0
        with pytest.raises(LoomUsageError, match="fixed at construction"):
            server.handler = fake_handlers.shout


def test_process_mode_needs_a_picklable_handler() -> None:
    with pytest.raises(LoomUsageError, match="picklable handler"):
        FakeLLMServer(lambda req: "x", process=True)


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda: FakeLLMServer(latency=-1), "latency must be a finite number of seconds >= 0"),
        (lambda: FakeLLMServer(jitter=float("inf")), "jitter must be a finite number of seconds"),
        (lambda: FakeLLMServer(rpm_limit=0), "rpm_limit must be an int >= 1, got 0"),
        (lambda: FakeLLMServer(handler="x"), "handler must be callable"),  # type: ignore[arg-type]
        (lambda: FakeLLMServer(faults={"rate_429": 1}), "faults must be a FaultPlan"),  # type: ignore[arg-type]
        (lambda: FaultPlan(rate_429=1.5), r"rate_429 must be a finite number in \[0, 1\]"),
        (lambda: FaultPlan(rate_429=0.6, rate_500=0.6), "must not exceed 1"),
        (lambda: FaultPlan(retry_after=(3.0, 1.0)), "low <= high"),
        (lambda: FakeReply(status=42), "status must be an HTTP status"),
        (lambda: FakeReply(delay=-1), "delay must be a finite number of seconds >= 0"),
        (lambda: FakeReply(content=3), "content must be a str or None, got int"),  # type: ignore[arg-type]
    ],
)
def test_bad_arguments_are_named(make: Any, problem: str) -> None:
    with pytest.raises(LoomUsageError, match=problem):
        make()


def test_the_pytest_fixture(fake_llm_server: FakeLLMServer, http: httpx.Client) -> None:
    fake_llm_server.handler = lambda req: "scripted"
    assert content(post(http, fake_llm_server)) == "scripted"
    assert fake_llm_server.request_count == 1


def test_the_factory_fixture(fake_llm_server_factory: Any, http: httpx.Client) -> None:
    server = fake_llm_server_factory(lambda req: "made", model="other")
    answer = post(http, server).json()
    assert (answer["model"], answer["choices"][0]["message"]["content"]) == ("other", "made")
