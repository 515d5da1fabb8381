"""The ``loom`` command line's arguments: the parser of every sub-command and its checks."""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import platform
import sys
from typing import Any

from loom_backends import (
    ANTHROPIC_API_KEY_ENV,
    DEFAULT_TIMEOUT,
    OPENAI_API_KEY_ENV,
    OPENAI_BASE_URL_ENV,
)

from ._defaults import DEFAULT_DB, DEFAULT_MAX_WORKERS

__all__ = ["CONFIG_HELP", "DEFAULT_DB", "build_parser", "version_text"]


_PACKAGES = ("loom-core", "loom-protocol", "loom-backends", "loom-store")


def version_text() -> str:
    """``loom <version>`` and the version of every Loom package and of Python."""

    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    parts = ", ".join(f"{name} {version(name)}" for name in _PACKAGES)
    return f"loom {version('loom-core')} ({parts}; Python {platform.python_version()})"


class _VersionAction(argparse.Action):
    """``--version``: argparse's own would wrap the line at the terminal's width."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any, **_kwargs: Any) -> None:
        sys.stdout.write(version_text() + "\n")
        parser.exit()


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _number(text: str) -> float:
    # Only parsed here: the range is the backend's (Anthropic takes [0, 1], OpenAI [0, 2]), and
    # the engine's own check words the message, as it does for Python callers.
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


CONFIG_HELP = (
    "the configuration: a fingerprint or a unique prefix of one (see `loom tasks`), or 'all' "
    "(default: the latest one the task ran with)"
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``loom`` and its sub-commands."""
    parser = argparse.ArgumentParser(
        prog="loom",
        description="Run one prompt template over many inputs against an LLM; inspect results.",
        epilog="Exit status: 0 all succeeded, 1 some failed, 2 usage error, 130 interrupted.",
    )
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="print the version of loom and of every Loom package, then exit",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also show each retry and re-ask on stderr (warnings such as 429 pauses always are)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    db_help = f"the result store: a SQLite path or an SQLAlchemy URL (default: {DEFAULT_DB})"

    run = commands.add_parser(
        "run",
        help="run a prompt template over a JSONL or CSV file",
        description=(
            "Run a prompt template over every input of a JSONL file (one JSON object or string "
            "per line; '-' reads stdin) or a CSV file (one input per row, keyed by the header). "
            "Results are written in input order, each with its input's index, and kept in the "
            "store under the task name: "
            "running the same command again serves finished inputs from the store and sends "
            "only the rest."
        ),
        epilog=(
            f"The API key is read from the environment ({OPENAI_API_KEY_ENV}, or "
            f"{ANTHROPIC_API_KEY_ENV} for anthropic/ and claude- models; --api-key-env NAME "
            "for another variable) and is "
            "never printed. Exit status: 0 all succeeded, 1 some failed, 2 usage error, "
            "130 interrupted."
        ),
    )
    run.add_argument(
        "input", metavar="INPUT", help="a .jsonl or .csv file, or - for JSONL on stdin"
    )
    run.add_argument("--model", "-m", required=True, help="the model name, e.g. gpt-4o-mini")
    template = run.add_mutually_exclusive_group(required=True)
    template.add_argument(
        "--template", "-t", help="the Jinja2 prompt template, e.g. 'Summarise: {{ text }}'"
    )
    template.add_argument(
        "--template-file", "-T", metavar="FILE", help="read the prompt template from FILE"
    )
    run.add_argument("--system", "-s", help="a system prompt (also a Jinja2 template)")
    output = run.add_mutually_exclusive_group()
    output.add_argument(
        "--schema",
        metavar="MODULE:MODEL",
        help="a pydantic model the answers must match (the current directory is importable)",
    )
    output.add_argument("--json", action="store_true", help="answers are JSON objects")
    run.add_argument(
        "--task-name",
        "-n",
        help="the name results are stored and resumed under (default: the input file's stem; "
        "'stdin' for -)",
    )
    run.add_argument(
        "--workers",
        "-w",
        type=_positive_int,
        default=DEFAULT_MAX_WORKERS,
        help=f"calls in flight at most (default: {DEFAULT_MAX_WORKERS}, as in Python)",
    )
    run.add_argument("--rpm", type=_positive_float, help="requests per minute, at most")
    run.add_argument(
        "--tpm",
        type=_positive_float,
        help="tokens per minute, at most (estimated before each call, corrected after)",
    )
    run.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        help=f"seconds one provider call may take (default: {DEFAULT_TIMEOUT:g})",
    )
    run.add_argument(
        "--max-retries",
        type=_non_negative_int,
        default=3,
        help="retries of a failed call, and separately re-asks (default: 3)",
    )
    run.add_argument(
        "--temperature", type=_number, help="sampling temperature (the provider's range)"
    )
    run.add_argument("--max-tokens", type=_positive_int, help="the answer's token limit")
    run.add_argument("--db", default=DEFAULT_DB, help=db_help)
    run.add_argument(
        "--image-root",
        metavar="DIR",
        help="local image paths (the inputs' 'images') must lie inside DIR; relative ones "
        "resolve against it",
    )
    run.add_argument("--base-url", help=f"the provider's base URL (default: {OPENAI_BASE_URL_ENV})")
    run.add_argument(
        "--api-key-env",
        metavar="NAME",
        help=f"the environment variable holding the API key (default: {OPENAI_API_KEY_ENV})",
    )
    run.add_argument(
        "--output",
        "-o",
        metavar="OUT",
        help="write results to OUT (.jsonl or .csv), in input order; the file is replaced "
        "only once the run is complete (default: JSONL on stdout, as results come)",
    )
    run.add_argument(
        "--include-input",
        action="store_true",
        help="CSV output: add the input's fields as input.<key> columns (JSONL rows always "
        "carry the input as input_data)",
    )
    run.add_argument("--no-progress", action="store_true", help="do not show the progress bar")

    tasks = commands.add_parser(
        "tasks",
        help="list the task names in a store",
        description="List every task name in the store with its result counts.",
    )
    tasks.add_argument("--db", default=DEFAULT_DB, help=db_help)

    show = commands.add_parser(
        "show",
        help="counts, failures and configurations of one task",
        description="Show a task's result counts, its failures by error code and every "
        "configuration it has been run with (oldest first).",
    )
    show.add_argument("task", metavar="TASK")
    show.add_argument("--config", "-c", metavar="FP|all", help=CONFIG_HELP)
    show.add_argument("--db", default=DEFAULT_DB, help=db_help)

    export = commands.add_parser(
        "export",
        help="write a task's stored results to JSONL or CSV",
        description="Stream a task's stored results into a .jsonl or .csv file, or JSONL on "
        "stdout with -o -. With --input, write one row per record of that input file, in "
        "its order, joined to its stored result by task id.",
    )
    export.add_argument("task", metavar="TASK")
    export.add_argument(
        "--output",
        "-o",
        required=True,
        metavar="FILE",
        help="a .jsonl or .csv path, or - for JSONL on stdout",
    )
    export.add_argument(
        "--force", "-f", action="store_true", help="replace FILE when it exists already"
    )
    export.add_argument(
        "--input",
        "-i",
        metavar="INPUT",
        help="the .jsonl or .csv file the task ran on: one row per record, in input order, "
        "with its index (status 'missing' where no result is stored)",
    )
    export.add_argument(
        "--include-input",
        action="store_true",
        help="CSV: the input's fields as input.<key> columns instead of one JSON column",
    )
    export.add_argument("--config", "-c", metavar="FP|all", help=CONFIG_HELP)
    export.add_argument("--status", choices=("succeeded", "failed"), help="only these results")
    export.add_argument("--db", default=DEFAULT_DB, help=db_help)
    return parser
