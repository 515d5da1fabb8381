"""The backends' argument checks are loom_protocol's: a bool is never a number of seconds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from loom_backends import OpenAIChatBackend, resolve_backend
from loom_backends.testing import FakeBackend, FakeLLMServer, FakeReply, FaultPlan
from loom_backends.testing import contract_request as chat
from loom_protocol import LoomUsageError


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda: FakeLLMServer(latency=True), "latency must be a finite number of seconds >= 0"),
        (lambda: FakeLLMServer(jitter=False), "jitter must be a finite number of seconds >= 0"),
        (lambda: FakeLLMServer(latency="1"), "latency must be a finite number of seconds >= 0"),
        (lambda: FakeLLMServer(rpm_limit=True), "rpm_limit must be an int >= 1, got True"),
        (lambda: FakeReply(delay=True), "delay must be a finite number of seconds >= 0"),
        (lambda: FakeReply(status=True), "status must be an HTTP status, got True"),
        (lambda: FaultPlan(rate_429=True), r"rate_429 must be a finite number in \[0, 1\]"),
        (lambda: FaultPlan(rate_500=False), r"rate_500 must be a finite number in \[0, 1\]"),
        (lambda: FaultPlan(retry_after=(True, 2.0)), "retry_after must be a finite number"),
        (lambda: FaultPlan(retry_after=("1", 2.0)), "retry_after must be a finite number"),
        (lambda: FakeBackend(timeout=True), "timeout must be a finite number of seconds > 0"),
        (lambda: OpenAIChatBackend("http://h/v1", timeout=True), "timeout must be a finite"),
        (lambda: OpenAIChatBackend("http://h/v1", max_connections=True), "must be an int >= 1"),
    ],
)
def test_a_bool_is_refused_where_a_number_is_wanted(
    make: Callable[[], object], problem: str
) -> None:
    with pytest.raises(LoomUsageError, match=problem):
        make()


def test_a_fake_backend_timeout_set_later_is_checked_too() -> None:
    fake = FakeBackend()
    fake.timeout = 2
    assert fake.timeout == 2.0
    for bad in (True, 0, "5"):
        with pytest.raises(LoomUsageError, match="FakeBackend: timeout must be a finite number"):
            fake.timeout = bad  # type: ignore[assignment]
    assert fake.timeout == 2.0


@pytest.mark.parametrize("model", ["", "   ", None, 3])
def test_a_model_name_must_be_a_non_blank_string(model: Any) -> None:
    with pytest.raises(LoomUsageError, match="model must be a non-empty string, got"):
        resolve_backend(model, base_url="http://h/v1")


async def test_token_counts_that_are_bools_are_no_usage() -> None:
    answer = {"choices": [{"message": {"role": "assistant", "content": "hi"}}]}
    fake = FakeBackend(
        lambda req: FakeReply(
            body={**answer, "usage": {"prompt_tokens": True, "completion_tokens": False}}
        )
    )
    assert (await fake.acomplete(chat())).usage is None
    fake.handler = lambda req: FakeReply(
        body={**answer, "usage": {"prompt_tokens": 3, "completion_tokens": True}}
    )
    usage = (await fake.acomplete(chat())).usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (3, 0, 3)
