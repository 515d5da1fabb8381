"""get_hits: the lean lookup answers exactly what get_many answers, column for column."""

from __future__ import annotations

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
