"""The ``loom`` command line: ``run``, ``tasks``, ``show`` and ``export``.

``loom run`` streams a JSONL or CSV file through a :class:`~loom_core.TaskLoom` and writes one
row per input, in input order; the store keeps every finished result, so an interrupted run
resumes by running the same command again. An output file is never one of the inputs and is
replaced only once complete (:mod:`loom_core._cli_files`). Exit status: 0 every input
succeeded, 1 some failed, 2 a usage error (bad arguments, an output that is an input, an
unreadable input, a bad ``--schema``, an unusable store), 130 when interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import IO

from loom_protocol import StoreError

from ._cli_args import build_parser
from ._cli_export import check_export_paths, export_task
from ._cli_log import cli_logging
from ._cli_run import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, run
from ._cli_setup import load_schema
from ._cli_store import CliUsageError, list_tasks, open_store, show_task

__all__ = ["build_parser", "load_schema", "main"]


def _store_command(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> int:
    if args.command == "export":
        check_export_paths(args)  # before the store is opened: nothing is read in vain
    store = open_store(args.db)
    try:
        if args.command == "tasks":
            list_tasks(store, stdout)
        elif args.command == "show":
            show_task(store, args.task, args.config, stdout)
        else:
            count, config = export_task(store, args, stdout)
            where = "stdout" if args.output == "-" else args.output
            which = (
                "every configuration"
                if config is None
                else f"configuration {config[:12]}"
                + (" (the latest)" if args.config is None else "")
            )
            stderr.write(f"loom: exported {count} row(s) of {args.task!r}, {which}, to {where}\n")
    except StoreError as exc:
        stderr.write(f"loom: error: {exc}\n")
        return EXIT_FAILED
    finally:
        store.close()
    return EXIT_OK


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
    stdout, stderr = sys.stdout, sys.stderr
    try:
        with cli_logging(stderr, verbose=args.verbose):
            if args.command == "run":
                return run(args, args_list, sys.stdin.buffer, stdout, stderr)
            return _store_command(args, stdout, stderr)
    except CliUsageError as exc:
        stderr.write(f"loom {args.command}: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        stderr.write("loom: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of stdout went away (`loom run ... | head`): stop quietly, and keep Python
        # from failing again while flushing stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
