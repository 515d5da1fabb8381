"""The arguments several ``loom`` sub-commands share: value types, ``--db``, ``--config``."""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from loom_core._defaults import DEFAULT_DB
from loom_protocol import LoomUsageError, check_int, check_positive_number

__all__ = [
    "CONFIG_HELP",
    "VersionAction",
    "add_config_argument",
    "add_db_argument",
    "non_negative_int",
    "number",
    "positive_float",
    "positive_int",
    "version_text",
]

_T = TypeVar("_T")

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


class VersionAction(argparse.Action):
    """``--version``: argparse's own would wrap the line at the terminal's width."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any, **_kwargs: Any) -> None:
        sys.stdout.write(version_text() + "\n")
        parser.exit()


def _parse(text: str, parse: Callable[[str], _T], expected: str) -> _T:
    try:
        return parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def _whole_number(minimum: int) -> Callable[[str], int]:
    """An argument type: a whole number >= ``minimum`` (the library's own ``check_int``)."""
    expected = f"a whole number >= {minimum}"

    def convert(text: str) -> int:
        value = _parse(text, int, expected)
        try:
            return check_int("value", value, minimum)
        except LoomUsageError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}") from None

    return convert


positive_int = _whole_number(1)
non_negative_int = _whole_number(0)


def positive_float(text: str) -> float:
    """An argument type: a finite number > 0 (the library's own ``check_positive_number``)."""
    value = _parse(text, float, "a number > 0")
    try:
        return check_positive_number("value", value)
    except LoomUsageError:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}") from None


def number(text: str) -> float:
    """An argument type: any number.

    Only parsed here: the range is the backend's (Anthropic takes [0, 1], OpenAI [0, 2]), and
    the engine's own check words the message, as it does for Python callers.
    """
    return _parse(text, float, "a number")


def add_db_argument(parser: argparse.ArgumentParser) -> None:
    """``--db``: the result store every sub-command reads or writes."""
    parser.add_argument(
        "--db",
        default=DEFAULT_DB,
        help=f"the result store: a SQLite path or an SQLAlchemy URL (default: {DEFAULT_DB})",
    )


CONFIG_HELP = (
    "the configuration: a fingerprint or a unique prefix of one (see `loom tasks`), or 'all' "
    "(default: the latest one the task ran with)"
)


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """``--config``/``-c``: which configuration of a task ``show`` and ``export`` read."""
    parser.add_argument("--config", "-c", metavar="FP|all", help=CONFIG_HELP)
