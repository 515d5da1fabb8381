"""Transport retries and re-asks in one task: two budgets, one count of attempts and usage."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from pydantic import BaseModel, Field

from loom_backends.testing import FakeBackend, FakeReply, RecordedRequest
from loom_protocol import ChatRequest, ChatResponse, ErrorCode

from .conftest import LoomFactory


class Item(BaseModel):
    name: str
    price: float = Field(gt=0)


DOWN = FakeReply("down", status=503)


def answer(content: str, total: int) -> FakeReply:
    return FakeReply(content, usage={"prompt_tokens": total - 1, "completion_tokens": 1})


BAD = answer('{"name": "tea", "price": -1}', 10)
GOOD = answer('{"name": "tea", "price": 2}', 20)


def scripted(*replies: FakeReply) -> FakeBackend:
    """A backend answering ``replies`` in order, one per call."""
    pending: Iterator[FakeReply] = iter(replies)

    def handler(req: RecordedRequest) -> FakeReply:
        return next(pending)

    return FakeBackend(handler)


def test_a_failure_and_a_reask_each_use_their_own_budget(make_loom: LoomFactory) -> None:
    loom = make_loom(scripted(DOWN, BAD, GOOD), response_model=Item, max_retries=1)
    result = loom.process("x")
    assert result.is_success, result.error
    assert result.data == Item(name="tea", price=2)
    assert result.attempts == 3
    assert result.usage is not None
    assert (result.usage.total_tokens, result.usage.prompt_tokens) == (30, 28)


def test_transport_failures_count_over_the_whole_task(
    make_loom: LoomFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A re-ask does not give the transport its budget back."""
    caplog.set_level(logging.INFO, logger="loom")
    loom = make_loom(scripted(DOWN, BAD, DOWN, GOOD), response_model=Item, max_retries=1)
    result = loom.process("x")
    assert not result.is_success
    assert result.error is not None
    assert result.error.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert result.error.status == 503
    assert result.error.retryable
    assert result.raw_output is None
    assert result.attempts == 3
    assert result.usage is not None and result.usage.total_tokens == 10
    messages = [r.getMessage() for r in caplog.records if r.name == "loom.retry"]
    task = result.task_id[:12]
    assert messages == [
        f"task {task}: provider_unavailable (HTTP 503); retry 1 of 1 in "
        + messages[0].rsplit(" in ", 1)[1],
        f"task {task}: the answer fails (validation_failed); re-ask 1 of 1",
        f"task {task} failed after 3 attempts: provider_unavailable (HTTP 503); giving up",
    ]


def test_the_last_unusable_answer_is_the_result(make_loom: LoomFactory) -> None:
    loom = make_loom(scripted(BAD, DOWN, BAD), response_model=Item, max_retries=1)
    result = loom.process("x")
    assert not result.is_success
    assert result.error is not None and result.error.code is ErrorCode.VALIDATION_FAILED
    assert result.raw_output == '{"name": "tea", "price": -1}'
    assert result.model == "fake-model"
    assert result.attempts == 3
    assert result.usage is not None and result.usage.total_tokens == 20


class Broken:
    """A backend with a bug: it raises something other than BackendError."""

    def __init__(self) -> None:
        self.calls = 0

    async def acomplete(self, request: ChatRequest) -> ChatResponse:
        self.calls += 1
        raise RuntimeError("boom")

    async def aclose(self) -> None:
        pass


def test_a_backend_bug_fails_the_task_without_a_retry(make_loom: LoomFactory) -> None:
    backend = Broken()
    result = make_loom(FakeBackend(), backend=backend).process("x")
    assert not result.is_success
    assert result.error is not None
    assert result.error.code is ErrorCode.PROVIDER_ERROR
    assert result.error.message == "backend raised RuntimeError: boom"
    assert "RuntimeError: boom" in (result.error.detail or "")
    assert not result.error.retryable
    assert result.attempts == 1
    assert backend.calls == 1
