"""The command line forwards the engine's configuration checks (exit 2, the engine's message)
and never prints a credential stored with a run's configuration."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from loom_backends.testing import FakeLLMServer
from loom_core import TaskLoom
from loom_core._cli import main

from .conftest import write_jsonl


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_jsonl(tmp_path / "in.jsonl", ["a"])
    monkeypatch.chdir(tmp_path)
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--temperature", "nan"], "temperature must be a finite number in [0, 2], got nan"),
        (["--temperature", "inf"], "temperature must be a finite number in [0, 2], got inf"),
        (["--temperature", "3"], "temperature must be a finite number in [0, 2], got 3.0"),
        (["--base-url", "http://[::1"], "base_url is not a valid URL"),
        (["--base-url", "localhost:8000/v1"], "base_url must start with http:// or https://"),
    ],
)
def test_bad_configuration_exits_2_with_the_engines_message(
    in_tmp: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    args = ["run", "in.jsonl", "--model", "m", "-t", "{{ text }}", "-o", "out.jsonl"]
    if "--base-url" not in extra:
        args += ["--base-url", "http://127.0.0.1:9/v1"]
    status = main([*args, *extra])
    stderr = capsys.readouterr().err
    assert status == 2, stderr
    assert message in stderr
    assert "Traceback" not in stderr
    assert not (in_tmp / "out.jsonl").exists()


def test_no_key_for_the_default_endpoint_exits_2_naming_the_variable(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["run", "in.jsonl", "--model", "gpt-4o-mini", "-t", "{{ text }}"])
    stderr = capsys.readouterr().err
    assert status == 2, stderr
    assert "set OPENAI_API_KEY" in stderr


def test_a_userinfo_password_is_never_echoed(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "https://bob:PW-SECRET-9@gateway.example.com/v1"
    status = main(["run", "in.jsonl", "--model", "m", "-t", "x", "--base-url", url])
    captured = capsys.readouterr()
    assert status == 2
    assert "must not contain credentials" in captured.err
    assert "PW-SECRET-9" not in captured.err + captured.out


def test_loom_show_never_prints_a_credential(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secrets = {
        "subscription_key": "SECRET-1",
        "Ocp-Apim-Subscription-Key": "SECRET-2",
        "key": "SECRET-3",
        "bearer": "SECRET-4",
        "jwt": "SECRET-5",
        "sig": "SECRET-6",
        "pass": "SECRET-7",
        "api_key": "SECRET-8",
    }
    db = in_tmp / "runs.db"
    with FakeLLMServer() as srv:
        with TaskLoom(
            "fake-model",
            "{{ text }}",
            base_url=f"{srv.base_url}?api-key=SECRET-Q",
            api_key="SECRET-K",
            store=str(db),
            extra_body={**secrets, "top_k": 40, "keywords": ["k"]},
            max_tokens=77,
        ) as loom:
            assert loom.process({"text": "hi"}, task_name="azure").is_success
        assert srv.requests[0].body["jwt"] == "SECRET-5"  # the provider still gets them

    status = main(["show", "azure", "--db", str(db)])
    out = capsys.readouterr().out
    assert status == 0
    assert "SECRET" not in out
    for name in secrets:
        assert f"{name}" in out
    assert "***" in out
    assert "top_k" in out and "40" in out and "77" in out
    # And the file itself holds none of them.
    assert b"SECRET" not in db.read_bytes()


def test_loom_show_masks_a_secret_stored_by_an_older_version(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A 0.1 store kept names such as subscription_key in clear: the display masks them too.
    from loom_store import ResultStore

    db = in_tmp / "old.db"
    ResultStore(str(db)).close()  # the current schema
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO loom_runs (task_name, config_fp, config, created_at, last_run_at) "
            "VALUES ('old', ?, ?, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)",
            ("f" * 64, '{"model": "m", "params": {"subscription_key": "SECRET-OLD"}}'),
        )
    conn.close()
    status = main(["show", "old", "--db", str(db)])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "SECRET-OLD" not in out
    assert "subscription_key" in out
