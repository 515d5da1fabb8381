"""Cache and resume: the cache key covers the whole config; failures are retried next run."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from pydantic import BaseModel

from loom_backends.testing import FakeLLMServer, FakeReply, RecordedRequest
from loom_core import LoomConfigWarning
from loom_store import ResultStore

from .conftest import LoomFactory, echo_json

INPUTS = [{"text": f"doc {i}"} for i in range(12)]


class Doc(BaseModel):
    text: str


class OtherDoc(BaseModel):
    text: str
    extra: int = 0


def test_second_map_is_served_from_the_store(make_loom: LoomFactory, server: FakeLLMServer) -> None:
    first = make_loom(server, response_model=Doc).map(INPUTS, task_name="resume", max_workers=4)
    assert all(r.is_success and not r.cached for r in first)
    sent = server.request_count
    assert sent == len(INPUTS)

    again = make_loom(server, response_model=Doc).map(INPUTS, task_name="resume", max_workers=4)
    assert server.request_count == sent  # zero new requests
    assert all(r.cached for r in again)
    assert [r.data for r in again] == [r.data for r in first]
    assert isinstance(again[0].data, Doc)
    assert again.summary.cached == len(INPUTS)


@pytest.mark.parametrize(
    "change",
    [
        {"prompt_template": "Summarise: {{ text }}"},
        {"system_prompt": "You are terse."},
        {"model": "fake-model-2"},
        {"response_model": OtherDoc},
        {"temperature": 0.3},
        {"seed": 7},
    ],
    ids=lambda change: next(iter(change)),
)
def test_changing_the_config_recomputes_and_warns_once(
    make_loom: LoomFactory, server: FakeLLMServer, change: dict[str, object]
) -> None:
    base: dict[str, object] = {"response_model": Doc}
    make_loom(server, **base).map(INPUTS[:3], task_name="cfg")
    assert server.request_count == 3

    changed = make_loom(server, **{**base, **change})
    with pytest.warns(LoomConfigWarning, match="other configuration"):
        results = changed.map(INPUTS[:3], task_name="cfg")
    assert server.request_count == 6
    assert not any(r.cached for r in results)
    # Warned once per loom and task_name: a second batch is silent (warnings are errors here).
    changed.map(INPUTS[:3], task_name="cfg")
    assert server.request_count == 6


def test_failed_tasks_are_retried_on_the_next_run(make_loom: LoomFactory, tmp_path: Path) -> None:
    broken = {"on": True}

    def answer(req: RecordedRequest) -> FakeReply | str:
        if broken["on"] and req.last_user_text.endswith("3"):
            return FakeReply(status=400, body={"error": {"message": "bad input"}})
        return echo_json(req)

    with FakeLLMServer(answer) as srv:
        first = make_loom(srv, response_model=dict).map(INPUTS[:5], task_name="retry-failed")
        assert [r.is_success for r in first] == [True, True, True, False, True]
        assert first[3].error is not None and first[3].error.code == "provider_bad_request"
        broken["on"] = False
        before = srv.request_count
        second = make_loom(srv, response_model=dict).map(INPUTS[:5], task_name="retry-failed")
        assert srv.request_count == before + 1
        assert all(r.is_success for r in second)
        assert [r.cached for r in second] == [True, True, True, False, True]

    store = ResultStore(tmp_path / "loom.db")
    try:
        stats = store.stats("retry-failed")
        assert stats.succeeded == 5 and stats.failed == 0
    finally:
        store.close()


def test_without_task_name_nothing_is_written(
    make_loom: LoomFactory, server: FakeLLMServer, tmp_path: Path
) -> None:
    loom = make_loom(server, db_path=tmp_path / "never.db")
    loom.map(INPUTS[:3])
    loom.process("once more")
    assert not (tmp_path / "never.db").exists()


@pytest.mark.parametrize("ordered", [False, True])
def test_stream_with_some_inputs_cached_returns_each_exactly_once(
    make_loom: LoomFactory, server: FakeLLMServer, ordered: bool
) -> None:
    inputs = [{"text": f"s{i}"} for i in range(40)]
    make_loom(server, response_model=dict).map(inputs[::3], task_name="partial")
    loom = make_loom(server, response_model=dict)
    got = list(loom.stream(inputs, task_name="partial", max_workers=4, ordered=ordered))
    texts = [r.data["text"] for r in got]
    assert sorted(texts) == sorted(d["text"] for d in inputs)
    if ordered:
        assert texts == [d["text"] for d in inputs]
    assert sum(r.cached for r in got) == len(inputs[::3])


@pytest.mark.parametrize("ordered", [False, True])
async def test_astream_with_some_inputs_cached(
    amake_loom: LoomFactory, server: FakeLLMServer, ordered: bool
) -> None:
    inputs = [{"text": f"a{i}"} for i in range(30)]
    loom = amake_loom(server, response_model=dict)
    await loom.amap(inputs[1::2], task_name="apartial")
    got = [r async for r in loom.astream(inputs, task_name="apartial", ordered=ordered)]
    texts = [r.data["text"] for r in got]
    assert sorted(texts) == sorted(d["text"] for d in inputs)
    if ordered:
        assert texts == [d["text"] for d in inputs]
    assert sum(r.cached for r in got) == 15


def test_duplicates_cost_one_request(make_loom: LoomFactory, server: FakeLLMServer) -> None:
    inputs = ["a", "b", "a", {"text": "a"}, "c", "b", "a"]
    loom = make_loom(server, response_model=dict)
    batch = loom.map(inputs, max_workers=3)
    assert server.request_count == 3
    assert [r.data["text"] for r in batch] == ["a", "b", "a", "a", "c", "b", "a"]
    ordered = list(loom.stream(inputs * 2, ordered=True, max_workers=2))
    assert [r.data["text"] for r in ordered] == [r.data["text"] for r in batch] * 2


def test_stored_rows_are_complete(
    make_loom: LoomFactory, server: FakeLLMServer, tmp_path: Path
) -> None:
    loom = make_loom(server, response_model=Doc, temperature=0.5, api_key="sk-never-store-me")
    loom.map(INPUTS[:2], task_name="rows")
    store = ResultStore(tmp_path / "loom.db")
    try:
        rows = list(store.iter_results("rows"))
        assert len(rows) == 2
        row = rows[0]
        assert row.status == "succeeded" and row.config_fp == loom.config_fp
        assert json.loads(row.data or "null")["text"].startswith("doc")
        assert json.loads(row.input or "null")["text"].startswith("doc")
        assert row.attempts == 1 and row.model == "fake-model"
        runs = store.runs("rows")
        assert runs[0].config["temperature"] == 0.5
    finally:
        store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("loom.db*"))
    assert b"sk-never-store-me" not in raw and b"sk-test-secret-key" not in raw


@pytest.mark.parametrize("task_name", [None, "far-duplicates"])
def test_duplicates_in_different_chunks_cost_one_request(
    make_loom: LoomFactory, server: FakeLLMServer, task_name: str | None
) -> None:
    # Inputs are admitted a chunk at a time and the next chunk's store lookup overlaps the
    # previous one's: a duplicate in a later chunk must still join (or reuse) the first.
    unique = [f"u{i}" for i in range(2500)]
    inputs = unique[:1200] + unique[:50] + unique[1200:] + unique[1000:1100]
    loom = make_loom(server, response_model=dict)
    batch = loom.map(inputs, task_name=task_name, max_workers=16)
    assert server.request_count == len(unique)
    assert [r.data["text"] for r in batch] == inputs


@pytest.mark.parametrize(
    "stored",
    ['{"not": "a Doc"}', "{not json", '"a string"'],
    ids=["fails-validation", "not-json", "wrong-kind"],
)
def test_a_stored_row_that_no_longer_validates_is_recomputed_alone(
    make_loom: LoomFactory, server: FakeLLMServer, tmp_path: Path, stored: str
) -> None:
    # A chunk's hits are validated in one pass; one bad row must cost that row only.
    loom = make_loom(server, response_model=Doc)
    first = loom.map(INPUTS, task_name="bad-row", max_workers=4)
    store = ResultStore(tmp_path / "loom.db")
    try:
        [row] = [r for r in store.iter_results("bad-row") if r.task_id == first[5].task_id]
        store.put_many([dataclasses.replace(row, data=stored)])
    finally:
        store.close()
    sent = server.request_count

    again = loom.map(INPUTS, task_name="bad-row", max_workers=4)
    assert server.request_count == sent + 1
    assert [r.cached for r in again] == [i != 5 for i in range(len(INPUTS))]
    assert [r.data for r in again] == [r.data for r in first]
    assert again[5].is_success and isinstance(again[5].data, Doc)


def test_bad_rows_spread_over_a_large_chunk_are_recomputed_alone(
    make_loom: LoomFactory, server: FakeLLMServer, tmp_path: Path
) -> None:
    # The chunk is read again in halves: every good row is still served, each bad one redone,
    # an input given twice is answered at both places.
    inputs = [{"text": f"doc {i}"} for i in range(300)]
    loom = make_loom(server, response_model=Doc)
    first = loom.map(inputs, task_name="bad-rows", max_workers=8)
    bad = {0, 7, 150, 151, 299}
    bad_ids = {first[i].task_id for i in bad}
    store = ResultStore(tmp_path / "loom.db")
    try:
        rows = [r for r in store.iter_results("bad-rows") if r.task_id in bad_ids]
        broken = ["{not json", '{"not": "a Doc"}', '"text"', "[1, 2", "null"]
        store.put_many([dataclasses.replace(r, data=d) for r, d in zip(rows, broken, strict=True)])
    finally:
        store.close()
    sent = server.request_count

    again = loom.map([*inputs, inputs[7], inputs[8]], task_name="bad-rows", max_workers=8)
    assert server.request_count == sent + len(bad)
    assert [r.cached for r in again[:300]] == [i not in bad for i in range(300)]
    assert [r.data for r in again[:300]] == [r.data for r in first]
    assert again[301].cached and again[301].data == first[8].data
    assert again[300].data == first[7].data


class CountingStore(ResultStore):
    """Counts the engine's cache reads and the ids each asked for."""

    def __init__(self, target: Path) -> None:
        super().__init__(target)
        self.reads: list[int] = []

    def get_hits(self, task_name: str, task_ids: Sequence[str], config_fp: str) -> str:
        self.reads.append(len(task_ids))
        return super().get_hits(task_name, task_ids, config_fp)


