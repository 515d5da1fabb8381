"""The ``loom`` parser and dispatcher: every sub-command registers itself, ``main`` calls it."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import batches, cancel, export, run, show, tasks
from .args import VersionAction
from .command import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, CliUsageError, Console
from .logs import cli_logging

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``loom`` and its sub-commands (each sets its ``func``)."""
    parser = argparse.ArgumentParser(
        prog="loom",
        description="Run one prompt template over many inputs against an LLM; inspect results.",
        epilog="Exit status: 0 all succeeded, 1 some failed, 2 usage error, 130 interrupted.",
    )
    parser.add_argument(
        "--version",
        action=VersionAction,
        help="print the version of loom and of every Loom package, then exit",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also show each retry and re-ask on stderr (warnings such as 429 pauses always are)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in (run, tasks, show, export, batches, cancel):
        command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``loom`` command line; returns the exit status.

    Args:
        argv: The arguments after the program name (default: ``sys.argv[1:]``).
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as exc:  # --help (0) or an argument error (2), already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    console = Console(args_list, sys.stdout, sys.stderr)
    try:
        with cli_logging(console.stderr, verbose=args.verbose):
            status: int = args.func(args, console)
            return status
    except CliUsageError as exc:
        console.stderr.write(f"loom {args.command}: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        console.stderr.write("loom: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of stdout went away (`loom run ... | head`): stop quietly, and keep Python
        # from failing again while flushing stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
