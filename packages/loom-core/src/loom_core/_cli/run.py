"""``loom run``: stream an input file through a loom and write the results in input order.

The checks come first (:mod:`.run_setup`: paths, schema, template, the loom); then the engine
streams the results, which :mod:`.run_output` writes in input order. A file output is written
to a temporary file and renamed over the target only once the run is complete.
"""

from __future__ import annotations

import argparse
import signal
import threading
import warnings
from collections.abc import Generator, Iterator
from typing import Any

from loom_backends import (
    ANTHROPIC_API_KEY_ENV,
    DEFAULT_TIMEOUT,
    OPENAI_API_KEY_ENV,
    OPENAI_BASE_URL_ENV,
)
from loom_core._defaults import DEFAULT_FIXED_WORKERS, DEFAULT_MAX_WORKERS
from loom_core._lease import DEFAULT_LEASE_S
from loom_protocol import BatchErrorEvent, LoomUsageError, StreamEvent, TaskResultEvent

from .args import add_db_argument, non_negative_int, number, positive_float, positive_int
from .command import EXIT_INTERRUPTED, EXIT_OK, CliUsageError, Console, Subcommands
from .cost import add_budget_arguments, print_estimate
from .files import file_format
from .inputs import InputSource
from .run_batch import batch_events
from .run_output import InOrder, Progress, RunOutput, report
from .run_setup import (
    build_loom,
    check_paths,
    check_template_fits,
    default_task_name,
    load_schema,
    read_template,
    resume_command,
)

__all__ = ["add_parser", "run"]


