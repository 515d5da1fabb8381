"""Every configuration of a task name keeps its results: a run under another configuration
(a template typo, another model) never costs the results already paid for."""

from __future__ import annotations

from pathlib import Path

import pytest

from loom_backends.testing import FakeLLMServer
from loom_core import LoomConfigWarning
from loom_store import ResultRow, ResultStore

from .conftest import LoomFactory

INPUTS = [{"text": f"doc {i}"} for i in range(200)]


def test_a_failing_configuration_never_replaces_paid_results(
    make_loom: LoomFactory, server: FakeLLMServer, tmp_path: Path
) -> None:
    first = make_loom(server, response_model=dict).map(INPUTS, task_name="people", max_workers=8)
    assert all(r.is_success for r in first)
    assert server.request_count == 200

    # A template typo: every task fails (template_error) under the same task name.
    typo = make_loom(server, response_model=dict, prompt_template="{{ txet }}")
    with pytest.warns(LoomConfigWarning, match="their rows are kept and served again"):
        broken = typo.map(INPUTS, task_name="people")
    assert [r.error.code for r in broken if r.error] == ["template_error"] * 200
    assert server.request_count == 200

    # Back to the first configuration: everything is served from the store.
    with pytest.warns(LoomConfigWarning, match="1 other configuration"):
        again = make_loom(server, response_model=dict).map(INPUTS, task_name="people")
    assert server.request_count == 200  # zero new requests
    assert all(r.cached for r in again)
    assert [r.data for r in again] == [r.data for r in first]

    with ResultStore(tmp_path / "loom.db") as store:
        every = store.stats("people")
        assert (every.succeeded, every.failed, len(every.config_fps)) == (200, 200, 2)


def test_switching_models_back_and_forth_pays_once_per_model(
    make_loom: LoomFactory, server: FakeLLMServer
) -> None:
    inputs = INPUTS[:20]
    make_loom(server, model="model-a").map(inputs, task_name="ab")
    with pytest.warns(LoomConfigWarning):
        make_loom(server, model="model-b").map(inputs, task_name="ab")
    assert server.request_count == 40
    for model in ("model-a", "model-b", "model-a"):
        with pytest.warns(LoomConfigWarning):
            results = make_loom(server, model=model).map(inputs, task_name="ab")
        assert all(r.cached for r in results)
    assert server.request_count == 40


def test_a_late_failure_of_the_same_configuration_never_replaces_its_success(
    make_loom: LoomFactory, server: FakeLLMServer, tmp_path: Path
) -> None:
    loom = make_loom(server, response_model=dict)
    first = loom.map(INPUTS[:10], task_name="late", max_workers=4)
    assert server.request_count == 10

    # Another process running the same configuration fails on these inputs and writes its
    # failures after ours succeeded.
    with ResultStore(tmp_path / "loom.db") as store:
        failures = [
            ResultRow("late", r.task_id, loom.config_fp, "failed", error='{"code": "internal"}')
            for r in first
        ]
        store.put_many(failures)
        assert store.stats("late").failed == 0

    again = make_loom(server, response_model=dict).map(INPUTS[:10], task_name="late")
    assert server.request_count == 10
    assert all(r.cached for r in again)
