"""The seed's examples, output kinds, events and batch helpers, over real HTTP or in process."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from loom_backends.testing import FakeBackend, FakeLLMServer, FakeReply, RecordedRequest
from loom_core import TaskLoom
from loom_protocol import BatchResult, ErrorCode, TaskResult, parse_stream_event

from .conftest import LoomFactory


class UserProfile(BaseModel):
    name: str
    skills: list[str]


def resume_answer(req: RecordedRequest) -> str:
    text = req.last_user_text
    if "张三" in text:
        return json.dumps({"name": "张三", "skills": ["Python"]}, ensure_ascii=False)
    return json.dumps({"name": "李四", "skills": ["设计"]}, ensure_ascii=False)


def test_seed_first_example(make_loom: LoomFactory) -> None:
    with FakeLLMServer(resume_answer) as srv:
        loom = make_loom(
            srv, prompt_template="提取简历中的信息:{{ text }}", response_model=UserProfile
        )
        with loom:
            results = loom.map(
                [{"text": "张三精通 Python"}, {"text": "李四会设计"}],
                task_name="cv_parse_v1",
                max_workers=5,
            )
        assert isinstance(results, BatchResult)
        assert results.successful()[0].data.skills == ["Python"]
        assert [r.data.name for r in results] == ["张三", "李四"]
        assert [r.input_data["text"] for r in results] == ["张三精通 Python", "李四会设计"]
        body = srv.requests[0].body
        assert body["model"] == "fake-model"
        assert body["response_format"]["type"] == "json_schema"
        assert srv.requests[0].headers["authorization"] == "Bearer sk-test-secret-key"


def test_response_model_dict_and_text(make_loom: LoomFactory, fake: FakeBackend) -> None:
    as_dict = make_loom(fake, response_model=dict)
    result = as_dict.process("hello")
    assert result.is_success and result.data == {"text": "hello"}
    assert fake.requests[-1].body["response_format"] == {"type": "json_object"}

    as_text = make_loom(fake)
    result = as_text.process({"text": "plain"})
    assert result.is_success and result.data == json.dumps({"text": "plain"})
    assert "response_format" not in fake.requests[-1].body


def test_text_output_keeps_reasoning_apart(make_loom: LoomFactory) -> None:
    def answer(req: RecordedRequest) -> FakeReply:
        if "think" in req.last_user_text:
            return FakeReply("<think>step by step</think>\nThe answer is 4.")
        return FakeReply("Paris", reasoning_content="capital of France")

    with FakeLLMServer(answer) as srv:
        loom = make_loom(srv)
        thought = loom.process("think: 2+2")
        assert thought.data == "The answer is 4."
        assert thought.reasoning == "step by step"
        assert thought.raw_output is not None and "<think>" in thought.raw_output
        native = loom.process("capital?")
        assert native.data == "Paris"
        assert native.reasoning == "capital of France"


def test_null_content_is_not_the_text_none(make_loom: LoomFactory) -> None:
    with FakeLLMServer(lambda req: FakeReply(None)) as srv:
        result = make_loom(srv).process("x")
        assert result.data != "None"
        assert result.is_success and result.data == ""


def test_results_carry_usage_attempts_latency_model(make_loom: LoomFactory) -> None:
    reply = FakeReply(
        '{"a": 1}', usage={"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    )
    with FakeLLMServer(lambda req: reply) as srv:
        batch = make_loom(srv, response_model=dict).map(["a", "b", "c"])
    for result in batch:
        assert result.attempts == 1
        assert result.usage is not None and result.usage.total_tokens == 10
        assert result.latency_ms is not None and result.latency_ms > 0
        assert result.model == "fake-model"
    summary = batch.summary
    assert (summary.total, summary.succeeded, summary.failed, summary.cached) == (3, 3, 0, 0)
    assert (summary.prompt_tokens, summary.completion_tokens, summary.total_tokens) == (21, 9, 30)
    assert summary.elapsed_s > 0


def test_stream_events_are_typed_and_serializable(
    make_loom: LoomFactory, fake: FakeBackend
) -> None:
    loom = make_loom(fake, response_model=dict)
    inputs = [f"item {i}" for i in range(6)] + [42]
    events = list(loom.stream_events(inputs, task_name="events", max_workers=3))
    assert events[0].type == "batch_start"
    assert events[0].total == 7 and events[0].task_name == "events"
    middle = events[1:-1]
    assert [e.type for e in middle] == ["task_result"] * 7
    assert sorted(e.index for e in middle) == list(range(7))
    assert [e.done for e in middle] == list(range(1, 8))
    assert all(e.total == 7 for e in middle)
    end = events[-1]
    assert end.type == "batch_end"
    assert (end.summary.total, end.summary.succeeded, end.summary.failed) == (7, 6, 1)
    for event in events:
        text = json.dumps(event.model_dump(mode="json"))
        assert parse_stream_event(text).type == event.type


async def test_astream_events_with_unknown_total(
    amake_loom: LoomFactory, fake: FakeBackend
) -> None:
    loom = amake_loom(fake, response_model=dict)

    def gen() -> Any:
        yield from ("a", "b", "c")

    events = [e async for e in loom.astream_events(gen(), task_name="events-async")]
    assert events[0].type == "batch_start" and events[0].total is None
    assert [e.type for e in events[1:-1]] == ["task_result"] * 3
    assert events[-1].type == "batch_end" and events[-1].summary.succeeded == 3


def test_stream_events_report_a_failing_input_iterable(
    make_loom: LoomFactory, fake: FakeBackend
) -> None:
    def broken() -> Any:
        yield "fine"
        raise RuntimeError("the input file is corrupt")

    events = list(make_loom(fake).stream_events(broken()))
    assert events[-1].type == "batch_error"
    assert "the input file is corrupt" in events[-1].error.message
    assert sum(e.type == "task_result" for e in events) == 1


def test_map_raises_what_the_input_iterable_raises(
    make_loom: LoomFactory, fake: FakeBackend
) -> None:
    def broken() -> Any:
        yield "fine"
        raise RuntimeError("the input file is corrupt")

    with pytest.raises(RuntimeError, match="corrupt"):
        make_loom(fake).map(broken())


def test_progress_bar_and_pandas(
    make_loom: LoomFactory, server: FakeLLMServer, capsys: pytest.CaptureFixture[str]
) -> None:
    loom = make_loom(server, response_model=dict)
    batch = loom.map(["x", "y", 3], progress=True)
    err = capsys.readouterr().err
    assert "3/3" in err and "failed=1" in err
    frame = batch.to_pandas()
    assert list(frame["text"][:2]) == ["x", "y"]
    assert list(frame["is_success"]) == [True, True, False]
    assert frame["error_code"][2] == ErrorCode.INPUT_INVALID.value


def test_context_managers_close(make_loom: LoomFactory, fake: FakeBackend) -> None:
    loom = make_loom(fake)
    with loom as entered:
        assert entered is loom
        assert loom.process("a").is_success
    with pytest.raises(Exception, match="closed"):
        loom.process("b")


async def test_async_context_manager_and_aprocess(
    amake_loom: LoomFactory, fake: FakeBackend
) -> None:
    loom = amake_loom(fake, response_model=dict)
    async with loom:
        result: TaskResult[Any] = await loom.aprocess({"text": "async"})
        assert result.data == {"text": "async"}
        batch = await loom.amap(["p", "q"], task_name="amap", max_workers=2)
        assert [r.data["text"] for r in batch] == ["p", "q"]


def test_amap_and_map_take_the_same_keywords() -> None:
    import inspect

    sync = inspect.signature(TaskLoom.map).parameters
    asynchronous = inspect.signature(TaskLoom.amap).parameters
    assert list(sync) == list(asynchronous)
    assert list(inspect.signature(TaskLoom.stream).parameters) == list(
        inspect.signature(TaskLoom.astream).parameters
    )


def test_repr_never_shows_the_key(make_loom: LoomFactory, server: FakeLLMServer) -> None:
    loom = make_loom(server)
    assert "sk-test-secret-key" not in repr(loom)


def test_duplicate_inputs_are_paid_once_in_the_summary(make_loom: LoomFactory) -> None:
    reply = FakeReply(
        '{"a": 1}', usage={"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    )
    with FakeLLMServer(lambda req: reply) as srv:
        loom = make_loom(srv, response_model=dict)
        batch = loom.map(["same"] * 5 + ["other"], task_name="dups")
        assert srv.request_count == 2
        summary = batch.summary
        assert (summary.total, summary.succeeded, summary.cached) == (6, 6, 0)
        assert summary.total_tokens == 20 and summary.prompt_tokens == 14
        assert len(batch.to_pandas()) == 6

        events = list(loom.stream_events(["new"] * 5, max_workers=2))
        end = events[-1]
        assert end.type == "batch_end"
        assert end.summary.total == 5 and end.summary.total_tokens == 10
        assert srv.request_count == 3

        # A re-run is served from the store: counted as cached, no tokens spent.
        again = list(loom.stream_events(["same"] * 5, task_name="dups"))[-1]
        assert again.type == "batch_end"
        assert (again.summary.cached, again.summary.total_tokens) == (5, 0)
        assert srv.request_count == 3