def add_parser(commands: Subcommands) -> None:
    """Add ``loom run`` to the sub-commands ``commands``."""
    parser = commands.add_parser(
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
    parser.add_argument(
        "input", metavar="INPUT", help="a .jsonl or .csv file, or - for JSONL on stdin"
    )
    parser.add_argument("--model", "-m", required=True, help="the model name, e.g. gpt-4o-mini")
    template = parser.add_mutually_exclusive_group(required=True)
    template.add_argument(
        "--template", "-t", help="the Jinja2 prompt template, e.g. 'Summarise: {{ text }}'"
    )
    template.add_argument(
        "--template-file", "-T", metavar="FILE", help="read the prompt template from FILE"
    )
    parser.add_argument("--system", "-s", help="a system prompt (also a Jinja2 template)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "--schema",
        metavar="MODULE:MODEL",
        help="a pydantic model the answers must match (the current directory is importable)",
    )
    output.add_argument("--json", action="store_true", help="answers are JSON objects")
    parser.add_argument(
        "--task-name",
        "-n",
        help="the name results are stored and resumed under (default: the input file's stem; "
        "'stdin' for -)",
    )
    parser.add_argument(
        "--workers",
        "-w",
        type=positive_int,
        default=None,
        help=f"calls in flight at most: the ceiling of the adaptive concurrency (default: "
        f"{DEFAULT_MAX_WORKERS}), or the fixed concurrency with --no-adaptive (default: "
        f"{DEFAULT_FIXED_WORKERS}), as in Python",
    )
    parser.add_argument(
        "--no-adaptive",
        dest="adaptive",
        action="store_false",
        help="keep --workers calls in flight and ignore the provider's rate-limit headers "
        "(adaptive=False; see docs/limits.md)",
    )
    parser.add_argument("--rpm", type=positive_float, help="requests per minute, at most")
    parser.add_argument(
        "--tpm",
        type=positive_float,
        help="tokens per minute, at most (estimated before each call, corrected after)",
    )
    parser.add_argument(
        "--timeout",
        type=positive_float,
        metavar="SECONDS",
        help=f"seconds one provider call may take (default: {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--max-retries",
        type=non_negative_int,
        default=3,
        help="retries of a failed call, and separately re-asks (default: 3)",
    )
    parser.add_argument(
        "--temperature", type=number, help="sampling temperature (the provider's range)"
    )
    parser.add_argument("--max-tokens", type=positive_int, help="the answer's token limit")
    add_db_argument(parser)
    parser.add_argument(
        "--lease",
        type=positive_float,
        default=DEFAULT_LEASE_S,
        metavar="SECONDS",
        help="several `loom run` on one task and store split the inputs through claims that "
        "live this long without a heartbeat: a killed run's inputs are taken over after it "
        f"(default: {DEFAULT_LEASE_S:g})",
    )
    parser.add_argument(
        "--image-root",
        metavar="DIR",
        help="local image paths (the inputs' 'images') must lie inside DIR; relative ones "
        "resolve against it",
    )
    parser.add_argument(
        "--base-url",
        action="append",
        metavar="URL",
        help=f"the provider's base URL (default: {OPENAI_BASE_URL_ENV}); repeat it for several "
        "servers of the same model: requests spread over them, and a server that fails is "
        "taken out until it answers again",
    )
    parser.add_argument(
        "--fallback-model",
        action="append",
        metavar="MODEL",
        help="a model to turn to when the model's provider is out (repeat for more, in order)",
    )
    parser.add_argument(
        "--api-key-env",
        metavar="NAME",
        help=f"the environment variable holding the API key (default: {OPENAI_API_KEY_ENV})",
    )
    parser.add_argument(
        "--output",
        "-o",
        metavar="OUT",
        help="write results to OUT (.jsonl or .csv), in input order; the file is replaced "
        "only once the run is complete (default: JSONL on stdout, as results come)",
    )
    parser.add_argument(
        "--include-input",
        action="store_true",
        help="CSV output: add the input's fields as input.<key> columns (JSONL rows always "
        "carry the input as input_data)",
    )
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    add_budget_arguments(parser)
    parser.add_argument(
        "--batch",
        action="store_true",
        help="send the inputs through the provider's Batch API (OpenAI, Anthropic): half the "
        "price, results within 24 hours; waits with a progress bar, and the same command "
        "resumes the job after Ctrl-C or a crash without submitting anything twice "
        "(see docs/batch.md)",
    )
    parser.add_argument(
        "--poll-interval",
        type=positive_float,
        metavar="SECONDS",
        help="--batch: seconds before the first poll, growing while nothing changes "
        "(default: 5, up to 300)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    """Run ``loom run`` with parsed ``args``; returns the exit status.

    Raises:
        CliUsageError: Misuse found before anything was sent.
    """
    stdout, stderr = console.stdout, console.stderr
    out_path = args.output or "-"
    try:
        file_format(args.input, role="input")
        file_format(out_path, role="output")
    except ValueError as exc:
        raise CliUsageError(str(exc)) from None
    check_paths(args, out_path)
    try:
        source = InputSource(args.input, stdin=console.stdin)
    except OSError as exc:
        raise CliUsageError(f"cannot read input {args.input!r}: {exc.strerror or exc}") from None
    task_name = args.task_name or default_task_name(args.input)
    resume = resume_command(console.argv, task_name, named=args.task_name is not None)

    schema = load_schema(args.schema) if args.schema is not None else None
    template = read_template(args)
    check_template_fits(source, template, args.system)
    loom = build_loom(
        args, template, schema if schema is not None else (dict if args.json else None)
    )
    if args.dry_run:
        return _dry_run(loom, source, task_name, stdout)
    stopped = complete = False
    progress: Progress | None = None
    output: RunOutput | None = None
    batch_error: BatchErrorEvent | None = None
    try:
        output = RunOutput(args, source, schema, stdout)
        # --batch shows its own bar while it waits: over the job's requests, not the results.
        progress = Progress(source.count(), not (args.no_progress or args.batch), stderr)
        events: Iterator[StreamEvent]
        try:
            if args.batch:
                if args.max_cost is not None or args.max_tokens_total is not None:
                    raise LoomUsageError(
                        "--max-cost and --max-tokens-total do not apply to --batch: a provider "
                        "batch is priced when it runs (estimate first with --dry-run)"
                    )
                events = batch_events(loom, source, task_name, not args.no_progress)
            else:
                events = loom.stream_events(
                    source.records(),
                    task_name=task_name,
                    max_workers=args.workers,
                    ordered=True,
                    max_cost=args.max_cost,
                    max_tokens_total=args.max_tokens_total,
                )
        except LoomUsageError as exc:
            raise CliUsageError(str(exc)) from None
        merger = InOrder(source, output, progress)
        try:
            # The loom warns (a task name holding results of other configurations) when the
            # batch opens its store, before the first result: shown on stderr as it comes.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                for event in events:
                    if caught:
                        for warning in caught:
                            stderr.write(f"loom: warning: {warning.message}\n")
                        caught.clear()
                    if isinstance(event, TaskResultEvent):
                        merger.emit(source.record_index(event.index), event.result)
                    elif isinstance(event, BatchErrorEvent):
                        batch_error = event
            merger.emit_rest()
        except KeyboardInterrupt:
            stopped = True
        finally:
            if isinstance(events, Generator):  # cancels the calls in flight
                events.close()
        complete = not stopped and batch_error is None and source.error is None
    except KeyboardInterrupt:
        stopped = True
    finally:
        previous: Any = None
        if threading.current_thread() is threading.main_thread():
            # Ctrl-C must not cut short the draining of committed results, nor the renaming
            # (or the removal) of the output file.
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if progress is not None:
                progress.close()
            try:
                loom.close()
            finally:
                if output is not None:
                    output.target.finish(complete)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
    if output is None or progress is None:  # Ctrl-C before the first result
        stderr.write("loom: interrupted before the run started; nothing was written\n")
        return EXIT_INTERRUPTED
    return report(args, output, progress, task_name, resume, stopped, batch_error, source, stderr)


def _dry_run(loom: Any, source: InputSource, task_name: str, stdout: Any) -> int:
    """``--dry-run``: estimate the run on stdout, send nothing."""
    try:
        estimate = loom.estimate(source.records(), task_name=task_name)
    except LoomUsageError as exc:
        raise CliUsageError(str(exc)) from None
    finally:
        loom.close()
    if source.error is not None:
        raise CliUsageError(f"cannot read input {source.path!r}: {source.error}")
    print_estimate(estimate, task_name, stdout)
    return EXIT_OK
