"""FakeLLMServer records the wait each answer asked for."""

from __future__ import annotations

import httpx

from loom_backends.testing import FakeLLMServer, FakeReply, FaultPlan


def test_recorded_requests_carry_the_retry_after_sent() -> None:
    replies = iter(
        [
            FakeReply(status=429, headers={"Retry-After": "2"}),
            FakeReply(status=429, headers={"retry-after-ms": "1500"}),
            FakeReply("fine"),
        ]
    )
    with FakeLLMServer(lambda req: next(replies)) as server:
        for _ in range(3):
            httpx.post(server.base_url + "/chat/completions", json={"messages": []})
        waits = [(r.status, r.retry_after) for r in server.requests]
    assert waits == [(429, 2.0), (429, 1.5), (200, None)]


def test_fault_429s_record_their_wait_in_process_mode() -> None:
    plan = FaultPlan(rate_429=1.0, retry_after=(1.0, 3.0))
    with FakeLLMServer(faults=plan, seed=3, process=True) as server:
        for _ in range(4):
            httpx.post(server.base_url + "/chat/completions", json={"messages": []})
        recorded = server.requests
    assert [r.status for r in recorded] == [429] * 4
    for request in recorded:
        assert request.retry_after is not None
        assert 1.0 <= request.retry_after <= 3.0
