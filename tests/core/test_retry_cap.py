"""max_retry_wait: no provider can make a task, or the whole loom, wait without limit."""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from typing import Any

import pytest

from loom_backends import parse_retry_after
from loom_backends.testing import FakeLLMServer, FakeReply, RecordedRequest
from loom_core import LoomUsageError
from loom_core._retry import backoff_delay
from loom_protocol import BackendError, ChatRequest, ChatResponse, Error, ErrorCode

from .conftest import LoomFactory, echo_json

pytestmark = pytest.mark.timeout(120)


def within(seconds: float, fn: Any) -> Any:
    """Run ``fn`` on a helper thread; fail (instead of waiting a day) past ``seconds``."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still running after {seconds} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def refuse_slow(headers: dict[str, str], status: int = 429) -> Any:
    """A handler answering ``status`` with ``headers`` for the input "slow", echo otherwise."""

    def handler(req: RecordedRequest) -> str | FakeReply:
        if req.last_user_text == "slow":
            return FakeReply("slow down", status=status, headers=headers)
        return echo_json(req)

    return handler


FAR_DATE = "Fri, 31 Dec 9999 23:59:59 GMT"


@pytest.mark.parametrize("value", [0, -1, math.nan, math.inf, "60", True, None])
def test_max_retry_wait_is_validated(
    make_loom: LoomFactory, server: FakeLLMServer, value: Any
) -> None:
    with pytest.raises(LoomUsageError, match="max_retry_wait"):
        make_loom(server, max_retry_wait=value)


@pytest.mark.parametrize(
    ("headers", "asked"),
    [
        ({"Retry-After": "86400"}, "asked to wait 86400 s"),
        ({"Retry-After": "1e308"}, "asked to wait 1e+308 s"),
        ({"Retry-After": "inf"}, "asked to wait without limit"),
        ({"Retry-After": "1e999"}, "asked to wait without limit"),
        ({"retry-after-ms": "86400000"}, "asked to wait 86400 s"),
        ({"Retry-After": FAR_DATE}, "asked to wait 2."),
    ],
)
def test_a_long_retry_after_fails_that_task_only(
    make_loom: LoomFactory, headers: dict[str, str], asked: str
) -> None:
    with FakeLLMServer(refuse_slow(headers)) as srv:
        loom = make_loom(srv, response_model=dict)
        inputs = ["a", "b", "slow", "c", "d", "e", "f", "g"]
        started = time.monotonic()
        batch = within(20, lambda: loom.map(inputs, max_workers=2))
        assert time.monotonic() - started < 5  # the loom was not paused
        slow = batch[2]
        assert slow.error is not None
        assert slow.error.code is ErrorCode.PROVIDER_RATE_LIMITED
        assert slow.error.status == 429
        assert asked in slow.error.message
        assert "more than max_retry_wait=60 s" in slow.error.message
        assert slow.attempts == 1
        assert [r.is_success for i, r in enumerate(batch) if i != 2] == [True] * 7
        slow_requests = [r for r in srv.requests if r.last_user_text == "slow"]
        assert len(slow_requests) == 1  # not retried either


def test_a_retry_after_above_a_small_max_retry_wait_is_refused(make_loom: LoomFactory) -> None:
    with FakeLLMServer(refuse_slow({"Retry-After": "3"})) as srv:
        loom = make_loom(srv, response_model=dict, max_retry_wait=1.5)
        started = time.monotonic()
        result = within(20, lambda: loom.process("slow"))
        assert time.monotonic() - started < 1.5
        assert result.error is not None
        assert "asked to wait 3 s, more than max_retry_wait=1.5 s" in result.error.message


def test_a_503_asking_too_long_keeps_its_code(make_loom: LoomFactory) -> None:
    with FakeLLMServer(refuse_slow({"Retry-After": "3600"}, status=503)) as srv:
        loom = make_loom(srv, response_model=dict)
        result = within(20, lambda: loom.process("slow"))
        assert result.error is not None
        assert result.error.code is ErrorCode.PROVIDER_UNAVAILABLE
        assert "asked to wait 3600 s" in result.error.message


def test_a_retry_after_within_max_retry_wait_is_honoured(make_loom: LoomFactory) -> None:
    answered: set[str] = set()

    def once(req: RecordedRequest) -> str | FakeReply:
        text = req.last_user_text
        if text not in answered:
            answered.add(text)
            return FakeReply("wait", status=429, headers={"Retry-After": "0.6"})
        return echo_json(req)

    with FakeLLMServer(once) as srv:
        loom = make_loom(srv, response_model=dict, max_retry_wait=1.0)
        result = within(20, lambda: loom.process("patient"))
        assert result.is_success
        first, second = srv.requests
        assert second.received_at - first.received_at >= 0.6


@pytest.mark.parametrize(
    "value",
    [
        "nan",
        "-5",
        "soon",
        "Fri, 31 Dec 99999 23:59:59 GMT",
        "Fri, 31 Dec 2030 23:59:59 +99999999999999999999",  # overflowed the date parser
        "Fri, 31 Dec 99999999999999999999 23:59:59 GMT",
    ],
)
def test_an_unusable_retry_after_is_a_plain_retry(make_loom: LoomFactory, value: str) -> None:
    answered: set[str] = set()

    def once(req: RecordedRequest) -> str | FakeReply:
        if req.last_user_text not in answered:
            answered.add(req.last_user_text)
            return FakeReply("wait", status=429, headers={"Retry-After": value})
        return echo_json(req)

    with FakeLLMServer(once) as srv:
        loom = make_loom(srv, response_model=dict)
        started = time.monotonic()
        result = within(20, lambda: loom.process("odd header"))
        assert result.is_success, result.error
        assert result.attempts == 2
        assert time.monotonic() - started < 3


class AskingBackend:
    """A third-party backend that raises a 429 with an arbitrary ``retry_after`` once."""

    def __init__(self, retry_after: Any) -> None:
        self.retry_after = retry_after
        self.calls = 0

    async def acomplete(self, request: ChatRequest) -> ChatResponse:
        self.calls += 1
        if self.calls == 1:
            raise BackendError(
                Error(code=ErrorCode.PROVIDER_RATE_LIMITED, message="busy", retryable=True),
                retry_after=self.retry_after,
            )
        return ChatResponse(content='{"ok": true}')

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize("retry_after", [math.nan, -1.0, 0.0, 0.2])
def test_a_backend_asking_odd_waits_is_retried(
    make_loom: LoomFactory, server: FakeLLMServer, retry_after: float
) -> None:
    backend = AskingBackend(retry_after)
    loom = make_loom(server, response_model=dict, backend=backend)
    result = within(20, lambda: loom.process("x"))
    assert result.is_success, result.error
    assert backend.calls == 2


@pytest.mark.parametrize("retry_after", [math.inf, 1e308, 61.0])
def test_a_backend_asking_too_long_fails_the_task(
    make_loom: LoomFactory, server: FakeLLMServer, retry_after: float
) -> None:
    backend = AskingBackend(retry_after)
    loom = make_loom(server, response_model=dict, backend=backend)
    result = within(20, lambda: loom.process("x"))
    assert result.error is not None
    assert result.error.code is ErrorCode.PROVIDER_RATE_LIMITED
    assert "more than max_retry_wait=60 s" in result.error.message
    assert backend.calls == 1


async def test_a_long_retry_after_does_not_pause_an_async_batch(
    amake_loom: LoomFactory,
) -> None:
    with FakeLLMServer(refuse_slow({"Retry-After": "86400"})) as srv:
        loom = amake_loom(srv, response_model=dict)
        batch = await asyncio.wait_for(loom.amap(["slow", *map(str, range(20))]), 20)
        assert batch[0].error is not None
        assert len(batch.successful()) == 20


# -- backoff_delay never goes past max_wait --------------------------------------------------


def test_backoff_never_exceeds_max_wait() -> None:
    rng = random.Random(5)
    for attempt in range(1, 40):
        for retry_after in (None, 0.0, 0.5, 2.9, 3.0):
            delay = backoff_delay(attempt, retry_after=retry_after, rng=rng, max_wait=3.0)
            assert delay <= 3.0
            if retry_after is not None:
                assert delay >= retry_after


@pytest.mark.parametrize("max_wait", [0.0, -1.0, math.inf, math.nan])
def test_backoff_refuses_a_bad_max_wait(max_wait: float) -> None:
    with pytest.raises(LoomUsageError, match="max_wait"):
        backoff_delay(1, max_wait=max_wait)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Fri, 31 Dec 2030 23:59:59 +99999999999999999999", None),  # raised OverflowError
        ("Fri, 31 Dec 99999999999999999999 23:59:59 GMT", None),  # raised OverflowError
        ("inf", math.inf),  # was ignored: a provider saying "never" was retried at once
        ("1e999", math.inf),
        ("-inf", 0.0),
        ("nan", None),
    ],
)
def test_parse_retry_after_edge_cases(value: str, expected: float | None) -> None:
    assert parse_retry_after({"Retry-After": value}) == expected
    assert parse_retry_after({"retry-after-ms": value}) == (
        None if expected is None else expected / 1000
    )
