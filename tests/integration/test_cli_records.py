"""One flat record everywhere: ``to_records()``, ``loom run -o x.csv`` and ``loom export`` agree
field for field on the same results (successes, failures, bad lines, cached ones, the input's
columns), and the JSON lines of ``loom run`` and ``loom export`` agree on the stored fields
(usage included)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from loom_backends.testing import FakeLLMServer
from loom_core._cli import main
from loom_protocol import BatchResult, TaskResult

from .conftest import failing_on, read_jsonl

MODULE = """
from pydantic import BaseModel


class AgreeRow(BaseModel):
    name: str
    skills: list[str]
    index: int
"""

LINES = [
    json.dumps({"text": "Ann Lee knows Python and SQL", "lang": "en"}),
    "{not json",
    json.dumps({"text": "Bob Stone is BAD at design", "lang": "en", "tags": ["x", 1]}),
    json.dumps("Cy Park writes Rust"),
    json.dumps({"text": "Dée Möss", "nested": {"a": [1, 2]}}),
]


def _cell(value: Any) -> str:
    """What a flat record's value reads back as from a CSV cell."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return str(value)


def _csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the file twice (the second time the successes are cached), to JSONL and to CSV."""
    (tmp_path / "in.jsonl").write_text("\n".join(LINES) + "\n", encoding="utf-8")
    (tmp_path / "agree_schema.py").write_text(MODULE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeLLMServer(failing_on("BAD")) as srv:
        base = [
            "run", "in.jsonl", "--model", "fake-model", "--base-url", srv.base_url,
            "-t", "P: {{ text }}", "--schema", "agree_schema:AgreeRow", "--no-progress",
        ]  # fmt: skip
        assert main([*base, "-o", "fresh.jsonl"]) == 1
        assert main([*base, "-o", "cached.jsonl"]) == 1
        assert main([*base, "-o", "cached.csv", "--include-input"]) == 1
    return tmp_path


def test_to_records_run_csv_and_export_agree_field_for_field(runs: Path) -> None:
    results = [TaskResult[Any].model_validate(row) for row in read_jsonl(runs / "cached.jsonl")]
    records = BatchResult[Any](results=results).to_records(include_input=True)
    assert [r["cached"] for r in records] == [True, False, False, True, True]
    assert [r["error_code"] for r in records] == [
        None, "input_invalid", "provider_bad_request", None, None,
    ]  # fmt: skip
    assert main(["export", "in", "-o", "x.csv", "-i", "in.jsonl", "--include-input"]) == 0

    run_header, run_rows = _csv(runs / "cached.csv")
    export_header, export_rows = _csv(runs / "x.csv")
    # The same columns, in the same order: export adds the stored row's status and stamps
    # and has no `cached` (a stored row is the stored one).
    stored = {"status", "model", "config_fp", "created_at", "updated_at"}
    assert [c for c in export_header if c not in stored] == [c for c in run_header if c != "cached"]
    assert run_header[:7] == ["index", "task_id", "is_success", "cached", "error_code", "error",
                              "attempts"]  # fmt: skip
    assert {"input.text", "input.lang", "input.tags", "input.nested"} <= set(run_header)
    assert {"name", "skills", "data.index"} <= set(run_header)  # `index` renamed, as to_records

    assert len(records) == len(run_rows) == len(export_rows) == 5
    for index, (record, run_row, export_row) in enumerate(
        zip(records, run_rows, export_rows, strict=True)
    ):
        assert run_row["index"] == export_row["index"] == str(index)
        for column in run_header[1:]:
            assert run_row[column] == _cell(record.get(column)), (index, column)
            if column != "cached":
                assert export_row[column] == run_row[column], (index, column)
        # Keys of to_records outside the header: only a bad line's own input (line, raw).
        extra = set(record) - set(run_header)
        assert extra <= {"input.line", "input.raw"}, extra
        assert not extra or record["error_code"] == "input_invalid"
    assert [r["status"] for r in export_rows] == [
        "succeeded", "failed", "failed", "succeeded", "succeeded",
    ]  # fmt: skip


def test_run_and_export_json_lines_agree_on_the_stored_fields(runs: Path) -> None:
    assert main(["export", "in", "-o", "x.jsonl", "-i", "in.jsonl"]) == 0
    exported = read_jsonl(runs / "x.jsonl")
    for name, cached in (("fresh.jsonl", False), ("cached.jsonl", True)):
        for ran, stored in zip(read_jsonl(runs / name), exported, strict=True):
            assert ran["index"] == stored["index"]
            assert ran["cached"] is (cached and ran["is_success"])
            same = ["task_id", "is_success", "data", "error", "input_data", "raw_output"]
            same += ["reasoning", "attempts", "model"]
            if ran["error"] is None or ran["error"]["code"] != "input_invalid":
                # A cached result carries the usage of the call that made it, as stored.
                same.append("usage")
            assert {k: ran[k] for k in same} == {k: stored[k] for k in same}, ran["index"]
    assert any(row["usage"] for row in exported)
