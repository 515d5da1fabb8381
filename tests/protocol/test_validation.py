"""Validation fails fast, with a message that names the field and the problem."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from loom_protocol import (
    BatchStartEvent,
    BatchSummary,
    ChatRequest,
    Error,
    ErrorCode,
    ImagePart,
    Message,
    TaskResult,
    TaskResultEvent,
    TextPart,
    Usage,
    parse_stream_event,
)

USER = [Message(role="user", content="hello")]


def rejected(exc: pytest.ExceptionInfo[ValidationError]) -> tuple[str, str]:
    """The location and message of the single validation error."""
    errors = exc.value.errors()
    assert len(errors) == 1, errors
    return ".".join(str(part) for part in errors[0]["loc"]), errors[0]["msg"]


@pytest.mark.parametrize(("value", "bound"), [(-0.1, "greater than or equal to 0"), (2.1, "2")])
def test_temperature_outside_0_2_is_rejected(value: float, bound: str) -> None:
    with pytest.raises(ValidationError) as exc:
        ChatRequest(model="m", messages=USER, temperature=value)
    loc, msg = rejected(exc)
    assert loc == "temperature"
    assert bound in msg


@pytest.mark.parametrize("value", [0.0, 0.7, 2.0])
def test_temperature_within_bounds_is_kept(value: float) -> None:
    assert ChatRequest(model="m", messages=USER, temperature=value).temperature == value


@pytest.mark.parametrize("value", [0, -5])
def test_max_tokens_must_be_positive(value: int) -> None:
    with pytest.raises(ValidationError) as exc:
        ChatRequest(model="m", messages=USER, max_tokens=value)
    loc, msg = rejected(exc)
    assert loc == "max_tokens"
    assert "greater than 0" in msg


def test_empty_messages_are_rejected() -> None:
    with pytest.raises(ValidationError) as exc:
        ChatRequest(model="m", messages=[])
    loc, msg = rejected(exc)
    assert loc == "messages"
    assert "at least 1 item" in msg


def test_empty_model_name_is_rejected() -> None:
    with pytest.raises(ValidationError) as exc:
        ChatRequest(model="", messages=USER)
    assert rejected(exc)[0] == "model"


def test_unknown_role_is_rejected() -> None:
    with pytest.raises(ValidationError) as exc:
        Message(role="tool", content="x")  # type: ignore[arg-type]
    assert rejected(exc)[0] == "role"


@pytest.mark.parametrize("field", ["prompt_tokens", "completion_tokens", "total_tokens"])
def test_negative_token_counts_are_rejected(field: str) -> None:
    counts: dict[str, Any] = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    counts[field] = -1
    with pytest.raises(ValidationError) as exc:
        Usage(**counts)
    loc, msg = rejected(exc)
    assert loc == field
    assert "greater than or equal to 0" in msg


@pytest.mark.parametrize(
    ("field", "value"),
    [("temperature", True), ("temperature", "0.5"), ("max_tokens", True), ("max_tokens", 5.0)],
)
def test_a_request_takes_no_bool_or_text_for_a_number(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as exc:
        ChatRequest(model="m", messages=USER, **{field: value})
    assert rejected(exc)[0] == field


def test_a_request_takes_an_int_temperature() -> None:
    assert ChatRequest(model="m", messages=USER, temperature=1).temperature == 1.0


@pytest.mark.parametrize("field", ["prompt_tokens", "completion_tokens", "total_tokens"])
def test_a_bool_is_no_token_count(field: str) -> None:
    counts: dict[str, Any] = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    counts[field] = True
    with pytest.raises(ValidationError, match=f"{field} must be an int, not a bool"):
        Usage(**counts)
    with pytest.raises(ValidationError, match=f"{field} must be an int, not a bool"):
        Usage.model_validate_json(json.dumps(counts))


def test_negative_summary_counts_are_rejected() -> None:
    with pytest.raises(ValidationError) as exc:
        BatchSummary(total=-1)
    assert rejected(exc)[0] == "total"


def test_usage_derives_a_missing_total() -> None:
    assert Usage(prompt_tokens=3, completion_tokens=4).total_tokens == 7
    assert Usage.model_validate({"prompt_tokens": 3, "completion_tokens": 4}).total_tokens == 7
    assert Usage(prompt_tokens=3, completion_tokens=4, total_tokens=9).total_tokens == 9


def test_usage_adds_up() -> None:
    total = Usage(prompt_tokens=1, completion_tokens=2) + Usage(
        prompt_tokens=10, completion_tokens=20
    )
    assert total == Usage(prompt_tokens=11, completion_tokens=22, total_tokens=33)


def test_failed_result_without_error_is_rejected() -> None:
    with pytest.raises(ValidationError, match="a failed TaskResult must carry an error"):
        TaskResult[str](task_id="t", is_success=False)


def test_successful_result_with_error_is_rejected() -> None:
    error = Error(code=ErrorCode.INTERNAL, message="boom")
    with pytest.raises(ValidationError, match="a successful TaskResult must not carry an error"):
        TaskResult[str](task_id="t", is_success=True, data="x", error=error)


def test_negative_attempts_and_latency_are_rejected() -> None:
    with pytest.raises(ValidationError) as exc:
        TaskResult[str](task_id="t", is_success=True, attempts=-1)
    assert rejected(exc)[0] == "attempts"
    with pytest.raises(ValidationError) as exc:
        TaskResult[str](task_id="t", is_success=True, latency_ms=-0.5)
    assert rejected(exc)[0] == "latency_ms"


@pytest.mark.parametrize(
    "url", ["/tmp/cat.png", "cat.png", "file:///tmp/cat.png", "C:\\images\\cat.png", ""]
)
def test_image_part_refuses_anything_but_http_and_data_urls(url: str) -> None:
    with pytest.raises(ValidationError) as exc:
        ImagePart(url=url)
    loc, msg = rejected(exc)
    assert loc == "url"
    assert "http://, https:// or data:" in msg
    assert repr(url) in msg


def test_image_part_message_shortens_a_huge_value() -> None:
    with pytest.raises(ValidationError) as exc:
        ImagePart(url="iVBORw0KGgo" + "A" * 10_000)
    assert len(rejected(exc)[1]) < 200


def test_content_part_of_unknown_type_is_rejected() -> None:
    with pytest.raises(ValidationError, match="audio"):
        Message.model_validate({"role": "user", "content": [{"type": "audio", "url": "x"}]})
    assert Message(role="user", content=[TextPart(text="ok")]).content == [TextPart(text="ok")]


@pytest.mark.parametrize("status", [99, 600])
def test_error_status_must_be_an_http_status(status: int) -> None:
    with pytest.raises(ValidationError) as exc:
        Error(code=ErrorCode.PROVIDER_ERROR, message="x", status=status)
    assert rejected(exc)[0] == "status"


def test_error_needs_a_message_and_a_known_code() -> None:
    with pytest.raises(ValidationError) as exc:
        Error(code=ErrorCode.INTERNAL, message="")
    assert rejected(exc)[0] == "message"
    with pytest.raises(ValidationError) as exc:
        Error.model_validate({"code": "no_such_code", "message": "x"})
    assert rejected(exc)[0] == "code"


@pytest.mark.parametrize(
    "data",
    [
        {"type": "batch_paused", "batch_id": "b"},
        '{"type": "batch_paused", "batch_id": "b"}',
        b'{"type": "batch_paused", "batch_id": "b"}',
    ],
    ids=["dict", "str", "bytes"],
)
def test_unknown_event_type_is_rejected_naming_the_tags(data: Any) -> None:
    with pytest.raises(ValidationError) as exc:
        parse_stream_event(data)
    message = str(exc.value)
    assert "batch_paused" in message
    for tag in ("batch_start", "task_result", "batch_end", "batch_error"):
        assert tag in message


def test_event_without_type_is_rejected() -> None:
    with pytest.raises(ValidationError, match="type"):
        parse_stream_event({"batch_id": "b"})


def test_event_counts_must_not_be_negative() -> None:
    with pytest.raises(ValidationError) as exc:
        BatchStartEvent(batch_id="b", total=-1)
    assert rejected(exc)[0] == "total"
    result = TaskResult[str](task_id="t", is_success=True, data="x")
    with pytest.raises(ValidationError) as exc:
        TaskResultEvent(batch_id="b", index=-1, result=result, done=0)
    assert rejected(exc)[0] == "index"


def test_contracts_are_frozen() -> None:
    request = ChatRequest(model="m", messages=USER)
    with pytest.raises(ValidationError, match="frozen"):
        request.model = "other"  # type: ignore[misc]
