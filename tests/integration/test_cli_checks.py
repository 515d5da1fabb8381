"""``loom run``'s checks and settings: --version, --timeout, --tpm, number validation, the
template checked against the first record before any request, and an honest closing message."""

from __future__ import annotations

import importlib.metadata
import inspect
import sys
import time
from pathlib import Path

import pytest

from loom_backends.testing import FakeLLMServer, FakeReply, RecordedRequest
from loom_core import TaskLoom
from loom_core._cli import build_parser, main
from loom_core._cli.run_setup import build_loom
from loom_core._defaults import DEFAULT_FIXED_WORKERS, DEFAULT_MAX_WORKERS, default_workers

from .conftest import CliRunner, read_jsonl, sensible_answer, write_jsonl

PEOPLE = ["Ann Lee knows Python", "Bob Stone does design", "Cy Park writes Rust"]


def _run_args(srv: FakeLLMServer, input_name: str, *extra: str) -> list[str]:
    return ["run", input_name, "--model", "fake-model", "--base-url", srv.base_url, *extra]


# -- --version, --timeout, --tpm, numbers -----------------------------------------------------


def test_version_names_every_package(run_cli: CliRunner) -> None:
    done = run_cli("--version")
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    core = importlib.metadata.version("loom-core")
    assert line.startswith(f"loom {core} (loom-core {core}, ")
    for name in ("loom-protocol", "loom-backends", "loom-store"):
        assert f"{name} {importlib.metadata.version(name)}" in line
    assert f"Python {sys.version_info.major}.{sys.version_info.minor}" in line


@pytest.mark.parametrize("option", ["--timeout", "--tpm", "--rpm"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "0", "soon"])
def test_bad_numbers_are_usage_errors(
    capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    status = main(["run", "in.jsonl", "--model", "m", "-t", "x", f"{option}={value}"])
    err = capsys.readouterr().err
    assert status == 2
    assert f"argument {option}: expected a" in err and "number > 0" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--workers", "0", "expected a whole number >= 1, got 0"),
        ("--workers", " -3", "expected a whole number >= 1, got -3"),
        ("--workers", "True", "expected a whole number >= 1, got 'True'"),
        ("--workers", "1.5", "expected a whole number >= 1, got '1.5'"),
        ("--max-tokens", "0", "expected a whole number >= 1, got 0"),
        ("--max-retries", "-1", "expected a whole number >= 0, got -1"),
        ("--rpm", "abc", "expected a number > 0, got 'abc'"),
        ("--rpm", "nan", "expected a finite number > 0, got 'nan'"),
        ("--tpm", "-5", "expected a finite number > 0, got '-5'"),
    ],
)
def test_whole_numbers_and_positive_numbers_name_what_they_expect(
    capsys: pytest.CaptureFixture[str], option: str, value: str, message: str
) -> None:
    status = main(["run", "in.jsonl", "--model", "m", "-t", "x", f"{option}={value}"])
    assert status == 2
    assert f"argument {option}" in (err := capsys.readouterr().err) and message in err


def test_whole_numbers_and_positive_numbers_are_typed() -> None:
    args = build_parser().parse_args(
        ["run", "in.jsonl", "-m", "m", "-t", "x", "-w", "7", "--max-retries", "0", "--rpm", "60"]
    )
    assert (args.workers, args.max_retries, args.rpm) == (7, 0, 60.0)
    assert type(args.workers) is int and type(args.rpm) is float


def test_a_temperature_that_is_no_number_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Its range (nan, inf, -0.5, 3) is the engine's check: test_cli_config.py.
    status = main(["run", "in.jsonl", "--model", "m", "-t", "x", "--temperature=warm"])
    err = capsys.readouterr().err
    assert status == 2
    assert "argument --temperature: expected a number, got 'warm'" in err


