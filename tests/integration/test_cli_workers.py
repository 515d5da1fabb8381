"""`loom run` started twice on one PostgreSQL store splits the work (as on two machines)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from loom_backends.testing import FakeLLMServer
from loom_store import ResultStore

from .conftest import cli_env, read_jsonl, write_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_two_loom_runs_on_one_postgres_store_call_each_input_once(
    tmp_path: Path, scratch_pg_url: str
) -> None:
    n = 500
    source = write_jsonl(tmp_path / "items.jsonl", [{"text": f"item {i}"} for i in range(n)])
    with FakeLLMServer(latency=0.05) as server:
        runs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "loom_core._cli",
                    "run",
                    str(source),
                    "--model",
                    "fake-model",
                    "--template",
                    "{{ text }}",
                    "--json",
                    "--task-name",
                    "split",
                    "--workers",
                    "16",
                    "--db",
                    scratch_pg_url,
                    "--base-url",
                    server.base_url,
                    "--no-progress",
                    "-o",
                    str(tmp_path / f"out-{k}.jsonl"),
                ],
                cwd=tmp_path,
                env=cli_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for k in range(2)
        ]
        outcomes = [run.communicate(timeout=180) for run in runs]
        for run, (_out, err) in zip(runs, outcomes, strict=True):
            assert run.returncode == 0, err
        assert server.request_count == n
    cached = 0
    for k in range(2):
        rows = read_jsonl(tmp_path / f"out-{k}.jsonl")
        # Each run writes every input's result, in input order.
        assert [row["data"] for row in rows] == [{"echo": f"item {i}"} for i in range(n)]
        cached += sum(row["cached"] for row in rows)
    assert cached == n  # each input computed by one run, read from the store by the other
    with ResultStore(scratch_pg_url) as store:
        assert store.stats("split").total == n
