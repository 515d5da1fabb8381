"""The ResultStore API, on every database of the suite (see conftest.py)."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine

from loom_protocol import LoomUsageError, StoreError
from loom_store import GET_MANY_CHUNK, ResultRow, ResultStore, RunRecord, TaskStats

MakeRow = Callable[..., ResultRow]


def _bare(row: ResultRow) -> ResultRow:
    return dataclasses.replace(row, created_at=None, updated_at=None)


class StatementLog:
    """Statements sent to one store's database (any engine of this process)."""

    def __init__(self, target: Any) -> None:
        self.target = target
        self.statements: list[str] = []

    def __call__(self, conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if self.target.same_database(conn.engine.url):
            self.statements.append(" ".join(statement.split()))

    def selects_from_results(self) -> list[str]:
        return [s for s in self.statements if s.startswith("SELECT") and "loom_results" in s]


@pytest.fixture
def statements(target: Any) -> Iterator[StatementLog]:
    log = StatementLog(target)
    event.listen(Engine, "before_cursor_execute", log)
    try:
        yield log
    finally:
        event.remove(Engine, "before_cursor_execute", log)


def test_every_column_round_trips(store: ResultStore) -> None:
    row = ResultRow(
        task_name="round-trip",
        task_id="a" * 64,
        config_fp="c" * 64,
        status="succeeded",
        data=json.dumps({"label": "é 漢字 🚀", "n": [1, 2.5, None]}, ensure_ascii=False),
        raw_output="```json\n{...}\n```" + "x" * 100_000,
        reasoning="<think>because</think>",
        error=None,
        input='{"text": "ünïcödé"}',
        usage='{"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}',
        attempts=3,
        latency_ms=1234.5,
        model="gpt-test",
    )
    before = datetime.now(UTC) - timedelta(seconds=1)
    store.put_many([row])
    after = datetime.now(UTC) + timedelta(seconds=1)

    got = store.get_many("round-trip", [row.task_id], row.config_fp)[row.task_id]
    assert _bare(got) == row
    assert got.created_at is not None and got.updated_at is not None
    assert got.created_at.tzinfo is UTC and got.updated_at.tzinfo is UTC
    assert before <= got.created_at <= after
    assert got.created_at == got.updated_at

    failed = ResultRow(
        "round-trip", "b" * 64, "c" * 64, "failed", error='{"code": "internal"}', attempts=1
    )
    store.put_many([failed])
    streamed = list(store.iter_results("round-trip"))
    assert [_bare(r) for r in streamed] == [row, failed]
    assert streamed[0] == got


def test_get_many_serves_only_succeeded_rows_of_that_config(
    store: ResultStore, make_row: MakeRow
) -> None:
    store.put_many(
        [
            make_row("hit"),
            make_row("failed", status="failed"),
            make_row("other-config", config_fp="cfg-2"),
            make_row("other-task", task_name="another"),
        ]
    )
    found = store.get_many(
        "task", ["hit", "failed", "other-config", "other-task", "missing"], "cfg-1"
    )
    assert list(found) == ["hit"]
    assert found["hit"].data == '{"id": "hit"}'
    assert store.get_many("task", ["other-config"], "cfg-2").keys() == {"other-config"}
    assert store.get_many("task", [], "cfg-1") == {}


def test_get_many_chunks_large_id_lists(
    store: ResultStore, make_row: MakeRow, statements: StatementLog
) -> None:
    ids = [f"id-{i:05d}" for i in range(2_500)]
    store.put_many([make_row(i) for i in ids])
    asked = [*ids, *ids[:10], *(f"missing-{i}" for i in range(100))]  # 2,600 distinct ids

    statements.statements.clear()
    found = store.get_many("task", asked, "cfg-1")

    assert found.keys() == set(ids)
    assert all(found[i].data == f'{{"id": "{i}"}}' for i in ids)
    queries = statements.selects_from_results()
    assert len(queries) == -(-2_600 // GET_MANY_CHUNK)  # one query per chunk, no more


def test_upsert_overwrites_and_keeps_created_at(store: ResultStore, make_row: MakeRow) -> None:
    store.put_many([make_row("x", status="failed")])
    assert store.get_many("task", ["x"], "cfg-1") == {}
    first = next(store.iter_results("task"))

    store.put_many([make_row("x", data='{"second": true}', attempts=2)])

    got = store.get_many("task", ["x"], "cfg-1")["x"]
    assert got.status == "succeeded" and got.data == '{"second": true}' and got.attempts == 2
    assert got.error is None  # every column is replaced, not merged
    assert got.created_at == first.created_at
    assert got.updated_at is not None and first.updated_at is not None
    assert got.updated_at >= first.updated_at
    assert store.stats("task").total == 1


def test_put_many_same_key_twice_last_wins(store: ResultStore, make_row: MakeRow) -> None:
    store.put_many([make_row("k", data='"one"'), make_row("j"), make_row("k", data='"two"')])
    found = store.get_many("task", ["k", "j"], "cfg-1")
    assert found["k"].data == '"two"'
    assert store.stats("task").total == 2


@pytest.mark.parametrize("count", [1, 2, 7, 16, 17, 63, 64, 65, 200, 256, 257, 600])
def test_put_many_writes_every_row_of_a_large_batch(
    store: ResultStore, make_row: MakeRow, count: int
) -> None:
    # Batches of every size, over rows that exist (a failure never replaces a success).
    ids = [f"id-{i:04d}" for i in range(count)]
    store.put_many([make_row(i, status="failed") for i in ids[::3]])  # some rows exist
    store.put_many([make_row(ids[1], data='{"kept": true}')] if count > 1 else [])
    batch = [
        make_row(i, status="failed" if n % 5 == 1 else "succeeded", attempts=n, latency_ms=n / 7)
        for n, i in enumerate(ids)
    ]
    store.put_many(batch)

    stored = {row.task_id: row for row in store.iter_results("task")}
    assert stored.keys() == set(ids)
    for n, i in enumerate(ids):
        expected = batch[n]
        if n == 1 and count > 1:  # a failure never replaces a success
            expected = make_row(i, data='{"kept": true}')
        assert _bare(stored[i]) == expected, i


def test_iter_results_pages_by_keyset(
    store: ResultStore, make_row: MakeRow, statements: StatementLog
) -> None:
    ids = [f"{i:04d}" for i in range(2_350)]
    rows = [make_row(i, status="failed" if i.endswith("7") else "succeeded") for i in ids]
    store.put_many(rows[::-1])
    store.put_many([make_row("zzz", task_name="other")])

    statements.statements.clear()
    stream = store.iter_results("task", batch_size=1_000)
    assert statements.selects_from_results() == []  # lazy: nothing read before iteration
    got = list(stream)

    assert [r.task_id for r in got] == ids
    pages = statements.selects_from_results()
    assert len(pages) == 3
    assert all("LIMIT" in q for q in pages)

    failed = [r.task_id for r in store.iter_results("task", "failed", batch_size=7)]
    assert failed == [i for i in ids if i.endswith("7")]
    succeeded = list(store.iter_results("task", status="succeeded", batch_size=500))
    assert len(succeeded) == 2_350 - len(failed)
    assert all(r.status == "succeeded" for r in succeeded)
    assert list(store.iter_results("nothing")) == []


def test_iter_results_exact_multiple_of_batch_size(store: ResultStore, make_row: MakeRow) -> None:
    store.put_many([make_row(f"{i:03d}") for i in range(300)])
    assert len(list(store.iter_results("task", batch_size=100))) == 300
    assert len(list(store.iter_results("task", batch_size=1))) == 300


def test_stats(store: ResultStore, make_row: MakeRow) -> None:
    store.put_many(
        [
            make_row("a"),
            make_row("b", config_fp="cfg-2"),
            make_row("c", status="failed", error='{"code": "json_invalid", "message": "m"}'),
            make_row("d", status="failed", error='{"code": "json_invalid", "message": "m"}'),
            make_row("e", status="failed", error='{"code": "provider_timeout", "message": "m"}'),
            make_row("f", status="failed", error="not json"),
            make_row("g", status="failed", error=None),
            make_row("h", task_name="other"),
        ]
    )
    assert store.stats("task") == TaskStats(
        task_name="task",
        total=7,
        succeeded=2,
        failed=5,
        failures_by_code={"json_invalid": 2, "provider_timeout": 1, "unknown": 2},
        config_fps=("cfg-1", "cfg-2"),
    )
    assert store.stats("empty") == TaskStats("empty", 0, 0, 0, {}, ())


def test_stats_counts_failures_beyond_one_page(store: ResultStore, make_row: MakeRow) -> None:
    error = '{"code": "provider_error", "message": "m"}'
    store.put_many([make_row(f"{i:05d}", status="failed", error=error) for i in range(2_100)])
    stats = store.stats("task")
    assert stats.failed == 2_100 and stats.failures_by_code == {"provider_error": 2_100}


def test_task_names_and_delete(store: ResultStore, make_row: MakeRow) -> None:
    assert store.task_names() == []
    store.put_many([make_row("1", task_name="beta"), make_row("2", task_name="beta")])
    store.put_many([make_row("1", task_name="alpha")])
    store.register_run("gamma", "cfg", {"model": "m"})  # runs only, no results yet
    store.register_run("beta", "cfg-1", {"model": "m"})
    assert store.task_names() == ["alpha", "beta", "gamma"]

    assert store.delete("beta") == 3  # two results and one run
    assert store.task_names() == ["alpha", "gamma"]
    assert store.get_many("beta", ["1", "2"], "cfg-1") == {}
    assert store.runs("beta") == []
    assert store.delete("beta") == 0
    assert store.get_many("alpha", ["1"], "cfg-1").keys() == {"1"}


def test_run_registry(store: ResultStore) -> None:
    assert store.register_run("task", "fp-a", {"model": "m", "temperature": 0.1}) is True
    assert store.register_run("task", "fp-a", {"model": "changed"}) is False
    assert store.register_run("task", "fp-b", {"model": "m2"}) is True
    assert store.register_run("other", "fp-a", {}) is True

    runs = store.runs("task")
    assert [(r.config_fp, r.config) for r in runs] == [
        ("fp-a", {"model": "m", "temperature": 0.1}),  # the first registration is kept
        ("fp-b", {"model": "m2"}),
    ]
    assert all(isinstance(r, RunRecord) and r.created_at.tzinfo is UTC for r in runs)
    assert runs[0].created_at <= runs[1].created_at
    assert store.runs("nobody") == []


def test_other_configs(store: ResultStore, make_row: MakeRow) -> None:
    assert store.other_configs("task", "cfg-1") == []
    store.put_many([make_row("a"), make_row("b")])
    assert store.other_configs("task", "cfg-1") == []
    store.put_many(
        [
            make_row("c", config_fp="cfg-3"),
            make_row("d", config_fp="cfg-2", status="failed"),
            make_row("e", config_fp="cfg-9", task_name="elsewhere"),
        ]
    )
    store.register_run("task", "cfg-only-registered", {})
    assert store.other_configs("task", "cfg-1") == ["cfg-2", "cfg-3"]
    assert store.other_configs("task", "cfg-3") == ["cfg-1", "cfg-2"]
    assert store.other_configs("task", "new") == ["cfg-1", "cfg-2", "cfg-3"]


def test_register_run_scrubs_credentials(store: ResultStore, target: Any) -> None:
    config = {
        "model": "gpt-x",
        "api_key": "sk-live-SECRET1",
        "max_tokens": 300,
        "headers": {"Authorization": "Bearer SECRET2", "X-Trace": "ok"},
        "llm_kwargs": {"clientSecret": "SECRET3", "items": [{"access_token": "SECRET4"}]},
        "base_url": "https://user:SECRET5@llm.example.com/v1",
        "db": {"password": {"nested": "SECRET6"}},
    }
    store.register_run("task", "fp", config)

    (run,) = store.runs("task")
    assert run.config == {
        "model": "gpt-x",
        "api_key": "***",
        "max_tokens": 300,
        "headers": {"Authorization": "***", "X-Trace": "ok"},
        "llm_kwargs": {"clientSecret": "***", "items": [{"access_token": "***"}]},
        "base_url": "https://user:***@llm.example.com/v1",
        "db": {"password": "***"},
    }
    assert config["api_key"] == "sk-live-SECRET1"  # the caller's mapping is left alone
    engine = create_engine(target.url)
    try:
        with engine.connect() as conn:
            raw = conn.execute(text("SELECT config FROM loom_runs")).scalar_one()
    finally:
        engine.dispose()
    assert "SECRET" not in raw


def test_register_run_rejects_non_json_config(store: ResultStore) -> None:
    with pytest.raises(LoomUsageError, match=r"config is not JSON.*\$\.when"):
        store.register_run("task", "fp", {"when": datetime.now(UTC)})
    with pytest.raises(LoomUsageError, match="config must be a mapping"):
        store.register_run("task", "fp", [("model", "m")])  # type: ignore[arg-type]
    assert store.runs("task") == []


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.get_many("task", "abc", "cfg"), "not a single string"),
        (lambda s: s.get_many("task", [1, 2], "cfg"), "task ids must be strings"),
        (lambda s: s.get_many("", ["a"], "cfg"), "task_name must be a non-empty string"),
        (lambda s: s.get_many("task", ["a"], ""), "config_fp must be a non-empty string"),
        (lambda s: s.put_many([{"task_id": "a"}]), "put_many takes ResultRow items, got dict"),
        (lambda s: s.iter_results("task", "done"), "status must be 'succeeded', 'failed'"),
        (lambda s: s.iter_results("task", batch_size=0), "batch_size must be an int >= 1"),
        (lambda s: s.stats(None), "task_name must be a non-empty string"),
        (lambda s: s.writer(max_batch=0), "max_batch must be an int >= 1"),
    ],
)
def test_bad_arguments_name_the_problem(
    store: ResultStore, call: Callable[[ResultStore], Any], message: str
) -> None:
    with pytest.raises(LoomUsageError, match=message):
        call(store)


def test_closed_store_refuses_work(target: Any, make_row: MakeRow) -> None:
    store = ResultStore(target.target)
    store.put_many([make_row("a")])
    stream = store.iter_results("task")
    store.close()
    store.close()  # idempotent
    assert store.closed and "closed" in repr(store)
    for call in (
        lambda: store.get_many("task", ["a"], "cfg-1"),
        lambda: store.put_many([make_row("b")]),
        lambda: store.stats("task"),
        lambda: store.task_names(),
        lambda: list(stream),
        lambda: store.writer(),
    ):
        with pytest.raises(StoreError, match="is closed"):
            call()
    with ResultStore(target.target) as reopened:  # the data outlived the first store object
        assert reopened.get_many("task", ["a"], "cfg-1").keys() == {"a"}


def test_many_threads_share_one_store(store: ResultStore, make_row: MakeRow) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for k in range(20):
                ids = [f"t{n}-{k}-{j}" for j in range(5)]
                store.put_many([make_row(i) for i in ids])
                assert store.get_many("task", ids, "cfg-1").keys() == set(ids)
                store.stats("task")
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert store.stats("task").total == 10 * 20 * 5
