"""get_hits: the engine's one cache read answers what get_many answers, in CachedHit layout."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from loom_store import CachedHit, ResultRow, ResultStore

MakeRow = Callable[..., ResultRow]


def _elements(store: ResultStore, asked: list[str]) -> list[list[object]]:
    decoded: list[list[object]] = json.loads(store.get_hits("task", asked, "cfg-1"))
    return sorted(decoded, key=lambda element: int(str(element[0])))


def test_get_hits_is_get_many_by_position(store: ResultStore, make_row: MakeRow) -> None:
    rows = [
        make_row(
            f"id-{i:04d}",
            raw_output=f"raw {i}",
            usage=f'{{"prompt_tokens":{i},"completion_tokens":1,"total_tokens":{i + 1}}}',
            attempts=i % 3 + 1,
            latency_ms=i / 7,
            model="m",
        )
        for i in range(1_200)
    ]
    rows += [
        make_row("failed", status="failed"),
        make_row("other-config", config_fp="cfg-2"),
        make_row("other-task", task_name="another"),
        make_row("no-data", data=None),
    ]
    store.put_many(rows)
    # More ids than any bound-parameter limit, in one call; misses and non-hits mixed in.
    asked = [f"id-{i:04d}" for i in range(1_199, -1, -1)] + ["failed", "other-config"]
    asked += ["other-task", "no-data", "missing"] + [f"id-{i:04d}" for i in range(0, 5_000, 500)]

    full = store.get_many("task", asked, "cfg-1")
    elements = _elements(store, asked)

    expected = [i for i, task_id in enumerate(asked) if task_id in full and task_id != "no-data"]
    assert [element[0] for element in elements] == expected
    for position, data, usage, raw, reasoning, attempts, latency, model in elements:
        row = full[asked[int(str(position))]]
        assert data == json.loads(str(row.data))
        assert usage == json.loads(str(row.usage))
        assert (raw, reasoning, attempts, model) == (
            row.raw_output,
            row.reasoning,
            row.attempts,
            row.model,
        )
        assert latency == row.latency_ms  # every bit of the float, not 15 digits


def test_the_layout_is_cached_hit(store: ResultStore, make_row: MakeRow) -> None:
    usage = '{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}'
    store.put_many(
        [make_row("a", data='{"n": 1}', raw_output="r", usage=usage, attempts=2, latency_ms=1.5)]
    )
    hits = TypeAdapter(list[CachedHit[dict[str, int]]]).validate_json(
        store.get_hits("task", ["x", "a"], "cfg-1")
    )
    assert hits == [
        CachedHit(
            position=1,
            data={"n": 1},
            usage={"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
            raw_output="r",
            reasoning=None,
            attempts=2,
            latency_ms=1.5,
            model=None,
        )
    ]
    assert hits[0].data == {"n": 1}
    # The data type is the caller's: a stored value that does not fit fails validation.
    with pytest.raises(ValidationError):
        TypeAdapter(list[CachedHit[list[Any]]]).validate_json(
            store.get_hits("task", ["a"], "cfg-1")
        )


@pytest.mark.parametrize(
    "text",
    ['quote " and backslash \\', "new\nline\ttab\r", "\x01\x1f control", "héllo ✓ 日本 😀", ""],
    ids=["quotes", "whitespace", "control", "unicode", "empty"],
)
def test_get_hits_quotes_every_text(store: ResultStore, make_row: MakeRow, text: str) -> None:
    store.put_many([make_row("a", raw_output=text, reasoning=text, model=text)])
    [[position, _, usage, raw, reasoning, _, latency, model]] = _elements(store, ["a"])
    assert (position, usage, raw, reasoning, model, latency) == (0, None, text, text, text, None)


@pytest.mark.parametrize("latency", [0.0, 0.1, 1e-9, 12345.678901234567, 2.5e300])
def test_get_hits_keeps_latency_exact(
    store: ResultStore, make_row: MakeRow, latency: float
) -> None:
    store.put_many([make_row("a", latency_ms=latency)])
    [element] = _elements(store, ["a"])
    assert element[6] == latency


def test_get_hits_edges(store: ResultStore, make_row: MakeRow) -> None:
    assert store.get_hits("task", [], "cfg-1") == "[]"
    assert store.get_hits("task", ["nothing", "here"], "cfg-1") == "[]"
    store.put_many([make_row("a"), make_row("b", data='"just text"')])
    # An id asked twice answers twice, each at its own position.
    assert _elements(store, ["a", "x", "a", "b"]) == [
        [0, {"id": "a"}, None, None, None, 0, None, None],
        [2, {"id": "a"}, None, None, None, 0, None, None],
        [3, "just text", None, None, None, 0, None, None],
    ]
    with pytest.raises(Exception, match="task_name"):
        store.get_hits("", ["a"], "cfg-1")
    with pytest.raises(Exception, match="single string"):
        store.get_hits("task", "a", "cfg-1")


def test_get_hits_splices_stored_json_as_it_is(store: ResultStore, make_row: MakeRow) -> None:
    # A stored text that is not JSON is not repaired or hidden: the array is not JSON either,
    # and the caller's parse says so (the engine then asks again for fewer ids).
    store.put_many([make_row("good"), make_row("bad", data="{not json")])
    with pytest.raises(json.JSONDecodeError):
        json.loads(store.get_hits("task", ["good", "bad"], "cfg-1"))
    assert len(json.loads(store.get_hits("task", ["good"], "cfg-1"))) == 1
