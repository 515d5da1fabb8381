"""``loom export``: a task's stored results into JSONL or CSV, optionally joined to its input.

The rows of one configuration: the latest by default, another with ``--config FP`` (a unique
prefix is enough), every one with ``--config all``. Without ``--input`` the rows are written as
the store streams them: by task id (with ``--config all``: by configuration, then task id). With
``--input FILE`` the file is read again, each record is prepared exactly as the engine prepares
it (``prepare_input``: same normalisation, same fingerprint), and one row is written per record,
in the file's order, with its ``index``; a record without a stored result gets the status
``missing``. The output is written to a temporary file and renamed over the target at the end.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from typing import IO

from loom_store import ResultStore

from .args import add_config_argument, add_db_argument
from .command import CliUsageError, Console, Subcommands
from .export_rows import ExportRow, export_columns, joined_rows, spaced_json, stored_rows
from .files import check_not_an_input, file_format, store_file
from .inputs import InputReadError, InputSource
from .store import check_task, on_store, select_config
from .writers import Output, row_writer

__all__ = ["add_parser", "check_export_paths", "export_task"]


def add_parser(commands: Subcommands) -> None:
    """Add ``loom export`` to the sub-commands ``commands``."""
    parser = commands.add_parser(
        "export",
        help="write a task's stored results to JSONL or CSV",
        description="Stream a task's stored results into a .jsonl or .csv file, or JSONL on "
        "stdout with -o -. With --input, write one row per record of that input file, in "
        "its order, joined to its stored result by task id.",
    )
    parser.add_argument("task", metavar="TASK")
    parser.add_argument(
        "--output",
        "-o",
        required=True,
        metavar="FILE",
        help="a .jsonl or .csv path, or - for JSONL on stdout",
    )
    parser.add_argument(
        "--force", "-f", action="store_true", help="replace FILE when it exists already"
    )
    parser.add_argument(
        "--input",
        "-i",
        metavar="INPUT",
        help="the .jsonl or .csv file the task ran on: one row per record, in input order, "
        "with its index (status 'missing' where no result is stored)",
    )
    parser.add_argument(
        "--include-input",
        action="store_true",
        help="CSV: the input's fields as input.<key> columns instead of one JSON column",
    )
    add_config_argument(parser)
    parser.add_argument("--status", choices=("succeeded", "failed"), help="only these results")
    add_db_argument(parser)
    parser.set_defaults(func=_command)


def _command(args: argparse.Namespace, console: Console) -> int:
    check_export_paths(args)  # before the store is opened: nothing is read in vain

    def export(store: ResultStore) -> None:
        count, config = export_task(store, args, console.stdout)
        where = "stdout" if args.output == "-" else args.output
        which = (
            "every configuration"
            if config is None
            else f"configuration {config[:12]}" + (" (the latest)" if args.config is None else "")
        )
        console.stderr.write(
            f"loom: exported {count} row(s) of {args.task!r}, {which}, to {where}\n"
        )

    return on_store(args.db, export, console.stderr)


def check_export_paths(args: argparse.Namespace) -> None:
    """Refuse an output that is an input or the store, or that exists without ``--force``.

    Called before the store is opened: nothing is read when the output is wrong.

    Raises:
        CliUsageError: The output must not be written.
    """
    path = args.output
    try:
        file_format(path, role="output")
        if args.input is not None:
            file_format(args.input, role="input")
    except ValueError as exc:
        raise CliUsageError(str(exc)) from None
    if args.input == "-":
        raise CliUsageError("--input must be a file (stdin cannot be joined)")
    problem = check_not_an_input(
        path, [("the --input file", args.input), ("the store (--db)", store_file(args.db))]
    )
    if problem is not None:
        raise CliUsageError(problem)
    if path != "-" and not args.force and os.path.lexists(path):
        raise CliUsageError(
            f"the output {path!r} exists already; pass --force to replace it "
            "(or choose another path)"
        )


def export_task(
    store: ResultStore, args: argparse.Namespace, stdout: IO[str]
) -> tuple[int, str | None]:
    """Stream a task's results into ``args.output`` (``.jsonl``, ``.csv`` or ``-``).

    The rows of one configuration (``args.config``: default the latest, ``"all"`` every
    one). A CSV needs its header first, so its data columns are collected in a first pass
    over the store (bounded memory: only the column names), then the rows are written in a
    second.

    Returns:
        The number of rows written and the configuration exported (``None``: all).

    Raises:
        CliUsageError: No such task or configuration, an output that cannot be written, or
            an ``--input`` that cannot be read.
    """
    check_task(store, args.task)
    config_fp = select_config(store, args.task, args.config)
    if args.input is not None and config_fp is None:
        raise CliUsageError(
            "--input joins the results of one configuration; choose one with --config FP "
            "(see `loom tasks`)"
        )
    source: InputSource | None = None
    if args.input is not None:
        try:
            source = InputSource(args.input)
        except OSError as exc:
            raise CliUsageError(
                f"cannot read --input {args.input!r}: {exc.strerror or exc}"
            ) from None
    status = args.status

    def rows() -> Iterator[ExportRow]:
        if source is None or config_fp is None:
            return stored_rows(store, args.task, status, config_fp)
        joined = joined_rows(store, args.task, config_fp, source)
        return joined if status is None else (e for e in joined if e.status == status)

    output = Output(args.output, stdout)
    try:
        writer = row_writer(
            output,
            lambda: export_columns(
                store,
                args.task,
                status,
                config_fp,
                include_input=args.include_input,
                source=source,
            ),
            encode=spaced_json,
        )
        flat = output.format == "csv"
        for row in rows():
            writer.write(row.flat_record(args.include_input) if flat else row.json_record())
        output.finish(complete=True)
    except InputReadError as exc:
        raise CliUsageError(f"cannot read --input {args.input!r} further: {exc}") from None
    finally:
        output.finish(complete=False)  # nothing when committed
    return writer.written, config_fp
