"""``loom tasks``, ``show`` and ``export`` per configuration: the latest by default,
``--config FP`` (a unique prefix) for another, ``--config all`` for every one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loom_backends.testing import FakeLLMServer
from loom_store import ResultRow, ResultStore

from .conftest import CliRunner, write_jsonl

PEOPLE = ["Ann Lee knows Python", "Bob Stone does design", "Cy Park writes Rust", "Dee Moss"]


def _run_args(srv: FakeLLMServer, input_name: str, *extra: str) -> list[str]:
    return ["run", input_name, "--model", "fake-model", "--base-url", srv.base_url, *extra]


@pytest.fixture
def two_configs(server: FakeLLMServer, run_cli: CliRunner, tmp_path: Path) -> tuple[str, str]:
    """Task 'people': config A on four inputs, then config B (the latest) on two of them."""
    write_jsonl(tmp_path / "people.jsonl", PEOPLE)
    write_jsonl(tmp_path / "few.jsonl", PEOPLE[:2])
    first = run_cli(*_run_args(server, "people.jsonl", "-t", "A: {{ text }}"))
    assert first.returncode == 0, first.stderr
    second = run_cli(*_run_args(server, "few.jsonl", "-t", "B: {{ text }}", "-n", "people"))
    assert second.returncode == 0, second.stderr
    with ResultStore(tmp_path / ".loom.db") as store:
        fps = [info.config_fp for info in store.configs("people")]
        assert store.latest_config("people") == fps[-1]
    a, b = fps
    return a, b


def _exported(run_cli: CliRunner, *extra: str) -> list[dict[str, object]]:
    done = run_cli("export", "people", "-o", "-", *extra)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_tasks_lists_every_configuration(two_configs: tuple[str, str], run_cli: CliRunner) -> None:
    a, b = two_configs
    done = run_cli("tasks")
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    assert rows[0] == ["TASK", "CONFIG", "MODEL", "LAST", "RUN", "RESULTS", "SUCCEEDED", "FAILED"]
    assert [[r[0], r[1], r[2], *r[5:]] for r in rows[1:3]] == [
        ["people", a[:12], "fake-model", "4", "4", "0"],
        ["people", f"*{b[:12]}", "fake-model", "2", "2", "0"],
    ]
    assert rows[1][3].startswith("20")  # the date of the last run
    assert "* the latest configuration" in done.stdout


def test_show_the_latest_another_or_all(two_configs: tuple[str, str], run_cli: CliRunner) -> None:
    a, b = two_configs
    latest = run_cli("show", "people")
    assert latest.returncode == 0, latest.stderr
    assert f"config   {b[:12]} (the latest of 2;" in latest.stdout
    assert "results  2 (2 succeeded, 0 failed)" in latest.stdout
    assert f"* 2. {b[:12]}" in latest.stdout and f"  1. {a[:12]}" in latest.stdout
    assert "prompt 'A: {{ text }}'" in latest.stdout  # every configuration is described

    other = run_cli("show", "people", "--config", a[:6])
    assert other.returncode == 0, other.stderr
    assert f"config   {a[:12]} (selected of 2;" in other.stdout
    assert "results  4 (4 succeeded, 0 failed)" in other.stdout

    every = run_cli("show", "people", "-c", "all")
    assert "config   all 2" in every.stdout
    assert "results  6 (6 succeeded, 0 failed)" in every.stdout


def test_export_the_latest_another_or_all(two_configs: tuple[str, str], run_cli: CliRunner) -> None:
    a, b = two_configs
    latest = _exported(run_cli)
    assert {r["config_fp"] for r in latest} == {b} and len(latest) == 2
    assert {r["data"] for r in latest} == {f"Summary: {p}" for p in PEOPLE[:2]}

    other = _exported(run_cli, "--config", a.upper()[:8])  # a prefix, in any case
    assert {r["config_fp"] for r in other} == {a} and len(other) == 4

    every = _exported(run_cli, "--config", "all")
    assert len(every) == 6
    # By configuration, then by task id.
    keys = [(r["config_fp"], r["task_id"]) for r in every]
    assert keys == sorted(keys)  # type: ignore[type-var]


def test_export_joined_to_an_input_uses_one_configuration(
    two_configs: tuple[str, str], run_cli: CliRunner, tmp_path: Path
) -> None:
    a, _ = two_configs
    latest = _exported(run_cli, "--input", "people.jsonl")
    assert [r["status"] for r in latest] == ["succeeded", "succeeded", "missing", "missing"]
    chosen = _exported(run_cli, "--input", "people.jsonl", "--config", a[:8])
    assert [r["status"] for r in chosen] == ["succeeded"] * 4

    every = run_cli("export", "people", "-o", "x.jsonl", "--input", "people.jsonl", "-c", "all")
    assert every.returncode == 2
    assert "--input joins the results of one configuration" in every.stderr
    assert not (tmp_path / "x.jsonl").exists()


def test_a_config_that_matches_none_or_several_is_a_usage_error(
    run_cli: CliRunner, tmp_path: Path
) -> None:
    with ResultStore(tmp_path / "s.db") as store:
        for fp in ("abcd1111", "abcd2222", "ef000000"):
            store.register_run("t", fp, {"model": f"m-{fp[:2]}"})
            store.put_many(
                [ResultRow(task_name="t", task_id=f"id-{fp}", config_fp=fp, status="succeeded")]
            )

    none = run_cli("show", "t", "--db", "s.db", "--config", "99")
    assert none.returncode == 2
    assert "task 't' has no configuration '99' (it has: abcd1111, abcd2222, ef000000" in none.stderr

    several = run_cli("export", "t", "-o", "-", "--db", "s.db", "--config", "abcd")
    assert several.returncode == 2
    assert "--config 'abcd' is ambiguous in task 't': abcd1111, abcd2222" in several.stderr

    one = run_cli("export", "t", "-o", "-", "--db", "s.db", "--config", "ef")
    assert one.returncode == 0, one.stderr
    assert [json.loads(x)["task_id"] for x in one.stdout.splitlines()] == ["id-ef000000"]
    assert "configuration ef000000" in one.stderr
