"""Parsing through the engine: dirty JSON, truncation, re-asking with the validation error."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

from loom_backends.testing import FakeLLMServer, FakeReply, RecordedRequest
from loom_protocol import ErrorCode

from .conftest import LoomFactory


class Item(BaseModel):
    name: str
    price: float = Field(gt=0)


@pytest.mark.parametrize(
    "answer",
    [
        '```json\n{"name": "tea", "price": 3.5}\n```',
        'Sure! Here is the JSON:\n{"name": "tea", "price": 3.5}\nHope it helps.',
        '{"name": "tea", "price": 3.5,}',
        "{'name': 'tea', 'price': 3.5}",
    ],
    ids=["fences", "prose", "trailing-comma", "single-quotes"],
)
def test_dirty_json_is_repaired(make_loom: LoomFactory, answer: str) -> None:
    with FakeLLMServer(lambda req: answer) as srv:
        result = make_loom(srv, response_model=Item).process("x")
        assert result.is_success, result.error
        assert result.data == Item(name="tea", price=3.5)
        assert result.raw_output == answer
        assert srv.request_count == 1


def test_without_repair_dirty_json_fails(make_loom: LoomFactory) -> None:
    with FakeLLMServer(lambda req: '{"name": "tea", "price": 3.5,}') as srv:
        result = make_loom(srv, response_model=Item, auto_repair_json=False, max_retries=0).process(
            "x"
        )
        assert not result.is_success
        assert result.error is not None and result.error.code == ErrorCode.JSON_INVALID


def test_top_level_array_is_an_error_not_its_first_element(make_loom: LoomFactory) -> None:
    with FakeLLMServer(lambda req: '[{"text": "first"}, {"text": "second"}]') as srv:
        result = make_loom(srv, response_model=dict, max_retries=0).process("x")
        assert not result.is_success
        assert result.data is None
        assert result.error is not None and "array" in result.error.message


def test_truncated_output_is_never_accepted_silently(make_loom: LoomFactory) -> None:
    with FakeLLMServer(lambda req: FakeReply('{"name": "te', finish_reason="length")) as srv:
        result = make_loom(srv, response_model=Item, max_retries=1).process("x")
        assert not result.is_success
        assert result.error is not None and result.error.code == ErrorCode.JSON_INVALID
        assert "token limit" in result.error.message
        assert result.raw_output == '{"name": "te'
        assert srv.request_count == 2  # asked once more, then gave up


def test_validation_failure_asks_again_with_the_error(make_loom: LoomFactory) -> None:
    def answer(req: RecordedRequest) -> str:
        # Wrong until the model is told what was wrong.
        if "price" in req.last_user_text and "greater than 0" in req.last_user_text:
            return '{"name": "tea", "price": 2}'
        return '{"name": "tea", "price": -1}'

    with FakeLLMServer(answer) as srv:
        result = make_loom(srv, response_model=Item).process("x")
        assert result.is_success and result.data == Item(name="tea", price=2)
        assert result.attempts == 2
        second = srv.requests[1].messages
        assert second[-2]["role"] == "assistant"
        assert second[-2]["content"] == '{"name": "tea", "price": -1}'
        assert "greater than 0" in second[-1]["content"]


def test_validation_keeps_failing_within_max_retries(make_loom: LoomFactory) -> None:
    with FakeLLMServer(lambda req: '{"name": "tea", "price": -1}') as srv:
        result = make_loom(srv, response_model=Item, max_retries=2).process("x")
        assert not result.is_success
        assert result.error is not None and result.error.code == ErrorCode.VALIDATION_FAILED
        assert result.raw_output == '{"name": "tea", "price": -1}'
        assert result.attempts == 3
        assert srv.request_count == 3
