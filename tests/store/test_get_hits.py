"""get_hits: the lean lookup answers exactly what get_many answers, column for column."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from loom_store import CachedHit, ResultRow, ResultStore

MakeRow = Callable[..., ResultRow]


def test_get_hits_matches_get_many(store: ResultStore, make_row: MakeRow) -> None:
    rows = [make_row(f"id-{i:04d}") for i in range(1_500)]
    rows += [
        make_row("failed", status="failed"),
        make_row("other-config", config_fp="cfg-2"),
        make_row("other-task", task_name="another"),
    ]
    store.put_many(rows)
    asked = [f"id-{i:04d}" for i in range(0, 1_600, 2)] + ["failed", "other-config", "other-task"]

    full = store.get_many("task", asked, "cfg-1")
    hits = store.get_hits("task", asked, "cfg-1")

    assert all(isinstance(hit, CachedHit) for hit in hits)
    assert {hit.task_id for hit in hits} == set(full) == {f"id-{i:04d}" for i in range(0, 1_500, 2)}
    for hit in hits:
        row = full[hit.task_id]
        assert hit == CachedHit(
            row.task_id,
            row.data,
            row.raw_output,
            row.reasoning,
            row.usage,
            row.attempts,
            row.latency_ms,
            row.model,
        )


def test_get_hits_refuses_what_get_many_refuses(store: ResultStore) -> None:
    assert store.get_hits("task", [], "cfg-1") == []
    with pytest.raises(Exception, match="task_name"):
        store.get_hits("", ["a"], "cfg-1")


# -- get_hits_json ---------------------------------------------------------------------------


def _elements(store: ResultStore, asked: list[str]) -> list[list[object]]:
    decoded: list[list[object]] = json.loads(store.get_hits_json("task", asked, "cfg-1"))
    return sorted(decoded, key=lambda element: int(str(element[0])))


def test_get_hits_json_is_get_hits_by_position(store: ResultStore, make_row: MakeRow) -> None:
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

    by_id = {hit.task_id: hit for hit in store.get_hits("task", asked, "cfg-1")}
    elements = _elements(store, asked)

    expected = [i for i, task_id in enumerate(asked) if task_id in by_id and task_id != "no-data"]
    assert [element[0] for element in elements] == expected
    for position, data, usage, raw, reasoning, attempts, latency, model in elements:
        hit = by_id[asked[int(str(position))]]
        assert data == json.loads(str(hit.data))
        assert usage == json.loads(str(hit.usage))
        assert (raw, reasoning, attempts, model) == (
            hit.raw_output,
            hit.reasoning,
            hit.attempts,
            hit.model,
        )
        assert latency == hit.latency_ms  # every bit of the float, not 15 digits


@pytest.mark.parametrize(
    "text",
    ['quote " and backslash \\', "new\nline\ttab\r", "\x01\x1f control", "héllo ✓ 日本 😀", ""],
    ids=["quotes", "whitespace", "control", "unicode", "empty"],
)
def test_get_hits_json_quotes_every_text(store: ResultStore, make_row: MakeRow, text: str) -> None:
    store.put_many([make_row("a", raw_output=text, reasoning=text, model=text)])
    [[position, _, usage, raw, reasoning, _, latency, model]] = _elements(store, ["a"])
    assert (position, usage, raw, reasoning, model, latency) == (0, None, text, text, text, None)


@pytest.mark.parametrize("latency", [0.0, 0.1, 1e-9, 12345.678901234567, 2.5e300])
def test_get_hits_json_keeps_latency_exact(
    store: ResultStore, make_row: MakeRow, latency: float
) -> None:
    store.put_many([make_row("a", latency_ms=latency)])
    [element] = _elements(store, ["a"])
    assert element[6] == latency


def test_get_hits_json_edges(store: ResultStore, make_row: MakeRow) -> None:
    assert store.get_hits_json("task", [], "cfg-1") == "[]"
    assert store.get_hits_json("task", ["nothing", "here"], "cfg-1") == "[]"
    store.put_many([make_row("a"), make_row("b", data='"just text"')])
    # An id asked twice answers twice, each at its own position.
    assert _elements(store, ["a", "x", "a", "b"]) == [
        [0, {"id": "a"}, None, None, None, 0, None, None],
        [2, {"id": "a"}, None, None, None, 0, None, None],
        [3, "just text", None, None, None, 0, None, None],
    ]
    with pytest.raises(Exception, match="task_name"):
        store.get_hits_json("", ["a"], "cfg-1")
    with pytest.raises(Exception, match="single string"):
        store.get_hits_json("task", "a", "cfg-1")


def test_get_hits_json_splices_stored_json_as_it_is(store: ResultStore, make_row: MakeRow) -> None:
    # A stored text that is not JSON is not repaired or hidden: the array is not JSON either,
    # and the caller's parse says so (the engine then reads the rows one by one).
    store.put_many([make_row("good"), make_row("bad", data="{not json")])
    with pytest.raises(json.JSONDecodeError):
        json.loads(store.get_hits_json("task", ["good", "bad"], "cfg-1"))
    assert len(json.loads(store.get_hits_json("task", ["good"], "cfg-1"))) == 1
