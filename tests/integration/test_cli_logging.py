"""Where what the engine logs shows up: nowhere by itself in a library, on stderr under `loom`."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from loom_backends.testing import FakeLLMServer, FakeReply, RecordedRequest

from .conftest import CliRunner, cli_env, read_jsonl, write_jsonl

pytestmark = pytest.mark.timeout(120)


def _rate_limited_once() -> object:
    """429 with a short Retry-After to each input's first request, then an answer."""
    seen: set[str] = set()

    def handler(req: RecordedRequest) -> str | FakeReply:
        if req.last_user_text not in seen:
            seen.add(req.last_user_text)
            return FakeReply("slow down", status=429, headers={"Retry-After": "0.05"})
        return "fine"

    return handler


def test_a_library_user_without_logging_set_up_sees_no_log_line(tmp_path: Path) -> None:
    # Python's last-resort handler would print each WARNING (here: the 429 pause) to stderr.
    script = tmp_path / "quiet.py"
    script.write_text(
        textwrap.dedent(
            """
            import os
            from loom_core import TaskLoom

            with TaskLoom("m", "{{ text }}", base_url=os.environ["OPENAI_BASE_URL"]) as loom:
                results = loom.map(["a", "b"], max_workers=1)
            print(all(r.is_success for r in results))
            """
        ),
        encoding="utf-8",
    )
    with FakeLLMServer(_rate_limited_once()) as srv:
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=cli_env(OPENAI_BASE_URL=srv.base_url),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        statuses = [r.status for r in srv.requests]
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"
    assert 429 in statuses  # the pause did happen: it was logged, just not printed
    assert done.stderr == ""


def test_loom_run_shows_warnings_on_stderr_and_retries_with_verbose(
    run_cli: CliRunner, tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "in.jsonl", ["a", "b"])

    def run(options: list[str], out: str) -> subprocess.CompletedProcess[str]:
        with FakeLLMServer(_rate_limited_once()) as srv:  # each run meets its own 429s
            return run_cli(
                *options, "run", "in.jsonl", "--model", "m", "-t", "{{ text }}",
                "--base-url", srv.base_url, "--workers", "1", "--no-progress",
                "-o", out, "--task-name", out,
            )  # fmt: skip

    plain = run([], "plain.jsonl")
    verbose = run(["-v"], "verbose.jsonl")
    assert plain.returncode == 0, plain.stderr
    assert verbose.returncode == 0, verbose.stderr
    assert len(read_jsonl(tmp_path / "plain.jsonl")) == 2
    assert "loom: WARNING loom.ratelimit:" in plain.stderr
    assert "loom.retry" not in plain.stderr  # INFO: only with --verbose
    assert "loom: INFO loom.retry:" in verbose.stderr
