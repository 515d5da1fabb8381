"""FakeBackend: FakeLLMServer's handler in process, held to the same conformance suite."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from loom_backends.testing import (
    BackendContract,
    FakeBackend,
    FakeLLMServer,
    FakeReply,
    RecordedRequest,
)
from loom_backends.testing import contract_request as chat
from loom_protocol import Backend, BackendError, ErrorCode, LoomUsageError


class _StandIn(FakeBackend):
    """The backend standing in for the server it does without (the suite reads a port)."""

    port = 0


class TestFakeBackend(BackendContract):
    sends_http = False

    @pytest.fixture
    def server(self) -> Any:
        self.fake = _StandIn()
        return self.fake

    def make_backend(self, port: int, *, api_key: str | None, timeout: float) -> Backend:
        self.fake.api_key, self.fake.timeout = api_key, timeout
        return self.fake


async def test_the_answers_match_the_servers(server: FakeLLMServer) -> None:
    """One handler, both ways: the same ChatResponse and the same recorded body."""
    from loom_backends import OpenAIChatBackend

    def handler(request: RecordedRequest) -> FakeReply:
        return FakeReply(
            f"hi {request.last_user_text}", reasoning_content="r", finish_reason="length"
        )

    server.handler = handler
    fake = FakeBackend(handler)
    async with OpenAIChatBackend(server.base_url) as http:
        over_http = await http.acomplete(chat("there", temperature=0.5))
    in_process = await fake.acomplete(chat("there", temperature=0.5))
    assert in_process == over_http.model_copy(update={"model": in_process.model})
    assert in_process.model == over_http.model == "fake-model"
    assert fake.requests[0].body == server.requests[0].body
    assert fake.requests[0].status == server.requests[0].status == 200


async def test_retry_after_and_the_status_are_recorded() -> None:
    fake = FakeBackend(lambda req: FakeReply(status=429, headers={"Retry-After": "3"}))
    with pytest.raises(BackendError) as caught:
        await fake.acomplete(chat())
    assert caught.value.code is ErrorCode.PROVIDER_RATE_LIMITED
    assert caught.value.retry_after == 3.0
    (seen,) = fake.requests
    assert (seen.status, seen.retry_after) == (429, 3.0)


async def test_a_handler_that_raises_is_a_retryable_500_naming_it() -> None:
    def broken(request: RecordedRequest) -> str:
        raise KeyError("missing")

    fake = FakeBackend(broken)
    with pytest.raises(BackendError) as caught:
        await fake.acomplete(chat())
    assert caught.value.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert caught.value.retryable
    assert caught.value.error.detail is not None
    assert "KeyError: 'missing'" in caught.value.error.detail


async def test_an_async_handler_and_concurrent_calls() -> None:
    async def slow(request: RecordedRequest) -> str:
        await asyncio.sleep(0.2)
        return request.last_user_text

    fake = FakeBackend(slow)
    started = time.monotonic()
    answers = await asyncio.gather(*(fake.acomplete(chat(str(i))) for i in range(50)))
    assert time.monotonic() - started < 2.0  # concurrent, not one after another
    assert [a.content for a in answers] == [str(i) for i in range(50)]
    assert fake.request_count == 50
    fake.clear()
    assert fake.requests == []


async def test_a_clear_during_a_call_does_not_resurrect_the_record() -> None:
    fake = FakeBackend(lambda req: FakeReply("late", delay=0.1))
    call = asyncio.ensure_future(fake.acomplete(chat()))
    await asyncio.sleep(0.02)
    fake.clear()
    assert (await call).content == "late"
    assert fake.requests == []


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(LoomUsageError, match="handler must be callable, got int"):
        FakeBackend(3)  # type: ignore[arg-type]
    with pytest.raises(LoomUsageError, match="timeout must be"):
        FakeBackend(timeout=0)


async def test_a_non_request_is_a_usage_error() -> None:
    with pytest.raises(LoomUsageError, match="ChatRequest, got dict"):
        await FakeBackend().acomplete({"model": "m"})  # type: ignore[arg-type]
