"""TaskLoom over several endpoints: spread, a server lost mid-run, all lost, no key leaked."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import pytest

from loom_backends import Endpoint
from loom_backends.testing import FakeLLMServer, FakeReply, RecordedRequest
from loom_core import TaskLoom
from loom_protocol import ErrorCode, LoomUsageError

KEY_A = "sk-loom-endpoint-aaaa9999"
KEY_B = "sk-loom-endpoint-bbbb8888"


class Switch:
    """Answers {"text": prompt}, or ``status`` once a test sets it."""

    def __init__(self) -> None:
        self.status = 200

    def __call__(self, req: RecordedRequest) -> FakeReply:
        if self.status != 200:
            return FakeReply(content=f"down, keys {KEY_A} {KEY_B}", status=self.status)
        return FakeReply(content=json.dumps({"text": req.last_user_text}), delay=0.005)


def loom_over(urls: list[str] | list[object], tmp_path: Path, **kwargs: object) -> TaskLoom[dict]:  # type: ignore[type-arg]
    return TaskLoom(
        "fake-model",
        "{{ text }}",
        response_model=dict,
        db_path=tmp_path / "loom.db",
        base_url=urls,  # type: ignore[arg-type]
        **kwargs,  # type: ignore[arg-type]
    )


def test_a_list_of_urls_spreads_and_keeps_the_fingerprint(tmp_path: Path) -> None:
    with FakeLLMServer(Switch()) as a, FakeLLMServer(Switch()) as b:
        with loom_over([a.base_url, b.base_url], tmp_path, api_key=KEY_A) as loom:
            batch = loom.map([f"doc {i}" for i in range(60)], task_name="ep-spread", max_workers=8)
            fp = loom.config_fp
            shown = repr(loom)
        with TaskLoom("fake-model", "{{ text }}", response_model=dict, base_url=a.base_url) as one:
            assert one.config_fp == fp  # the same model elsewhere: the same results
    assert len(batch.successful()) == 60
    assert a.request_count >= 20 and b.request_count >= 20
    assert a.request_count + b.request_count == 60
    assert [r.data for r in batch] == [{"text": f"doc {i}"} for i in range(60)]
    assert KEY_A not in shown and "EndpointPool" in shown


def test_a_server_stopped_mid_run_loses_no_task(tmp_path: Path) -> None:
    with FakeLLMServer(Switch()) as b:
        a = FakeLLMServer(Switch()).start()
        try:
            # No engine retry at all: the pool alone must carry the dead server's tasks over.
            with loom_over([a.base_url, b.base_url], tmp_path, max_retries=0) as loom:
                results = []
                for done, result in enumerate(
                    loom.stream(
                        [f"doc {i}" for i in range(300)], task_name="ep-kill", max_workers=16
                    ),
                    start=1,
                ):
                    results.append(result)
                    if done == 50:
                        # Killed while requests are in flight to it (in the background: the
                        # stream keeps going meanwhile).
                        threading.Thread(target=a.stop).start()
        finally:
            a.stop()
    assert len(results) == 300
    failed = [r for r in results if not r.is_success]
    assert not failed, failed[0].error
    assert b.request_count >= 150


def test_a_failing_server_gets_only_probes_once_out(tmp_path: Path) -> None:
    sa = Switch()
    with (
        FakeLLMServer(sa) as a,
        FakeLLMServer(Switch()) as b,
        loom_over([a.base_url, b.base_url], tmp_path, max_retries=0) as loom,
    ):
        sa.status = 503
        started = time.monotonic()
        batch = loom.map([f"doc {i}" for i in range(200)], max_workers=8)
        elapsed = time.monotonic() - started
    # Every task succeeded with no engine retry at all (max_retries=0): the pool moved them.
    assert len(batch.successful()) == 200
    # A: the 3 failures in a row that opened it (plus the stragglers already in flight then),
    # and at most one probe per cool-down (1 s, doubling) after.
    assert a.request_count <= 3 + 8 + int(elapsed) + 1, (a.request_count, elapsed)


def test_every_server_down_fails_fast_and_clearly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sa, sb = Switch(), Switch()
    sa.status = sb.status = 500
    with FakeLLMServer(sa) as a, FakeLLMServer(sb) as b:
        urls = [a.base_url, b.base_url]
        endpoints = [Endpoint(urls[0], api_key=KEY_A), Endpoint(urls[1], api_key=KEY_B)]
        with caplog.at_level(logging.DEBUG, logger="loom"):
            loom = TaskLoom(
                "fake-model",
                "{{ text }}",
                endpoints=endpoints,
                max_retries=2,
                db_path=tmp_path / "loom.db",
            )
            with loom:
                started = time.monotonic()
                batch = loom.map(
                    [f"doc {i}" for i in range(40)], task_name="ep-down", max_workers=8
                )
                elapsed = time.monotonic() - started
                shown = repr(loom)
    assert elapsed < 10
    assert len(batch.failed()) == 40
    for result in batch:
        assert result.error is not None
        assert result.error.code is ErrorCode.PROVIDER_UNAVAILABLE
        assert result.error.retryable
    messages = " ".join(r.error.message for r in batch if r.error is not None)
    assert urls[0] in messages and urls[1] in messages
    assert "every endpoint" in messages
    # The engine's retries are visible in its own log...
    assert any(r.name == "loom.retry" for r in caplog.records)
    assert any(r.name == "loom.endpoints" and "is out" in r.getMessage() for r in caplog.records)
    # ...and no key anywhere: logs, results, their details, the store, the repr.
    dumped = json.dumps([r.model_dump(mode="json") for r in batch])
    stored = (tmp_path / "loom.db").read_bytes()
    for text in (caplog.text, dumped, shown):
        assert KEY_A not in text and KEY_B not in text
    assert KEY_A.encode() not in stored and KEY_B.encode() not in stored


async def test_async_api_with_per_endpoint_keys_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOM_TEST_KEY_A", KEY_A)
    monkeypatch.setenv("LOOM_TEST_KEY_B", KEY_B)
    with FakeLLMServer(Switch()) as a, FakeLLMServer(Switch()) as b:
        loom = TaskLoom(
            "fake-model",
            "{{ text }}",
            response_model=dict,
            endpoints=[
                {"url": a.base_url, "api_key_env": "LOOM_TEST_KEY_A", "weight": 1},
                {"url": b.base_url, "api_key_env": "LOOM_TEST_KEY_B", "weight": 2},
            ],
            db_path=tmp_path / "loom.db",
        )
        async with loom:
            batch = await loom.amap([f"doc {i}" for i in range(30)], max_workers=1)
            one = await loom.aprocess("single")
    assert len(batch.successful()) == 30 and one.is_success
    assert {r.headers["authorization"] for r in a.requests} == {f"Bearer {KEY_A}"}
    assert {r.headers["authorization"] for r in b.requests} == {f"Bearer {KEY_B}"}
    assert (a.request_count, b.request_count) in ((10, 21), (11, 20))  # 1:2, one at a time


def test_misuse_is_refused_at_construction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOOM_TEST_UNSET", raising=False)
    cases: list[tuple[dict[str, object], str]] = [
        ({"base_url": "http://a/v1", "endpoints": ["http://b/v1"]}, "not both"),
        ({"endpoints": []}, "endpoints is an empty list"),
        ({"base_url": ["http://a/v1", "http://a/v1/"]}, r"base_url\[1\] .* same server"),
        ({"endpoints": [{"url": "http://a/v1", "weight": float("nan")}]}, r"endpoints\[0\]"),
        (
            {
                "endpoints": [
                    "http://a/v1",
                    {"url": "http://b/v1", "api_key_env": "LOOM_TEST_UNSET"},
                ]
            },
            "LOOM_TEST_UNSET",
        ),
    ]
    for kwargs, problem in cases:
        with pytest.raises(LoomUsageError, match=problem):
            TaskLoom("m", "{{ text }}", db_path=tmp_path / "x.db", **kwargs)  # type: ignore[arg-type]
