"""Rate limits and retries against a server that enforces its own limits."""

from __future__ import annotations

import itertools
import time

import pytest

from loom_backends.testing import FakeLLMServer, FakeReply, RecordedRequest
from loom_protocol import ErrorCode

from .conftest import LoomFactory, echo_json


@pytest.mark.slow
def test_rpm_keeps_the_server_happy(make_loom: LoomFactory) -> None:
    with FakeLLMServer(echo_json, rpm_limit=600) as srv:
        loom = make_loom(srv, response_model=dict, rpm=600)
        started = time.monotonic()
        batch = loom.map([f"r{i}" for i in range(100)], max_workers=16)
        elapsed = time.monotonic() - started
    assert all(r.is_success for r in batch)
    assert elapsed >= 9.0
    assert srv.status_counts.get(429, 0) == 0


def test_a_429_with_retry_after_pauses_every_worker(make_loom: LoomFactory) -> None:
    counter = itertools.count()

    def answer(req: RecordedRequest) -> FakeReply | str:
        if next(counter) == 0:
            return FakeReply(
                status=429, headers={"Retry-After": "1"}, body={"error": {"message": "slow down"}}
            )
        return echo_json(req)

    with FakeLLMServer(answer, latency=0.01) as srv:
        loom = make_loom(srv, response_model=dict, max_retries=3)
        batch = loom.map([f"p{i}" for i in range(12)], max_workers=4)
        assert all(r.is_success for r in batch)
        requests = srv.requests
        limited_at = next(r.received_at for r in requests if r.status == 429)
        later = [r for r in requests if r.received_at > limited_at]
        # A few requests were already in flight when the 429 came back; everything sent after
        # the 429 was answered waits the full second.
        sent_after_pause = [r for r in later if r.received_at - limited_at > 0.2]
        assert sent_after_pause, "expected requests after the pause"
        gap = min(r.received_at for r in sent_after_pause) - limited_at
        assert gap >= 1.0
        assert len(later) - len(sent_after_pause) <= 4


def test_500s_are_retried_with_backoff(make_loom: LoomFactory) -> None:
    def answer(req: RecordedRequest) -> FakeReply | str:
        return FakeReply(status=500, body={"error": {"message": "boom"}})

    with FakeLLMServer(answer) as srv:
        result = make_loom(srv, response_model=dict, max_retries=3).process("x")
        assert not result.is_success
        assert result.error is not None and result.error.code == ErrorCode.PROVIDER_UNAVAILABLE
        assert result.error.status == 500
        assert result.attempts == 4
        times = [r.received_at for r in srv.requests]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 3
    # Equal-jitter exponential backoff from 0.5 s: gaps in [0.25, 0.5], [0.5, 1], [1, 2].
    assert 0.2 <= gaps[0] <= 0.9
    assert 0.45 <= gaps[1] <= 1.5
    assert 0.95 <= gaps[2] <= 2.6
    assert gaps[2] > gaps[0]


def test_a_500_then_success(make_loom: LoomFactory) -> None:
    counter = itertools.count()

    def answer(req: RecordedRequest) -> FakeReply | str:
        return FakeReply(status=503) if next(counter) < 2 else echo_json(req)

    with FakeLLMServer(answer) as srv:
        result = make_loom(srv, response_model=dict).process("x")
        assert result.is_success and result.attempts == 3


@pytest.mark.parametrize(
    ("status", "code"), [(400, "provider_bad_request"), (401, "provider_auth")]
)
def test_400_and_401_are_not_retried(make_loom: LoomFactory, status: int, code: str) -> None:
    with FakeLLMServer(
        lambda req: FakeReply(status=status, body={"error": {"message": "no"}})
    ) as srv:
        result = make_loom(srv, response_model=dict).process("x")
        assert not result.is_success
        assert result.error is not None and result.error.code == code
        assert srv.request_count == 1
        assert "sk-test-secret-key" not in result.model_dump_json()


def test_template_errors_are_not_retried(make_loom: LoomFactory, server: FakeLLMServer) -> None:
    result = make_loom(server, prompt_template="{{ missing }}").process({"text": "x"})
    assert result.error is not None and result.error.code == ErrorCode.TEMPLATE_ERROR
    assert result.attempts == 0
    assert server.request_count == 0
