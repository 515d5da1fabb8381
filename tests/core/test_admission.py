"""Admission never hangs a batch: any input, however hostile, is a result.

Deep nesting (what plain ``json.loads`` accepts), a dict subclass whose own methods raise, a
dict that contains itself: each becomes ``input_invalid`` naming the problem, beside good
inputs that all succeed. An input exactly at ``MAX_INPUT_DEPTH`` works end to end.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from loom_backends.testing import FakeLLMServer
from loom_core import TaskLoom
from loom_core._inputs import prepare_input
from loom_protocol import (
    MAX_INPUT_DEPTH,
    BatchResult,
    ErrorCode,
    TaskResult,
    parse_stream_event,
)
from loom_store import ResultStore

from .conftest import LoomFactory

pytestmark = pytest.mark.timeout(60)


def nested(depth: int) -> dict[str, Any]:
    """An input ``depth`` levels deep: the input dict is level 1, each list one more."""
    value: Any = "x"
    for _ in range(depth - 1):
        value = [value]
    return {"text": value}


class Hostile(dict[str, Any]):
    """A dict subclass whose own methods raise, as user code can."""

    def __repr__(self) -> str:
        raise RuntimeError("repr refuses")

    def items(self) -> Any:
        raise RuntimeError("items refuses")


def cycle() -> dict[str, Any]:
    looped: dict[str, Any] = {"text": "loop"}
    looped["self"] = looped
    return looped


class Unprintable:
    calls = 0

    def __repr__(self) -> str:
        Unprintable.calls += 1
        raise RuntimeError("no repr for you")


GOOD = ["good one", {"text": "good two"}, "good three"]


def hostile_inputs() -> list[Any]:
    """Good inputs around every hostile kind; index -> expected message fragment below."""
    return [
        GOOD[0],
        nested(986),  # what json.loads("[" * 985 + "]" * 985) gives: plain JSON, far too deep
        Hostile(text="a"),
        GOOD[1],
        {"text": "fine", "meta": Hostile(a=1)},  # the raising subclass one level down
        cycle(),
        Unprintable(),
        nested(MAX_INPUT_DEPTH + 1),
        {"text": 10**5000},  # even repr() of this int raises
        GOOD[2],
    ]


EXPECTED_FAILURES = {
    1: "MAX_INPUT_DEPTH",
    2: "items refuses",
    4: "$.meta",
    5: "circular",
    6: "Unprintable",
    7: f"MAX_INPUT_DEPTH ({MAX_INPUT_DEPTH} levels)",
}


def check_batch(results: dict[int, TaskResult[Any]]) -> None:
    inputs = hostile_inputs()
    assert sorted(results) == list(range(len(inputs)))
    for index, result in results.items():
        if isinstance(inputs[index], str) or inputs[index] in GOOD:
            assert result.is_success, (index, result.error)
            continue
        assert not result.is_success, index
        assert result.error is not None and result.error.code is ErrorCode.INPUT_INVALID
        assert result.error.message, index
        if index in EXPECTED_FAILURES:
            assert EXPECTED_FAILURES[index] in result.error.message, (index, result.error.message)
        result.model_dump_json()  # every failure still serialises (SSE, the CLI)


def test_hostile_inputs_in_map(make_loom: LoomFactory, server: FakeLLMServer) -> None:
    loom = make_loom(server)
    batch = loom.map(hostile_inputs(), task_name="hostile", max_workers=2)
    check_batch(dict(enumerate(batch)))
    assert server.request_count == 3
    BatchResult.model_validate_json(batch.model_dump_json())


def test_hostile_inputs_in_stream(make_loom: LoomFactory, server: FakeLLMServer) -> None:
    loom = make_loom(server)
    got = list(loom.stream(hostile_inputs(), ordered=True))
    check_batch(dict(enumerate(got)))


async def test_hostile_inputs_in_astream_events(
    amake_loom: LoomFactory, server: FakeLLMServer
) -> None:
    loom = amake_loom(server)
    events = [e async for e in loom.astream_events(hostile_inputs(), task_name="hostile-sse")]
    assert events[0].type == "batch_start" and events[-1].type == "batch_end"
    results = {e.index: e.result for e in events if e.type == "task_result"}
    check_batch(results)
    for event in events:
        assert parse_stream_event(event.model_dump_json()).type == event.type


def test_an_input_at_the_depth_limit_works_end_to_end(
    make_loom: LoomFactory, server: FakeLLMServer, tmp_path: Path
) -> None:
    deepest = nested(MAX_INPUT_DEPTH)
    loom = make_loom(server, db_path=tmp_path / "deep.db")
    batch = loom.map([deepest, "beside it"], task_name="deep")
    assert [r.is_success for r in batch] == [True, True]
    assert batch[0].input_data == deepest
    prompts = {r.body["messages"][-1]["content"] for r in server.requests}
    assert prompts == {str(deepest["text"]), "beside it"}
    # Every serialised form a consumer sees, and parsing each back.
    text = batch[0].model_dump_json()
    assert TaskResult.model_validate_json(text).input_data == deepest
    assert BatchResult.model_validate_json(batch.model_dump_json())[0].input_data == deepest
    json.dumps(batch[0].model_dump(mode="json"))

    events = list(loom.stream_events([deepest], task_name="deep"))
    assert [e.type for e in events] == ["batch_start", "task_result", "batch_end"]
    assert events[1].result.cached  # served from the store row written by map
    assert events[1].result.input_data == deepest
    for event in events:
        parsed = parse_stream_event(event.model_dump_json())
        assert parsed.type == event.type

    # The stored row: its input column holds the whole input.
    with ResultStore(tmp_path / "deep.db") as store:
        rows = [row for row in store.iter_results("deep") if row.task_id == batch[0].task_id]
    assert len(rows) == 1 and json.loads(rows[0].input) == deepest
    assert server.request_count == 2


def test_one_level_deeper_is_refused_naming_the_limit() -> None:
    at_limit = prepare_input(nested(MAX_INPUT_DEPTH))
    assert at_limit.failure is None
    above = prepare_input(nested(MAX_INPUT_DEPTH + 1))
    assert above.failure is not None and above.failure.error is not None
    assert above.failure.error.code is ErrorCode.INPUT_INVALID
    assert f"MAX_INPUT_DEPTH ({MAX_INPUT_DEPTH} levels)" in above.failure.error.message


def test_a_dict_inside_a_list_counts_as_a_level() -> None:
    value: Any = {"leaf": 1}
    for _ in range(MAX_INPUT_DEPTH - 2):
        value = {"k": value} if isinstance(value, list) else [value]
    assert prepare_input({"text": value}).failure is None  # exactly MAX_INPUT_DEPTH levels
    assert prepare_input({"text": [value]}).failure is not None


def test_invalid_inputs_never_call_the_inputs_own_repr() -> None:
    Unprintable.calls = 0
    for raw in (Hostile(a=1), Unprintable(), {"text": Unprintable()}, [Unprintable()]):
        prepared = prepare_input(raw)
        assert prepared.failure is not None
        assert prepared.failure.error is not None
        prepared.failure.model_dump_json()
    assert Unprintable.calls == 0
    assert prepare_input({"text": Unprintable()}).data == {
        "value": "{'text': <Unprintable object>}"
    }
    huge = prepare_input({"a": [1, {"b": 10**5000}]})
    assert huge.failure is not None and huge.failure.error is not None
    assert "an int at $.a[1].b has too many digits" in huge.failure.error.message
    # A plain input keeps a short description of itself for the user to find it.
    shown = prepare_input(42).data["value"]
    assert shown == "42"
    big = prepare_input(list(range(10_000))).data["value"]
    assert len(big) < 200


def test_admission_survives_a_deep_stack() -> None:
    # The feeder may already be deep in the stack when it admits an input (an SSE server,
    # nested generators): the depth limit, not the interpreter's, decides.
    import sys

    def at_depth(remaining: int) -> Any:
        if remaining == 0:
            return [prepare_input(deep), prepare_input(cycle())]
        return at_depth(remaining - 1)

    deep = nested(986)
    room = sys.getrecursionlimit() - 200
    results = at_depth(room)
    assert all(p.failure is not None for p in results)


def test_process_of_a_hostile_input_returns_a_result(
    make_loom: LoomFactory, server: FakeLLMServer
) -> None:
    loom: TaskLoom[Any] = make_loom(server)
    result = loom.process(Hostile(text="a"))
    assert result.error is not None and result.error.code is ErrorCode.INPUT_INVALID
    assert "Hostile" in result.error.message


def test_a_jsonl_line_nested_thousands_deep_is_one_bad_record() -> None:
    from loom_core._cli.inputs import _parse_jsonl_line

    line = b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"
    bad = _parse_jsonl_line(line, 7)
    assert not isinstance(bad, dict | str)
    result = bad.result()
    assert result.error is not None and result.error.code is ErrorCode.INPUT_INVALID
    assert "line 7: JSON nested too deeply" in result.error.message
    result.model_dump_json()


class _RaisingName(type):
    @property
    def __name__(cls) -> str:  # type: ignore[override]
        raise RuntimeError("even the class name refuses")


class NamelessType(metaclass=_RaisingName):
    pass


class LyingClass:
    @property
    def __class__(self) -> type:  # type: ignore[override]
        raise RuntimeError("isinstance() itself raises")


class BadIter(list[Any]):
    def __iter__(self) -> Any:
        raise RuntimeError("iteration refuses")


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (NamelessType(), "got NamelessType"),
        ({"w": NamelessType()}, "value of type NamelessType at $.w"),
        (LyingClass(), "isinstance() itself raises"),
        ({"a": [1, LyingClass()]}, "a LyingClass at $.a[1] cannot be read"),
        ({"a": BadIter([1])}, "a BadIter at $.a cannot be read: RuntimeError: iteration refuses"),
    ],
    ids=["metaclass-name", "nested-metaclass-name", "lying-class", "nested-lying", "bad-iter"],
)
def test_objects_that_raise_anywhere_are_input_invalid(raw: Any, fragment: str) -> None:
    prepared = prepare_input(raw)
    assert prepared.failure is not None and prepared.failure.error is not None
    assert fragment in prepared.failure.error.message, prepared.failure.error.message
    prepared.failure.model_dump_json()