def test_timeout_applies_to_each_call(run_cli: CliRunner, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in.jsonl", PEOPLE[:1])
    # The server answers after 30 s, the default timeout is 60 s: an answer within either
    # would take far longer than the bounds below, which only a slow start of the child
    # process (a loaded machine) may approach. The task's own latency leaves the start out.
    with FakeLLMServer(lambda r: FakeReply("late", delay=30.0)) as srv:
        started = time.monotonic()
        done = run_cli(
            *_run_args(srv, "in.jsonl", "-t", "{{ text }}", "--timeout", "0.3"),
            "--max-retries", "0", "-o", "out.jsonl",
        )  # fmt: skip
        elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    (result,) = read_jsonl(tmp_path / "out.jsonl")
    assert result["error"]["code"] == "provider_timeout"
    assert 300 <= result["latency_ms"] < 10_000, result["latency_ms"]
    assert elapsed < 25


def test_tpm_and_timeout_reach_the_loom(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        ["run", "in.jsonl", "-m", "m", "-t", "x", "--tpm", "1234", "--timeout", "7.5",
         "--base-url", "http://127.0.0.1:9", "--db", str(tmp_path / "s.db")]
    )  # fmt: skip
    loom = build_loom(args, "x", None)
    try:
        assert loom._engine.limiter.tpm == 1234
        assert loom._engine.runner.caller.timeout == 7.5
    finally:
        loom.close()


def test_one_max_workers_default_for_python_and_the_cli() -> None:
    # None: the loom's default, DEFAULT_MAX_WORKERS (64) adaptive, 5 with adaptive=False.
    parsed = build_parser().parse_args(["run", "in.jsonl", "-m", "m", "-t", "x"])
    assert parsed.workers is None and parsed.adaptive is True
    for method in ("map", "amap", "stream", "astream", "stream_events", "astream_events"):
        default = inspect.signature(getattr(TaskLoom, method)).parameters["max_workers"].default
        assert default is None, method
    assert default_workers(True) == DEFAULT_MAX_WORKERS == 64
    assert default_workers(False) == DEFAULT_FIXED_WORKERS == 5


def test_no_adaptive_reaches_the_loom(tmp_path: Path) -> None:
    for flags, adaptive in (([], True), (["--no-adaptive"], False)):
        args = build_parser().parse_args(
            ["run", "in.jsonl", "-m", "m", "-t", "x", "--base-url", "http://127.0.0.1:9",
             "--db", str(tmp_path / "s.db"), *flags]
        )  # fmt: skip
        loom = build_loom(args, "x", None)
        try:
            assert (loom._engine.concurrency is not None) is adaptive
        finally:
            loom.close()


# -- the template against the first record ----------------------------------------------------


def test_a_csv_column_the_template_lacks_stops_before_any_request(
    server: FakeLLMServer, run_cli: CliRunner, tmp_path: Path
) -> None:
    (tmp_path / "people.csv").write_text("id,bio\n1,Ann\n2,Bob\n", encoding="utf-8")

    done = run_cli(*_run_args(server, "people.csv", "-t", "Profile: {{ text }}"), "-o", "o.jsonl")

    assert done.returncode == 2, done.stderr
    assert "template variable 'text' is undefined in prompt_template" in done.stderr
    assert "input keys: bio, id" in done.stderr
    assert "the first record ('people.csv', line 2) has no such column" in done.stderr
    assert server.request_count == 0
    assert not (tmp_path / "o.jsonl").exists()
    assert not (tmp_path / ".loom.db").exists()


def test_the_system_template_and_the_first_good_jsonl_record_are_checked(
    server: FakeLLMServer, run_cli: CliRunner, tmp_path: Path
) -> None:
    (tmp_path / "in.jsonl").write_text(
        '{not json\n\n{"text": "Ann", "lang": "en"}\n{"text": "Bob"}\n', encoding="utf-8"
    )
    done = run_cli(
        *_run_args(server, "in.jsonl", "-t", "{{ text }}", "--system", "Answer in {{ tone }}.")
    )
    assert done.returncode == 2
    assert "template variable 'tone' is undefined in system_prompt" in done.stderr
    assert "input keys: lang, text" in done.stderr
    assert "line 3) has no such key" in done.stderr
    assert server.request_count == 0


def test_a_variable_under_is_defined_is_no_false_alarm(
    server: FakeLLMServer, run_cli: CliRunner, tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "in.jsonl", [{"text": "Ann"}, {"text": "Bob", "hint": "short"}])
    template = "Summarise: {{ text }}{% if hint is defined %} ({{ hint }}){% endif %}"
    done = run_cli(*_run_args(server, "in.jsonl", "-t", template), "-o", "o.jsonl")
    assert done.returncode == 0, done.stderr
    assert [r["data"] for r in read_jsonl(tmp_path / "o.jsonl")] == [
        "Summary: Ann",
        "Summary: Bob (short)",
    ]


def test_stdin_is_checked_without_losing_the_lines_read(
    server: FakeLLMServer, run_cli: CliRunner
) -> None:
    stdin = "\n[1]\n" + "".join(f'"{p}"\n' for p in PEOPLE)
    done = run_cli(*_run_args(server, "-", "-t", "Summarise: {{ text }}"), stdin=stdin)
    assert done.returncode == 1  # the array is input_invalid
    lines = [line for line in done.stdout.splitlines() if line]
    assert len(lines) == 4
    assert server.request_count == 3

    bad = run_cli(*_run_args(server, "-", "-t", "Summarise: {{ body }}"), stdin=stdin)
    assert bad.returncode == 2
    assert "the first record (stdin, line 3) has no such key" in bad.stderr
    assert server.request_count == 3


def test_other_render_errors_stay_per_input_and_an_empty_input_passes(
    server: FakeLLMServer, run_cli: CliRunner, tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "in.jsonl", [{"text": "Ann", "n": "x"}, {"text": "Bob", "n": 2}])
    done = run_cli(*_run_args(server, "in.jsonl", "-t", "{{ text }} {{ n + 1 }}"), "-o", "o.jsonl")
    assert done.returncode == 1, done.stderr
    first, second = read_jsonl(tmp_path / "o.jsonl")
    assert first["error"]["code"] == "template_error"
    assert second["is_success"]

    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    empty = run_cli(*_run_args(server, "empty.jsonl", "-t", "{{ anything }}"))
    assert empty.returncode == 0, empty.stderr
    assert "0 done" in empty.stderr


# -- the closing message -----------------------------------------------------------------------


def _rate_limited_on(word: str):  # type: ignore[no-untyped-def]
    def handler(request: RecordedRequest) -> str | FakeReply:
        if word in request.last_user_text:
            return FakeReply("slow down", status=429, headers={"Retry-After": "0"})
        return sensible_answer(request)

    return handler


def test_the_retry_promise_only_for_transient_failures(
    server: FakeLLMServer, run_cli: CliRunner, tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "in.jsonl", PEOPLE)
    with FakeLLMServer(_rate_limited_on("Rust")) as srv:
        done = run_cli(*_run_args(srv, "in.jsonl", "-t", "{{ text }}", "--max-retries", "0"))
    assert done.returncode == 1
    assert "(provider_rate_limited: 1); 1 of them for a transient reason" in done.stderr
    assert "running the same command again retries them" in done.stderr

    bad = run_cli(*_run_args(server, "in.jsonl", "-t", "{{ text.upper(1) }}"))
    assert bad.returncode == 1
    assert "running the same command again retries them" not in bad.stderr
    assert "(template_error: 3); these failures are not transient" in bad.stderr