def test_one_bad_row_costs_a_few_reads_not_one_per_row(
    make_loom: LoomFactory, server: FakeLLMServer, tmp_path: Path
) -> None:
    inputs = [{"text": f"doc {i}"} for i in range(256)]
    first = make_loom(server, response_model=Doc).map(inputs, task_name="few-reads")
    store = CountingStore(tmp_path / "loom.db")
    try:
        [row] = [r for r in store.iter_results("few-reads") if r.task_id == first[100].task_id]
        store.put_many([dataclasses.replace(row, data="{not json")])
        loom = make_loom(server, response_model=Doc, store=store)
        again = loom.map(inputs, task_name="few-reads")
        assert [r.cached for r in again] == [i != 100 for i in range(256)]
        # A read per chunk (the engine reads in at most two chunks here), then two halves per
        # level down to the bad id (2 x 8 levels for 256 ids): not one read per row.
        assert len(store.reads) <= 2 + 2 * 8, store.reads
        assert sum(store.reads) <= 256 * 3
    finally:
        store.close()


@pytest.mark.parametrize("cached", [False, True], ids=["fresh", "cached"])
def test_a_result_does_not_share_the_callers_input_dict(
    make_loom: LoomFactory, server: FakeLLMServer, cached: bool
) -> None:
    loom = make_loom(server, response_model=Doc)
    if cached:
        loom.map([{"text": "doc 0"}], task_name="own-input")
    given = {"text": "doc 0"}
    [result] = loom.map([given], task_name="own-input")
    assert result.cached is cached
    given["text"] = "changed by the caller"
    given["added"] = 1
    assert result.input_data == {"text": "doc 0"}
    assert result.input_data is not given


@pytest.mark.parametrize("response_model", [Doc, dict, None], ids=["model", "dict", "text"])
def test_a_cached_result_is_the_stored_result(
    make_loom: LoomFactory, server: FakeLLMServer, response_model: type | None
) -> None:
    loom = make_loom(server, response_model=response_model)
    first = loom.map(INPUTS, task_name="same", max_workers=4)
    again = loom.map(INPUTS, task_name="same", max_workers=4)
    assert all(r.cached for r in again)
    for before, after in zip(first, again, strict=True):
        assert after.model_dump(exclude={"cached"}) == before.model_dump(exclude={"cached"})
        assert (
            after.model_dump_json() == before.model_copy(update={"cached": True}).model_dump_json()
        )
        assert after.input_data is not None and after.usage == before.usage
