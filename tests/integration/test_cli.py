"""The ``loom`` command line, run as a child process against a FakeLLMServer."""

from __future__ import annotations

import csv
import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loom_backends.testing import FakeLLMServer
from loom_core._cli import main
from loom_protocol import TaskResult
from loom_store import ResultStore

from .conftest import (
    SECRET_KEY,
    CliRunner,
    cli_env,
    failing_on,
    profile_of,
    read_jsonl,
    sensible_answer,
    subject_of,
    write_jsonl,
)

TEMPLATE = "Extract the profile: {{ text }}"
PEOPLE = [
    "Ann Lee knows Python and SQL",
    "Bob Stone does design",
    "Cy Park writes Rust",
    "Dee Moss teaches statistics",
]

PROFILE_MODULE = """
from pydantic import BaseModel


class Profile(BaseModel):
    name: str
    skills: list[str]


NOT_A_MODEL = 42
"""


def _run_args(srv: FakeLLMServer, input_name: str, *extra: str) -> list[str]:
    return ["run", input_name, "--model", "fake-model", "--base-url", srv.base_url, *extra]


def _no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET_KEY not in text


# -- help -----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["run"], ["tasks"], ["show"], ["export"]])
def test_help_on_every_command(run_cli: CliRunner, command: list[str]) -> None:
    done = run_cli(*command, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: loom {' '.join(command)}".rstrip())
    assert "--help" in done.stdout


def test_console_script_is_installed(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "loom"
    assert script.exists(), f"the console script {script} is missing (uv sync?)"
    done = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0
    assert "run" in done.stdout and "export" in done.stdout


# -- loom run: formats ----------------------------------------------------------------------


def test_jsonl_in_jsonl_out_with_schema(
    server: FakeLLMServer, run_cli: CliRunner, tmp_path: Path
) -> None:
    (tmp_path / "profiles.py").write_text(PROFILE_MODULE)
    write_jsonl(tmp_path / "people.jsonl", [{"text": PEOPLE[0]}, PEOPLE[1], {"text": PEOPLE[2]}])

    done = run_cli(
        *_run_args(server, "people.jsonl", "-t", TEMPLATE, "--schema", "profiles:Profile"),
        "-o",
        "out.jsonl",
    )

    assert done.returncode == 0, done.stderr
    lines = read_jsonl(tmp_path / "out.jsonl")
    assert sorted(line["index"] for line in lines) == [0, 1, 2]
    for line in lines:
        result = TaskResult[dict[str, object]].model_validate(line)
        assert result.is_success
        assert result.data == profile_of(PEOPLE[line["index"]])
    # The progress bar and the summary go to stderr; the key never appears anywhere.
    assert "failed=0" in done.stderr and "tokens=" in done.stderr
    assert "3 done: 3 succeeded, 0 failed" in done.stderr
    db_bytes = (tmp_path / ".loom.db").read_bytes()
    _no_secret(done.stdout, done.stderr, (tmp_path / "out.jsonl").read_text())
    assert SECRET_KEY.encode() not in db_bytes
    assert server.requests[0].headers["authorization"] == f"Bearer {SECRET_KEY}"


def test_csv_in_csv_out_with_json(
    server: FakeLLMServer, run_cli: CliRunner, tmp_path: Path
) -> None:
    with open(tmp_path / "people.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "bio"])
        writer.writerows([[i, bio] for i, bio in enumerate(PEOPLE)])

    done = run_cli(
        *_run_args(server, "people.csv", "-t", "Profile: {{ bio }}", "--json"), "-o", "out.csv"
    )

    assert done.returncode == 0, done.stderr
    with open(tmp_path / "out.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == [
        "index", "task_id", "is_success", "cached", "error_code", "error", "attempts", "data",
    ]  # fmt: skip
    assert sorted(int(row["index"]) for row in rows) == [0, 1, 2, 3]
    for row in rows:
        bio = PEOPLE[int(row["index"])]
        assert row["is_success"] == "True"
        assert json.loads(row["data"]) == {**profile_of(bio), "words": len(bio.split())}
    # The CSV columns became template variables.
    assert {subject_of(r.last_user_text) for r in server.requests} == set(PEOPLE)


def test_schema_to_csv_flattens_fields(
    server: FakeLLMServer, run_cli: CliRunner, tmp_path: Path
) -> None:
    (tmp_path / "profiles.py").write_text(PROFILE_MODULE)
    write_jsonl(tmp_path / "people.jsonl", PEOPLE[:2])

    done = run_cli(
        *_run_args(server, "people.jsonl", "-t", TEMPLATE, "--schema", "profiles:Profile"),
        "-o",
        "out.csv",
    )

    assert done.returncode == 0, done.stderr
    with open(tmp_path / "out.csv", newline="", encoding="utf-8") as file:
        rows = {int(row["index"]): row for row in csv.DictReader(file)}
    assert rows[0]["name"] == "Ann Lee"
    assert json.loads(rows[0]["skills"]) == ["Python", "SQL"]
    assert json.loads(rows[1]["skills"]) == ["design"]


def test_text_to_stdout_from_stdin(server: FakeLLMServer, run_cli: CliRunner) -> None:
    stdin = "".join(json.dumps(p) + "\n" for p in PEOPLE[:3])

    done = run_cli(*_run_args(server, "-", "-t", "Summarise: {{ text }}"), stdin=stdin)

    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert {line["index"]: line["data"] for line in lines} == {
        i: f"Summary: {p}" for i, p in enumerate(PEOPLE[:3])
    }
    assert "under task 'stdin'" in done.stderr


def test_template_file_and_system_prompt(
    server: FakeLLMServer, run_cli: CliRunner, tmp_path: Path
) -> None:
    (tmp_path / "prompt.j2").write_text("Summarise: {{ text | upper }}", encoding="utf-8")
    write_jsonl(tmp_path / "in.jsonl", ["ann lee"])

    done = run_cli(
        *_run_args(server, "in.jsonl", "-T", "prompt.j2", "--system", "Be brief."), "-o", "o.jsonl"
    )

    assert done.returncode == 0, done.stderr
    assert read_jsonl(tmp_path / "o.jsonl")[0]["data"] == "Summary: ANN LEE"
    assert server.requests[0].system_text == "Be brief."


# -- loom run: failures and exit codes --------------------------------------------------------


def test_malformed_lines_become_failed_results(
    server: FakeLLMServer, run_cli: CliRunner, tmp_path: Path
) -> None:
    lines = [json.dumps(PEOPLE[0]), "{not json", "", "[1, 2]", json.dumps({"text": PEOPLE[1]})]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")

    done = run_cli(*_run_args(server, "in.jsonl", "-t", TEMPLATE, "--json"), "-o", "out.jsonl")

    assert done.returncode == 1, done.stderr
    results = {line["index"]: line for line in read_jsonl(tmp_path / "out.jsonl")}
    assert sorted(results) == [0, 1, 2, 3]  # the blank line is not an input
    assert results[0]["is_success"] and results[3]["is_success"]
    assert results[3]["input_data"] == {"text": PEOPLE[1]}
    assert results[1]["error"]["code"] == "input_invalid"
    assert results[1]["error"]["message"].startswith("line 2: not valid JSON")
    assert (
        results[2]["error"]["message"] == "line 4: expected a JSON object or string, got an array"
    )
    assert server.request_count == 2
    assert "2 succeeded, 2 failed" in done.stderr


def test_csv_row_of_wrong_width_is_a_failed_result(
    server: FakeLLMServer, run_cli: CliRunner, tmp_path: Path
) -> None:
    (tmp_path / "in.csv").write_text("name,bio\nann,likes SQL\nbob\ncy,x,extra\n", encoding="utf-8")

    done = run_cli(*_run_args(server, "in.csv", "-t", "Bio: {{ bio }}"), "-o", "out.jsonl")

    assert done.returncode == 1
    results = {line["index"]: line for line in read_jsonl(tmp_path / "out.jsonl")}
    assert results[0]["is_success"]
    assert results[1]["error"]["message"] == "line 3: row has 1 fields, the header 2"
    assert results[2]["error"]["message"] == "line 4: row has 3 fields, the header 2"
    assert server.request_count == 1


def test_jsonl_line_that_is_not_utf8_is_a_failed_result(
    server: FakeLLMServer, run_cli: CliRunner, tmp_path: Path
) -> None:
    (tmp_path / "in.jsonl").write_bytes(b'"Ann Lee knows SQL"\n"caf\xe9"\n')

    done = run_cli(*_run_args(server, "in.jsonl", "-t", "Bio: {{ text }}"), "-o", "out.jsonl")

    assert done.returncode == 1
    results = {line["index"]: line for line in read_jsonl(tmp_path / "out.jsonl")}
    assert results[0]["data"] == "Summary: Ann Lee knows SQL"
    assert results[1]["error"]["message"].startswith("line 2: not valid UTF-8")


def test_csv_that_is_not_utf8_stops_with_exit_2(
    server: FakeLLMServer, run_cli: CliRunner, tmp_path: Path
) -> None:
    (tmp_path / "in.csv").write_bytes(b"bio\nAnn\ncaf\xe9\n")

    done = run_cli(*_run_args(server, "in.csv", "-t", "Bio: {{ bio }}"), "-o", "out.jsonl")

    assert done.returncode == 2
    assert "cannot read input 'in.csv' further" in done.stderr
    assert "the file is not valid UTF-8" in done.stderr
    assert "--task-name in" in done.stderr.strip().splitlines()[-1]
    assert "Traceback" not in done.stderr
    # An incomplete run never becomes the output file (nor leaves its temporary file).
    assert (
        "'out.jsonl' was not written" in done.stderr or "out.jsonl was not written" in done.stderr
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [".loom.db", "in.csv"]


def test_images_and_image_root(server: FakeLLMServer, run_cli: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 16)
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 16)
    write_jsonl(
        tmp_path / "in.jsonl",
        [{"text": "one", "images": "a.png"}, {"text": "two", "images": str(tmp_path / "b.png")}],
    )

    done = run_cli(
        *_run_args(server, "in.jsonl", "-t", "Describe: {{ text }}", "--image-root", "pics"),
        "-o",
        "out.jsonl",
    )

    assert done.returncode == 1
    results = {line["index"]: line for line in read_jsonl(tmp_path / "out.jsonl")}
    assert results[0]["is_success"]
    assert results[1]["error"]["code"] == "image_unreadable"
    assert "outside image_root" in results[1]["error"]["message"]
    (request,) = server.requests
    parts = request.messages[-1]["content"]
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")


def test_provider_failures_exit_1_and_a_rerun_retries_only_them(
    run_cli: CliRunner, tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "people.jsonl", PEOPLE)
    with FakeLLMServer(failing_on("Rust")) as srv:
        first = run_cli(*_run_args(srv, "people.jsonl", "-t", TEMPLATE, "--json"), "-o", "a.jsonl")
        assert first.returncode == 1, first.stderr
        failed = [r for r in read_jsonl(tmp_path / "a.jsonl") if not r["is_success"]]
        assert [f["error"]["code"] for f in failed] == ["provider_bad_request"]
        # A 400 is not transient: the message says so rather than promising a retry helps.
        assert "running the same command again retries them" not in first.stderr
        assert "(provider_bad_request: 1); these failures are not transient" in first.stderr
        resume = first.stderr.strip().splitlines()[-1].strip()
        assert shlex.split(resume)[:2] == ["loom", "run"]
        assert "--task-name people" in resume

    with FakeLLMServer(sensible_answer) as srv:
        again = run_cli(*_run_args(srv, "people.jsonl", "-t", TEMPLATE, "--json"), "-o", "b.jsonl")
        assert again.returncode == 0, again.stderr
        assert [subject_of(r.last_user_text) for r in srv.requests] == ["Cy Park writes Rust"]
    results = read_jsonl(tmp_path / "b.jsonl")
    assert len(results) == 4 and all(r["is_success"] for r in results)
    assert sum(r["cached"] for r in results) == 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-t", "x", "--schema", "profiles"], "--schema must look like module:Model"),
        (["-t", "x", "--schema", "nowhere:Model"], "no module named 'nowhere'"),
        (["-t", "x", "--schema", "profiles:Missing"], "module 'profiles' has no 'Missing'"),
        (["-t", "x", "--schema", "profiles:NOT_A_MODEL"], "is int, not a pydantic BaseModel"),
        (["-t", "x", "--schema", "broken:Model"], "importing 'broken' failed: RuntimeError: boom"),
        (["-t", "{{ text"], "prompt_template does not parse"),
        (["-T", "missing.j2"], "cannot read --template-file 'missing.j2'"),
        (["-t", "x", "--workers", "0"], "expected a whole number >= 1"),
        (["-t", "x", "--rpm", "-5"], "expected a finite number > 0"),
        (["-t", "x", "-o", "out.txt"], "output 'out.txt' must end in .jsonl"),
        (["-t", "x", "-o", "nodir/out.jsonl"], "cannot write output"),
        (["-t", "x", "--api-key-env", "LOOM_TEST_UNSET_KEY"], "LOOM_TEST_UNSET_KEY"),
        (["-t", "x", "--db", "nodir/x.db"], "the result store cannot be used"),
        (["-t", "x", "--template-file", "p.j2"], "not allowed with argument"),
        (["-t", "x", "--json", "--schema", "profiles:Profile"], "not allowed with argument"),
        (["-t", "x", "--model", "nope/x", "--base-url", ""], "unknown backend prefix"),
    ],
)
def test_usage_errors_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    # In-process (the same main() the console script calls) to keep the suite fast; the
    # subprocess tests below check that the status reaches the shell.
    (tmp_path / "profiles.py").write_text(PROFILE_MODULE)
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    write_jsonl(tmp_path / "in.jsonl", ["a"])
    monkeypatch.chdir(tmp_path)
    for name in ("OPENAI_BASE_URL", "LOOM_TEST_UNSET_KEY"):
        monkeypatch.delenv(name, raising=False)
    # The default endpoint needs a key (else that is the error); no request is ever sent.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-never-sent")
    monkeypatch.setattr(sys, "path", list(sys.path))  # --schema puts the cwd on sys.path
    for module in ("profiles", "broken"):
        monkeypatch.delitem(sys.modules, module, raising=False)

    status = main(["run", "in.jsonl", "--model", "fake-model", *extra])

    stderr = capsys.readouterr().err
    assert status == 2, stderr
    assert message in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize(
    ("input_name", "message"),
    [
        ("missing.jsonl", "cannot read input 'missing.jsonl': No such file or directory"),
        ("in.txt", "input 'in.txt' must end in .jsonl (or .ndjson) or .csv"),
    ],
)
def test_unreadable_input_exits_2(
    run_cli: CliRunner, tmp_path: Path, input_name: str, message: str
) -> None:
    (tmp_path / "in.txt").write_text("a\n")
    done = run_cli("run", input_name, "--model", "m", "-t", "x")
    assert done.returncode == 2
    assert message in done.stderr


def test_missing_required_arguments_exit_2(run_cli: CliRunner) -> None:
    done = run_cli("run", "in.jsonl", "-t", "x")
    assert done.returncode == 2
    assert "the following arguments are required: --model" in done.stderr
    assert run_cli("run", "in.jsonl", "--model", "m").returncode == 2
    assert run_cli().returncode == 2
    assert run_cli("frobnicate").returncode == 2


def test_changed_config_under_one_task_name_warns_and_recomputes(
    server: FakeLLMServer, run_cli: CliRunner, tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "people.jsonl", PEOPLE[:2])
    assert run_cli(*_run_args(server, "people.jsonl", "-t", TEMPLATE)).returncode == 0
    done = run_cli(*_run_args(server, "people.jsonl", "-t", "Other: {{ text }}"))
    assert done.returncode == 0
    assert "loom: warning: task_name 'people' holds results of 1 other configuration" in done.stderr
    assert server.request_count == 4


# -- tasks, show, export ----------------------------------------------------------------------


def test_tasks_show_export(run_cli: CliRunner, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "people.jsonl", PEOPLE)
    with FakeLLMServer(failing_on("Rust")) as srv:
        assert run_cli(*_run_args(srv, "people.jsonl", "-t", TEMPLATE, "--json")).returncode == 1
        assert (
            run_cli(
                *_run_args(srv, "people.jsonl", "-t", "Again: {{ text }}", "-n", "other")
            ).returncode
            == 1
        )

    tasks = run_cli("tasks")
    assert tasks.returncode == 0, tasks.stderr
    rows = [line.split() for line in tasks.stdout.splitlines()]
    assert rows[0] == ["TASK", "CONFIG", "MODEL", "LAST", "RUN", "RESULTS", "SUCCEEDED", "FAILED"]
    assert [[r[0], r[1][0], r[2], *r[5:]] for r in rows[1:3]] == [
        ["other", "*", "fake-model", "4", "3", "1"],
        ["people", "*", "fake-model", "4", "3", "1"],
    ]

    show = run_cli("show", "people")
    assert show.returncode == 0, show.stderr
    assert "results  4 (3 succeeded, 1 failed)" in show.stdout
    assert "provider_bad_request  1" in show.stdout
    assert "model fake-model  output dict" in show.stdout
    assert f"prompt {TEMPLATE!r}" in show.stdout

    exported = run_cli("export", "people", "-o", "all.jsonl")
    assert exported.returncode == 0, exported.stderr
    records = read_jsonl(tmp_path / "all.jsonl")
    assert len(records) == 4
    by_text = {r["input_data"]["text"]: r for r in records}
    assert by_text[PEOPLE[0]]["data"]["skills"] == ["Python", "SQL"]
    assert by_text[PEOPLE[2]]["error"]["code"] == "provider_bad_request"

    only_failed = run_cli("export", "people", "-o", "-", "--status", "failed")
    assert [json.loads(x)["input_data"]["text"] for x in only_failed.stdout.splitlines()] == [
        PEOPLE[2]
    ]

    assert run_cli("export", "people", "-o", "all.csv").returncode == 0
    with open(tmp_path / "all.csv", newline="", encoding="utf-8") as file:
        table = list(csv.DictReader(file))
    assert len(table) == 4
    assert {"task_id", "is_success", "error_code", "name", "skills", "words", "input"} <= set(
        table[0]
    )
    assert {row["name"] for row in table if row["is_success"] == "True"} == {
        "Ann Lee", "Bob Stone", "Dee Moss",
    }  # fmt: skip


def test_show_lists_every_configuration(
    server: FakeLLMServer, run_cli: CliRunner, tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "people.jsonl", PEOPLE[:1])
    assert run_cli(*_run_args(server, "people.jsonl", "-t", TEMPLATE)).returncode == 0
    assert (
        run_cli(
            *_run_args(server, "people.jsonl", "-t", TEMPLATE, "--temperature", "0.5")
        ).returncode
        == 0
    )
    show = run_cli("show", "people")
    assert "configurations (2, oldest first; * = counted above):" in show.stdout
    assert "params temperature=0.5" in show.stdout


def test_store_commands_usage_errors(run_cli: CliRunner, tmp_path: Path) -> None:
    missing = run_cli("tasks", "--db", "nothing.db")
    assert missing.returncode == 2
    assert "no store at 'nothing.db'" in missing.stderr
    assert not (tmp_path / "nothing.db").exists()

    ResultStore(tmp_path / "empty.db").close()
    empty = run_cli("tasks", "--db", "empty.db")
    assert empty.returncode == 0
    assert "no tasks in" in empty.stdout

    unknown = run_cli("show", "nope", "--db", "empty.db")
    assert unknown.returncode == 2
    assert "no task 'nope'" in unknown.stderr
    assert run_cli("export", "nope", "-o", "x.jsonl", "--db", "empty.db").returncode == 2
    assert run_cli("export", "nope", "--db", "empty.db").returncode == 2  # -o is required


# -- Ctrl-C and resume ------------------------------------------------------------------------


def test_interrupted_run_resumes_with_the_printed_command(tmp_path: Path) -> None:
    inputs = [f"Person{i:02d} knows Python" for i in range(40)]
    write_jsonl(tmp_path / "batch.jsonl", inputs)
    env = cli_env()
    with FakeLLMServer(sensible_answer, latency=0.25) as srv:
        cmd = [sys.executable, "-m", "loom_core._cli"]
        args = _run_args(srv, "batch.jsonl", "-t", TEMPLATE, "--json", "-w", "2", "-o", "out.jsonl")
        child = subprocess.Popen(
            [*cmd, *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, encoding="utf-8",
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while srv.request_count < 6:
                if time.monotonic() > deadline:
                    pytest.fail("the child sent fewer than 6 requests within 60 s")
                time.sleep(0.02)
            child.send_signal(signal.SIGINT)
            _, stderr = child.communicate(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()

        assert child.returncode == 130, stderr
        assert "Traceback" not in stderr
        # An interrupted run leaves no partial output (and no temporary file) behind.
        assert "loom: interrupted: out.jsonl was not written; every finished task" in stderr
        assert sorted(p.name for p in tmp_path.iterdir() if "loom.db" not in p.name) == [
            "batch.jsonl"
        ]
        resume = stderr.strip().splitlines()[-1].strip()
        assert resume == shlex.join(["loom", *args, "--task-name", "batch"])

        with ResultStore(tmp_path / ".loom.db") as store:
            saved = {json.loads(row.input or "")["text"] for row in store.iter_results("batch")}
        assert 2 <= len(saved) < 40

        srv.clear()
        again = subprocess.run(
            [*cmd, *shlex.split(resume)[1:]], cwd=tmp_path, env=env, capture_output=True,
            text=True, encoding="utf-8", timeout=120, check=False,
        )  # fmt: skip
        assert again.returncode == 0, again.stderr
        asked = sorted(subject_of(r.last_user_text) for r in srv.requests)
        assert asked == sorted(set(inputs) - saved)

    second = read_jsonl(tmp_path / "out.jsonl")
    assert [r["index"] for r in second] == list(range(40))  # in input order
    assert all(r["is_success"] for r in second)
    assert sum(r["cached"] for r in second) == len(saved)
    assert {r["index"]: r["input_data"]["text"] for r in second} == dict(enumerate(inputs))
