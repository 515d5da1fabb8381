"""Shared helpers for the integration tests: a sensible fake provider and a CLI runner."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from loom_backends.testing import FakeLLMServer, FakeReply, RecordedRequest

REPO = Path(__file__).resolve().parents[2]
SECRET_KEY = "sk-test-do-not-print-3f9a1c"
KNOWN_SKILLS = ("Python", "SQL", "Rust", "design", "statistics")
_NAME = re.compile(r"^((?:[A-Z][a-z]+\s?)+)")


def subject_of(prompt: str) -> str:
    """The part of a rendered prompt after its first colon (the input the template quoted)."""
    return prompt.split(":", 1)[-1].strip()


def profile_of(text: str) -> dict[str, Any]:
    """A deterministic "extraction": leading capitalised words are the name; known skills."""
    found = _NAME.match(text)
    name = found.group(1).strip() if found else text.split()[0] if text.split() else ""
    skills = [skill for skill in KNOWN_SKILLS if skill.lower() in text.lower()]
    return {"name": name, "skills": skills}


def _fill(properties: Mapping[str, Any], text: str) -> dict[str, Any]:
    profile = profile_of(text)
    value: dict[str, Any] = {}
    for key, spec in properties.items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        if key in profile:
            value[key] = profile[key]
        elif kind == "integer":
            value[key] = len(text.split())
        elif kind == "array":
            value[key] = profile["skills"]
        else:
            value[key] = text
    return value


def sensible_answer(request: RecordedRequest) -> str:
    """Answer like a cooperative model: a JSON schema is filled in, json_object gets a profile,
    free text gets a one-line summary."""
    text = subject_of(request.last_user_text)
    response_format = request.body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        schema = response_format["json_schema"]["schema"]
        return json.dumps(_fill(schema.get("properties", {}), text))
    if response_format.get("type") == "json_object":
        return json.dumps({**profile_of(text), "words": len(text.split())})
    return f"Summary: {text}"


def failing_on(word: str) -> Callable[[RecordedRequest], str | FakeReply]:
    """A sensible handler that answers HTTP 400 to prompts containing ``word``."""

    def handler(request: RecordedRequest) -> str | FakeReply:
        if word in request.last_user_text:
            return FakeReply(f"the fake provider refuses {word!r}", status=400)
        return sensible_answer(request)

    return handler


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(sensible_answer) as srv:
        yield srv


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: no real provider settings, a fake API key."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "ANTHROPIC_")) and k != "PYTHONPATH"
    }
    env["OPENAI_API_KEY"] = SECRET_KEY
    env["PYTHONIOENCODING"] = "utf-8"
    env.update(extra)
    return env


CliRunner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_cli(tmp_path: Path) -> CliRunner:
    """Run ``loom`` as a child process in ``tmp_path``; returns the completed process."""

    def run(
        *args: str,
        stdin: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "loom_core._cli", *args],
            cwd=tmp_path,
            env=dict(env) if env is not None else cli_env(),
            input=stdin,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=timeout,
            check=False,
        )

    return run


def write_jsonl(path: Path, items: Sequence[Any]) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
