"""FakeLLMServer's provider limits: headers from its own buckets, a hidden cap on calls in
flight."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from loom_backends.testing import FakeLLMServer, ServerLimits
from loom_backends.testing._limits import format_duration
from loom_protocol import LoomUsageError

BODY = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"rpm": 0}, "rpm"),
        ({"tpm": -5}, "tpm"),
        ({"max_in_flight": True}, "max_in_flight"),
        ({"burst": 0}, "burst"),
        ({"headers": "azure"}, "headers"),
        ({"overload": "503"}, "overload"),
    ],
)
def test_bad_limits_are_refused(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(LoomUsageError, match=named):
        ServerLimits(**kwargs)  # type: ignore[arg-type]


def test_limits_must_be_server_limits() -> None:
    with pytest.raises(LoomUsageError, match="ServerLimits"):
        FakeLLMServer(limits={"rpm": 60})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.0, "0s"), (0.0004, "0s"), (0.25, "250ms"), (1.5, "1.5s"), (90.0, "1m30s"), (360.0, "6m0s")],
)
def test_durations_are_written_like_openai(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_openai_headers_count_down_and_refuse_with_them() -> None:
    limits = ServerLimits(rpm=180, headers="openai")  # a bucket of 3
    with FakeLLMServer(limits=limits) as server, httpx.Client(trust_env=False) as client:
        answers = [client.post(server.base_url + "/chat/completions", json=BODY) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a.headers["x-ratelimit-remaining-requests"] for a in answers] == ["2", "1", "0", "0"]
    assert all(a.headers["x-ratelimit-limit-requests"] == "180" for a in answers)
    assert answers[0].headers["x-ratelimit-reset-requests"].endswith("ms")
    assert int(answers[3].headers["retry-after"]) >= 1


def test_no_headers_without_a_header_style() -> None:
    limits = ServerLimits(rpm=600)
    with FakeLLMServer(limits=limits) as server, httpx.Client(trust_env=False) as client:
        answer = client.post(server.base_url + "/chat/completions", json=BODY)
    assert answer.status_code == 200
    assert not [k for k in answer.headers if "ratelimit" in k.lower()]


async def _burst(url: str, n: int) -> tuple[list[int], float]:
    async with httpx.AsyncClient(trust_env=False, limits=httpx.Limits(max_connections=n)) as client:
        started = time.perf_counter()
        answers = await asyncio.gather(*(client.post(url, json=BODY) for _ in range(n)))
        return [a.status_code for a in answers], time.perf_counter() - started


def test_the_hidden_cap_refuses_beyond_n_in_flight_without_headers() -> None:
    with FakeLLMServer(latency=0.2, limits=ServerLimits(max_in_flight=3)) as server:
        statuses, _ = asyncio.run(_burst(server.base_url + "/chat/completions", 8))
        assert sorted(statuses) == [200] * 3 + [429] * 5
        refused = [r for r in server.requests if r.status == 429]
    assert all(r.retry_after is None for r in refused)  # nothing says how long to wait


def test_the_hidden_cap_in_queue_mode_slows_answers_down() -> None:
    limits = ServerLimits(max_in_flight=2, overload="queue")
    with FakeLLMServer(latency=0.1, limits=limits) as server:
        statuses, elapsed = asyncio.run(_burst(server.base_url + "/chat/completions", 6))
    assert statuses == [200] * 6
    assert elapsed >= 0.29  # three waves of two, 0.1 s each


def test_anthropic_style_on_the_messages_endpoint() -> None:
    body = {"model": "claude-x", "max_tokens": 10, "messages": BODY["messages"]}
    limits = ServerLimits(rpm=60, headers="anthropic")
    with FakeLLMServer(limits=limits) as server, httpx.Client(trust_env=False) as client:
        first = client.post(server.anthropic_base_url + "/v1/messages", json=body)
        second = client.post(server.anthropic_base_url + "/v1/messages", json=body)
    assert first.status_code == 200 and second.status_code == 429
    assert first.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert first.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    assert second.json()["type"] == "error"


def test_limits_work_in_process_mode() -> None:
    with FakeLLMServer(limits=ServerLimits(rpm=120, headers="openai"), process=True) as server:
        with httpx.Client(trust_env=False) as client:
            codes = [
                client.post(server.base_url + "/chat/completions", json=BODY).status_code
                for _ in range(3)
            ]
        assert codes == [200, 200, 429]
        assert server.status_counts == {200: 2, 429: 1}
