"""Defaults are defined once: the engine and the CLI read the backends' and their own."""

from __future__ import annotations

import inspect

import loom_backends
from loom_backends import AnthropicBackend, OpenAIChatBackend, resolve_backend
from loom_core import TaskLoom
from loom_core._cli import build_parser
from loom_core._defaults import DEFAULT_DB


def _default(fn: object, name: str) -> object:
    return inspect.signature(fn).parameters[name].default  # type: ignore[arg-type]


def test_the_call_timeout_is_the_backends_one_everywhere() -> None:
    for fn in (TaskLoom, resolve_backend, OpenAIChatBackend, AnthropicBackend):
        assert _default(fn, "timeout") == loom_backends.DEFAULT_TIMEOUT
    help_text = build_parser().format_help() + _run_help()
    assert f"(default: {loom_backends.DEFAULT_TIMEOUT:g})" in help_text


def test_the_connection_limit_is_defined_once() -> None:
    for fn in (resolve_backend, OpenAIChatBackend, AnthropicBackend):
        assert _default(fn, "max_connections") == loom_backends.DEFAULT_MAX_CONNECTIONS


def test_the_store_path_is_the_same_in_python_and_on_the_command_line() -> None:
    assert _default(TaskLoom, "db_path") == DEFAULT_DB
    parser = build_parser()
    for command in ("run", "tasks", "show", "export"):
        args = parser.parse_args([command, *_required(command)])
        assert args.db == DEFAULT_DB


def test_the_environment_variables_are_named_once() -> None:
    text = _run_help()
    assert loom_backends.OPENAI_BASE_URL_ENV in text
    assert loom_backends.OPENAI_API_KEY_ENV in text


def _run_help() -> str:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return str(action.choices["run"].format_help())  # type: ignore[index]


def _required(command: str) -> list[str]:
    return {
        "run": ["in.jsonl", "--model", "m", "--template", "t"],
        "tasks": [],
        "show": ["name"],
        "export": ["name", "--output", "out.jsonl"],
    }[command]
