"""Outputs join back to inputs: ``index`` and input order in ``loom run`` and ``loom export``,
the input's columns with ``--include-input``, ``export --input`` for one row per record."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from loom_backends.testing import FakeLLMServer, FakeReply, RecordedRequest
from loom_protocol import fingerprint

from .conftest import CliRunner, read_jsonl, sensible_answer, write_jsonl

PEOPLE = ["Ann Lee knows Python", "Bob Stone does design", "Cy Park writes Rust", "Dee Moss"]

MODULE = """
from pydantic import BaseModel


class Row(BaseModel):
    index: int
    name: str
"""


def _run_args(srv: FakeLLMServer, input_name: str, *extra: str) -> list[str]:
    return ["run", input_name, "--model", "fake-model", "--base-url", srv.base_url, *extra]


def _slow_first(request: RecordedRequest) -> str | FakeReply:
    # The first input answers last: finishing order is the reverse of input order.
    text = request.last_user_text
    delay = 0.6 if "Ann" in text else 0.3 if "Bob" in text else 0.0
    return FakeReply(sensible_answer(request), delay=delay)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def test_run_writes_rows_in_input_order_with_bad_lines_in_place(
    run_cli: CliRunner, tmp_path: Path
) -> None:
    lines = [json.dumps(PEOPLE[0]), "{oops", json.dumps(PEOPLE[1]), "7", json.dumps(PEOPLE[2])]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with FakeLLMServer(_slow_first) as srv:
        done = run_cli(
            *_run_args(srv, "in.jsonl", "-t", "S: {{ text }}", "-w", "4"), "-o", "o.jsonl"
        )
        stdout = run_cli(*_run_args(srv, "in.jsonl", "-t", "S: {{ text }}", "-w", "4"))
    assert done.returncode == 1, done.stderr
    rows = read_jsonl(tmp_path / "o.jsonl")
    assert [r["index"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["is_success"] for r in rows] == [True, False, True, False, True]
    assert rows[0]["input_data"] == {"text": PEOPLE[0]}
    assert rows[1]["error"]["message"].startswith("line 2: not valid JSON")
    assert [json.loads(x)["index"] for x in stdout.stdout.splitlines()] == [0, 1, 2, 3, 4]


def test_run_csv_with_include_input_from_a_csv(run_cli: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "people.csv").write_text(
        "id,bio\n" + "".join(f"{i},{p}\n" for i, p in enumerate(PEOPLE)), encoding="utf-8"
    )
    with FakeLLMServer(_slow_first) as srv:
        done = run_cli(
            *_run_args(srv, "people.csv", "-t", "Bio: {{ bio }}", "--json", "--include-input"),
            "-o", "out.csv",
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = _csv_rows(tmp_path / "out.csv")
    assert list(rows[0])[:10] == [
        "index", "task_id", "is_success", "cached", "error_code", "error", "attempts",
        "input.id", "input.bio", "data",
    ]  # fmt: skip
    assert [(r["index"], r["input.id"], r["input.bio"]) for r in rows] == [
        (str(i), str(i), p) for i, p in enumerate(PEOPLE)
    ]


def test_run_csv_include_input_from_jsonl_takes_every_key(
    server: FakeLLMServer, run_cli: CliRunner, tmp_path: Path
) -> None:
    (tmp_path / "schema_row.py").write_text(MODULE, encoding="utf-8")
    write_jsonl(
        tmp_path / "in.jsonl",
        [{"text": PEOPLE[0]}, PEOPLE[1], {"text": PEOPLE[2], "tags": ["a", "b"], "id": 7}],
    )
    done = run_cli(
        *_run_args(server, "in.jsonl", "-t", "P: {{ text }}", "--schema", "schema_row:Row"),
        "--include-input", "-o", "out.csv",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = _csv_rows(tmp_path / "out.csv")
    header = list(rows[0])
    assert header[7:] == ["input.text", "input.tags", "input.id", "data.index", "name"]
    assert rows[1]["input.text"] == PEOPLE[1] and rows[1]["input.tags"] == ""
    assert json.loads(rows[2]["input.tags"]) == ["a", "b"]
    assert rows[2]["input.id"] == "7"


def test_run_csv_include_input_from_stdin_warns_about_keys_left_out(
    server: FakeLLMServer, run_cli: CliRunner, tmp_path: Path
) -> None:
    stdin = json.dumps({"text": "Ann"}) + "\n" + json.dumps({"text": "Bob", "extra": 1}) + "\n"
    done = run_cli(
        *_run_args(server, "-", "-t", "S: {{ text }}", "--include-input"), "-o", "o.csv",
        stdin=stdin,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [r["input.text"] for r in _csv_rows(tmp_path / "o.csv")] == ["Ann", "Bob"]
    assert "input keys not among the CSV's columns were left out: extra" in done.stderr


def _export_setup(run_cli: CliRunner, tmp_path: Path, srv: FakeLLMServer) -> None:
    write_jsonl(tmp_path / "part.jsonl", [PEOPLE[2], PEOPLE[0]])
    done = run_cli(*_run_args(srv, "part.jsonl", "-t", "P: {{ text }}", "--json", "-n", "people"))
    assert done.returncode == 1  # the fake refuses "Rust"
    lines = [json.dumps(p) for p in PEOPLE] + ["not json"]
    (tmp_path / "all.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _refuse_rust(request: RecordedRequest) -> str | FakeReply:
    if "Rust" in request.last_user_text:
        return FakeReply("no Rust", status=400)
    return sensible_answer(request)


def test_export_joined_to_its_input(run_cli: CliRunner, tmp_path: Path) -> None:
    with FakeLLMServer(_refuse_rust) as srv:
        _export_setup(run_cli, tmp_path, srv)

    done = run_cli("export", "people", "--input", "all.jsonl", "-o", "joined.jsonl")

    assert done.returncode == 0, done.stderr
    rows = read_jsonl(tmp_path / "joined.jsonl")
    assert [(r["index"], r["status"]) for r in rows] == [
        (0, "succeeded"), (1, "missing"), (2, "failed"), (3, "missing"), (4, "failed"),
    ]  # fmt: skip
    assert rows[0]["data"]["name"] == "Ann Lee"
    assert rows[0]["input_data"] == {"text": PEOPLE[0]}
    assert rows[1]["task_id"] == fingerprint({"text": PEOPLE[1]})  # as the engine computes it
    assert rows[1]["data"] is None and rows[1]["error"] is None
    assert rows[2]["error"]["code"] == "provider_bad_request"
    assert rows[4]["error"]["code"] == "input_invalid"
    assert rows[4]["error"]["message"].startswith("line 5: not valid JSON")

    only = run_cli("export", "people", "-i", "all.jsonl", "-o", "-", "--status", "missing")
    assert only.returncode == 2  # argparse: succeeded or failed only
    failed = run_cli("export", "people", "-i", "all.jsonl", "-o", "-", "--status", "failed")
    assert [json.loads(x)["index"] for x in failed.stdout.splitlines()] == [2, 4]


def test_export_csv_joined_with_input_columns(run_cli: CliRunner, tmp_path: Path) -> None:
    with FakeLLMServer(_refuse_rust) as srv:
        _export_setup(run_cli, tmp_path, srv)

    done = run_cli(
        "export", "people", "--input", "all.jsonl", "--include-input", "-o", "joined.csv"
    )
    assert done.returncode == 0, done.stderr
    rows = _csv_rows(tmp_path / "joined.csv")
    header = list(rows[0])
    assert header[:8] == [
        "index", "task_id", "status", "is_success", "error_code", "error", "attempts", "input.text",
    ]  # fmt: skip
    assert {"name", "skills", "words", "model", "config_fp", "updated_at"} <= set(header)
    assert "input" not in header
    assert [(r["index"], r["status"], r["input.text"]) for r in rows[:4]] == [
        ("0", "succeeded", PEOPLE[0]), ("1", "missing", PEOPLE[1]),
        ("2", "failed", PEOPLE[2]), ("3", "missing", PEOPLE[3]),
    ]  # fmt: skip
    assert rows[0]["name"] == "Ann Lee" and rows[0]["model"] == "fake-model"


def test_export_joined_to_a_csv_input_computes_the_engines_task_ids(
    server: FakeLLMServer, run_cli: CliRunner, tmp_path: Path
) -> None:
    (tmp_path / "p.csv").write_text("id,bio\n1,Ann\n2,Bob\n", encoding="utf-8")
    assert run_cli(*_run_args(server, "p.csv", "-t", "B: {{ bio }}")).returncode == 0
    done = run_cli("export", "p", "--input", "p.csv", "-o", "-")
    rows = [json.loads(x) for x in done.stdout.splitlines()]
    assert [(r["index"], r["status"], r["data"]) for r in rows] == [
        (0, "succeeded", "Summary: Ann"),
        (1, "succeeded", "Summary: Bob"),
    ]
    assert rows[0]["task_id"] == fingerprint({"id": "1", "bio": "Ann"})


def test_export_without_input_is_in_task_id_order(
    server: FakeLLMServer, run_cli: CliRunner, tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "people.jsonl", PEOPLE)
    assert run_cli(*_run_args(server, "people.jsonl", "-t", "P: {{ text }}")).returncode == 0
    done = run_cli("export", "people", "-o", "-")
    rows: list[dict[str, Any]] = [json.loads(x) for x in done.stdout.splitlines()]
    assert [r["task_id"] for r in rows] == sorted(fingerprint({"text": p}) for p in PEOPLE)
    assert all(r["status"] == "succeeded" and "index" not in r for r in rows)
    csv_done = run_cli("export", "people", "-o", "out.csv", "--include-input")
    assert csv_done.returncode == 0, csv_done.stderr
    assert sorted(r["input.text"] for r in _csv_rows(tmp_path / "out.csv")) == sorted(PEOPLE)
