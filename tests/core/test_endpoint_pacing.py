"""Several endpoints with keys of their own: each is paced to the limits its own headers report."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from loom_backends.testing import FakeLLMServer, FakeReply, RecordedRequest, ServerLimits

from .test_endpoint_limits import echo, pool_of
from .test_endpoints import loom_over


def test_each_endpoint_is_paced_to_its_own_headers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="loom.ratelimit")
    tasks = [f"doc {i}" for i in range(240)]
    with (
        FakeLLMServer(echo, latency=0.01, limits=ServerLimits(rpm=600, headers="openai")) as a,
        FakeLLMServer(echo, latency=0.01, limits=ServerLimits(rpm=1800, headers="openai")) as b,
        loom_over([a.base_url, b.base_url], tmp_path) as loom,
    ):
        batch = loom.map(tasks, task_name="ep-pacing")
        status = pool_of(loom).status()
        loom_wide = loom._engine.limiter.learned()
        shown = loom._engine.runner.caller.learned()
        refused = (a.status_counts.get(429, 0), b.status_counts.get(429, 0))
        sent = (a.request_count, b.request_count)
        urls = (a.base_url, b.base_url)
    assert len(batch.successful()) == 240
    assert [r.data for r in batch] == [{"text": t} for t in tasks]
    # Each endpoint learned its own server's limit; the loom-wide limiter learned none (with
    # one bucket, each report would resize it to the other endpoint's limit and back).
    assert status[0].limits == "600 requests/min"
    assert status[1].limits == "1800 requests/min"
    assert loom_wide == ""
    assert shown == f"{status[0].limits} | {status[1].limits}"
    # Paced each to its own bucket: (almost) nothing refused, though equal weights would
    # otherwise send the smaller server half the requests, three times what it allows.
    assert sum(refused) <= 0.02 * 240, (refused, sent)
    assert sent[1] > 2 * sent[0], sent
    said = [r.getMessage() for r in caplog.records if r.name == "loom.ratelimit"]
    for url, limit in zip(urls, (600, 1800), strict=True):
        assert any(f"endpoint {url} reports its limits: {limit} requests/min" in m for m in said)


def test_an_endpoint_spent_by_someone_else_gets_nothing_until_it_refills(tmp_path: Path) -> None:
    # Six requests a minute, a bucket of eight (what the first wave sends there: an endpoint
    # starts at 8 in flight): its answers say nothing remains, and it refills one every 10 s.
    # The other endpoint sends no headers: nothing paces it.
    spent = ServerLimits(rpm=6, headers="anthropic", burst=80.0)
    with (
        FakeLLMServer(echo, latency=0.005, limits=spent) as a,
        FakeLLMServer(echo, latency=0.005) as b,
        loom_over([a.base_url, b.base_url], tmp_path) as loom,
    ):
        batch = loom.map([f"doc {i}" for i in range(80)], task_name="ep-spent")
        status = pool_of(loom).status()
    assert len(batch.successful()) == 80
    assert a.status_counts.get(429, 0) == 0, a.status_counts
    # The first wave goes out before anything is known; then none until it refills (without
    # pacing it would get half the requests, and 429s).
    assert a.request_count <= 8, (a.request_count, b.request_count)
    assert "6 requests/min" in status[0].limits
    assert status[1].limits == ""


@pytest.mark.slow
def test_waiting_for_an_endpoints_budget_is_not_counted_as_the_calls_time(
    tmp_path: Path,
) -> None:
    # Both servers allow 8 requests a minute (a bucket of one): the third request waits ~7.7 s
    # for a refill, longer than its call may last (timeout 1 s, +5 s of safety net).
    limits = ServerLimits(rpm=8, headers="openai")
    with (
        FakeLLMServer(echo, limits=limits) as a,
        FakeLLMServer(echo, limits=limits) as b,
        loom_over([a.base_url, b.base_url], tmp_path, timeout=1.0) as loom,
    ):
        batch = loom.map(["one", "two", "three"], task_name="ep-wait", max_workers=1)
        counts = (a.status_counts, b.status_counts)
    assert len(batch.successful()) == 3, [r.error for r in batch]
    assert [r.attempts for r in batch] == [1, 1, 1]
    assert all(c.get(429, 0) == 0 for c in counts), counts


def test_a_refusal_teaches_the_endpoint_that_refused(tmp_path: Path) -> None:
    """The headers of a 429 are learned too, by the endpoint that sent it."""
    calls = {"n": 0}

    def refuse_first(req: RecordedRequest) -> FakeReply:
        calls["n"] += 1
        headers = {
            "x-ratelimit-limit-requests": "120",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "500ms",
        }
        if calls["n"] == 1:
            return FakeReply(status=429, headers={**headers, "retry-after": "0.5"})
        return FakeReply(content=json.dumps({"text": req.last_user_text}), headers=headers)

    with (
        FakeLLMServer(refuse_first) as a,
        FakeLLMServer(echo) as b,
        loom_over([a.base_url, b.base_url], tmp_path) as loom,
    ):
        batch = loom.map(["x"], task_name="ep-refused", max_workers=1)
        status = pool_of(loom).status()
        loom_wide = loom._engine.limiter.learned()
    assert batch[0].is_success
    assert status[0].limits == "120 requests/min"
    assert status[1].limits == ""
    assert loom_wide == ""


def test_a_fixed_loom_paces_nothing(tmp_path: Path) -> None:
    with (
        FakeLLMServer(echo, limits=ServerLimits(rpm=600, headers="openai")) as a,
        FakeLLMServer(echo) as b,
        loom_over([a.base_url, b.base_url], tmp_path, adaptive=False) as loom,
    ):
        loom.map(["x", "y"], task_name="ep-fixed")
        pool = pool_of(loom)
        assert not pool.paced
        assert all(e.limits == "" for e in pool.status())
