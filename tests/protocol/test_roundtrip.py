"""Every contract survives ``model_dump_json`` → ``model_validate_json`` unchanged."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter

from loom_protocol import (
    BatchEndEvent,
    BatchErrorEvent,
    BatchResult,
    BatchStartEvent,
    BatchSummary,
    ChatRequest,
    ChatResponse,
    Error,
    ErrorCode,
    ImagePart,
    Message,
    StreamEvent,
    TaskResult,
    TaskResultEvent,
    TextPart,
    Usage,
    parse_stream_event,
)


class Verdict(BaseModel):
    label: str
    score: float
    tags: list[str] = []


class Nested(BaseModel):
    verdict: Verdict
    notes: dict[str, list[int]]


PIXEL = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"

USAGE = Usage(prompt_tokens=12, completion_tokens=30, total_tokens=42)
ERROR = Error(
    code=ErrorCode.JSON_INVALID,
    message="the answer is not JSON",
    detail="Expecting value: line 1 column 1 (char 0)",
    retryable=True,
)
SUMMARY = BatchSummary(
    total=3,
    succeeded=2,
    failed=1,
    cached=1,
    prompt_tokens=10,
    completion_tokens=20,
    total_tokens=30,
    elapsed_s=1.25,
)


def ok(data: Any, **fields: Any) -> dict[str, Any]:
    return {"task_id": "a" * 64, "is_success": True, "data": data, **fields}


def verdict_result() -> TaskResult[Verdict]:
    return TaskResult[Verdict](
        **ok(
            Verdict(label="positive", score=0.93, tags=["short"]),
            input_data={"text": "Great film", "images": ["https://example.com/a.png"]},
            raw_output='```json\n{"label": "positive", "score": 0.93, "tags": ["short"]}\n```',
            reasoning="The reviewer liked it.",
            attempts=2,
            usage=USAGE,
            latency_ms=812.5,
            model="gpt-4o-mini",
        )
    )


def failed_result() -> TaskResult[Verdict]:
    return TaskResult[Verdict](
        task_id="b" * 64,
        is_success=False,
        error=ERROR,
        input_data={"text": "??"},
        raw_output="not json at all",
        attempts=4,
    )


MODELS: dict[str, BaseModel] = {
    "Error": ERROR,
    "Error-minimal": Error(code=ErrorCode.INTERNAL, message="boom"),
    "TextPart": TextPart(text="Describe the picture."),
    "ImagePart-https": ImagePart(url="https://example.com/cat.png"),
    "ImagePart-data": ImagePart(url=PIXEL),
    "Message-text": Message(role="system", content="You are terse."),
    "Message-parts": Message(
        role="user", content=[TextPart(text="What is this?"), ImagePart(url=PIXEL)]
    ),
    "ChatRequest": ChatRequest(
        model="qwen-vl-max",
        messages=[
            Message(role="system", content="Answer in JSON."),
            Message(role="user", content=[TextPart(text="Hi"), ImagePart(url=PIXEL)]),
            Message(role="assistant", content='{"ok": true}'),
        ],
        temperature=0.2,
        max_tokens=256,
        response_format={"type": "json_object"},
        params={"top_p": 0.9, "seed": 7, "stop": ["\n\n"]},
    ),
    "ChatRequest-minimal": ChatRequest(model="m", messages=[Message(role="user", content="x")]),
    "ChatResponse": ChatResponse(
        content='{"a": 1}',
        reasoning="thinking…",
        usage=USAGE,
        finish_reason="stop",
        model="deepseek-reasoner",
    ),
    "ChatResponse-empty": ChatResponse(),
    "Usage": USAGE,
    "BatchSummary": SUMMARY,
    "TaskResult[str]": TaskResult[str](**ok("a plain answer", cached=True)),
    "TaskResult[dict]": TaskResult[dict[str, Any]](
        **ok({"label": "x", "nested": {"list": [1, 2.5, None, "é"], "flag": False}})
    ),
    "TaskResult[Verdict]": verdict_result(),
    "TaskResult[Verdict]-failed": failed_result(),
    "TaskResult[Nested]": TaskResult[Nested](
        **ok(Nested(verdict=Verdict(label="x", score=1), notes={"a": [1, 2]}))
    ),
    "BatchResult[Verdict]": BatchResult[Verdict](
        results=[verdict_result(), failed_result()], elapsed_s=3.5
    ),
    "BatchResult-empty": BatchResult[str](),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_round_trips_through_json(name: str) -> None:
    original = MODELS[name]
    text = original.model_dump_json()
    restored = type(original).model_validate_json(text)
    assert restored == original
    assert restored.model_dump_json() == text


def test_typed_data_comes_back_as_its_model() -> None:
    restored = TaskResult[Verdict].model_validate_json(verdict_result().model_dump_json())
    assert isinstance(restored.data, Verdict)
    assert restored.data.tags == ["short"]
    batch = BatchResult[Verdict].model_validate_json(
        MODELS["BatchResult[Verdict]"].model_dump_json()
    )
    assert isinstance(batch[0].data, Verdict)
    assert batch[1].error == ERROR


def test_message_parts_keep_their_kind() -> None:
    restored = Message.model_validate_json(MODELS["Message-parts"].model_dump_json())
    assert isinstance(restored.content, list)
    assert [type(part) for part in restored.content] == [TextPart, ImagePart]


def test_error_code_is_its_stable_name_in_json() -> None:
    assert json.loads(ERROR.model_dump_json())["code"] == "json_invalid"


# -- stream events ---------------------------------------------------------------------------

EVENTS: dict[str, BaseModel] = {
    "batch_start": BatchStartEvent(batch_id="b1", task_name="reviews", total=3),
    "batch_start-unknown-total": BatchStartEvent(batch_id="b1"),
    "task_result": TaskResultEvent(
        batch_id="b1",
        index=2,
        result=TaskResult[dict[str, Any]](**ok({"label": "x", "score": 0.5}, usage=USAGE)),
        done=1,
        total=3,
    ),
    "task_result-failed": TaskResultEvent(
        batch_id="b1",
        index=0,
        result=TaskResult[Any](task_id="c" * 64, is_success=False, error=ERROR),
        done=2,
        total=None,
    ),
    "batch_end": BatchEndEvent(batch_id="b1", summary=SUMMARY),
    "batch_error": BatchErrorEvent(
        batch_id="b1",
        error=Error(code=ErrorCode.CANCELLED, message="the client went away"),
        summary=SUMMARY,
    ),
    "batch_error-no-summary": BatchErrorEvent(
        batch_id="b1", error=Error(code=ErrorCode.STORE_ERROR, message="disk full")
    ),
}

_event_adapter: TypeAdapter[StreamEvent] = TypeAdapter(StreamEvent)


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_event_parses_back_by_its_tag(name: str) -> None:
    event = EVENTS[name]
    text = event.model_dump_json()
    assert json.loads(text)["type"] == name.split("-")[0]
    for parsed in (
        parse_stream_event(text),
        parse_stream_event(text.encode()),
        parse_stream_event(json.loads(text)),
        _event_adapter.validate_json(text),
    ):
        assert type(parsed) is type(event)
        assert parsed == event
    assert _event_adapter.dump_json(event).decode() == text


def test_task_result_event_with_model_data_reaches_a_consumer() -> None:
    # The engine puts a TaskResult[Verdict] in the event; a consumer parses plain JSON and
    # re-validates the result with its own model.
    event = TaskResultEvent(batch_id="b", index=0, result=verdict_result(), done=1, total=1)
    parsed = parse_stream_event(event.model_dump_json())
    assert isinstance(parsed, TaskResultEvent)
    verdict = verdict_result().data
    assert verdict is not None
    assert parsed.result.data == verdict.model_dump()
    typed = TaskResult[Verdict].model_validate(parsed.result.model_dump())
    assert typed == verdict_result()


def test_every_event_kind_is_covered() -> None:
    tags = {json.loads(e.model_dump_json())["type"] for e in EVENTS.values()}
    assert tags == {"batch_start", "task_result", "batch_end", "batch_error"}


# -- model_dump(mode="json") goes straight into SSE -------------------------------------------


@pytest.mark.parametrize(
    "result",
    [
        verdict_result(),
        MODELS["TaskResult[Nested]"],
        MODELS["TaskResult[dict]"],
        failed_result(),
        TaskResult[Any](**ok(Verdict(label="untyped", score=0))),
    ],
    ids=["model", "nested-model", "nested-dict", "failed", "model-in-untyped-result"],
)
def test_json_mode_dump_is_strict_json(result: TaskResult[Any]) -> None:
    dumped = result.model_dump(mode="json")
    text = json.dumps(dumped, allow_nan=False)
    assert json.loads(text) == json.loads(result.model_dump_json())


@pytest.mark.parametrize(
    "result",
    [
        TaskResult[Verdict](**ok(Verdict(label="x", score=float("nan")))),
        TaskResult[Any](**ok({"scores": [1.5, float("inf"), {"deep": float("-inf")}]})),
        TaskResult[Any](**{**ok({"a": 1}), "latency_ms": float("inf")}),
    ],
    ids=["nan-in-model", "inf-in-dict", "inf-latency"],
)
def test_json_mode_dump_stays_strict_json_with_non_finite_floats(result: TaskResult[Any]) -> None:
    # A result the user built may hold NaN or an infinity: JSON mode writes null, exactly as
    # model_dump_json does, so an SSE stream never carries invalid JSON.
    dumped = result.model_dump(mode="json")
    assert json.loads(json.dumps(dumped, allow_nan=False)) == json.loads(result.model_dump_json())
    # Python mode keeps the values as they are.
    python_text = json.dumps(result.model_dump(), default=str)
    assert "NaN" in python_text or "Infinity" in python_text


def test_json_mode_dump_inside_a_batch_and_an_event() -> None:
    result = TaskResult[Verdict](**ok(Verdict(label="x", score=float("nan"))))
    batch = BatchResult[Verdict](results=[result])
    assert batch.model_dump(mode="json")["results"][0]["data"]["score"] is None
    assert result.model_dump(mode="json")["data"]["score"] is None
    inf = TaskResult[Any](**ok({"scores": [1.5, float("inf"), {"deep": float("-inf")}]}))
    assert inf.model_dump(mode="json")["data"] == {"scores": [1.5, None, {"deep": None}]}
