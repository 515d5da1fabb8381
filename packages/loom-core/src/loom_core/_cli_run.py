"""``loom run``: stream an input file through a loom and write the results in input order.

Bad records of the file never reach the engine (:class:`~loom_core._cli_io.InputSource` sets
them aside as failed results); they are merged back here, so the output has one row per
record, in the file's order, whatever order the calls finish in. A file output is written to a
temporary file and renamed over the target only once the run is complete.
"""

from __future__ import annotations

import argparse
import signal
import threading
import warnings
from collections import Counter
from collections.abc import Generator, Sequence
from typing import IO, Any

from pydantic import BaseModel
from tqdm import tqdm

from loom_protocol import (
    BatchErrorEvent,
    ErrorCode,
    LoomUsageError,
    StoreError,
    SummaryCounter,
    TaskResult,
    TaskResultEvent,
)

from ._cli_files import AtomicOutput
from ._cli_io import CsvResultWriter, InputSource, JsonlResultWriter, ResultWriter, file_format
from ._cli_setup import (
    build_loom,
    check_paths,
    check_template_fits,
    default_task_name,
    load_schema,
    read_template,
    resume_command,
)
from ._cli_store import CliUsageError

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "run"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Progress:
    """The tqdm bar on stderr: done, failed, cached and tokens."""

    def __init__(self, total: int | None, enabled: bool, stderr: IO[str]) -> None:
        self.counter = SummaryCounter()
        self._bar = tqdm(
            total=total,
            unit="task",
            desc="loom",
            file=stderr,
            disable=not enabled,
            dynamic_ncols=True,
            mininterval=0.2,
        )

    def add(self, result: TaskResult[Any]) -> None:
        self.counter.add(result)
        c = self.counter
        self._bar.set_postfix_str(
            f"ok={c.succeeded} failed={c.failed} cached={c.cached} tokens={c.total_tokens}",
            refresh=False,
        )
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


#: Failures a later run may not meet again (besides any error marked ``retryable``).
_TRANSIENT = frozenset(
    {
        ErrorCode.PROVIDER_RATE_LIMITED,
        ErrorCode.PROVIDER_TIMEOUT,
        ErrorCode.PROVIDER_UNAVAILABLE,
        ErrorCode.STORE_ERROR,
        ErrorCode.CANCELLED,
    }
)


class _Output:
    """Where ``loom run`` writes: stdout as results come, or a file replaced at the end."""

    def __init__(
        self,
        args: argparse.Namespace,
        source: InputSource,
        schema: type[BaseModel] | None,
        stdout: IO[str],
    ) -> None:
        self.path: str = args.output or "-"
        self.atomic: AtomicOutput | None = None
        if self.path == "-":
            file = stdout
        else:
            try:
                self.atomic = AtomicOutput(self.path)
            except OSError as exc:
                raise CliUsageError(f"cannot write output {self.path!r}: {exc}") from None
            file = self.atomic.file
        flush = self.atomic is None
        self.writer: ResultWriter
        if file_format(self.path, role="output") == "csv":
            columns = source.input_keys() if args.include_input else None
            self.writer = CsvResultWriter(file, schema, columns, flush_each=flush)
        else:
            self.writer = JsonlResultWriter(file, flush_each=flush)
        self.failed_codes: Counter[str] = Counter()
        self.retryable = 0

    def finish(self, complete: bool) -> None:
        """Rename the file over the target when ``complete``, else remove it."""
        if self.atomic is None:
            return
        if complete:
            try:
                self.atomic.commit()
            except OSError as exc:
                raise CliUsageError(f"cannot write output {self.path!r}: {exc}") from None
        else:
            self.atomic.discard()


def run(
    args: argparse.Namespace,
    argv: Sequence[str],
    stdin: IO[bytes],
    stdout: IO[str],
    stderr: IO[str],
) -> int:
    """Run ``loom run`` with parsed ``args``; returns the exit status.

    Raises:
        CliUsageError: Misuse found before anything was sent.
    """
    out_path = args.output or "-"
    try:
        file_format(args.input, role="input")
        file_format(out_path, role="output")
    except ValueError as exc:
        raise CliUsageError(str(exc)) from None
    check_paths(args, out_path)
    try:
        source = InputSource(args.input, stdin=stdin)
    except OSError as exc:
        raise CliUsageError(f"cannot read input {args.input!r}: {exc.strerror or exc}") from None
    task_name = args.task_name or default_task_name(args.input)
    resume = resume_command(argv, task_name, named=args.task_name is not None)

    schema = load_schema(args.schema) if args.schema is not None else None
    template = read_template(args)
    check_template_fits(source, template, args.system)
    loom = build_loom(
        args, template, schema if schema is not None else (dict if args.json else None)
    )
    stopped = complete = False
    progress: _Progress | None = None
    output: _Output | None = None
    batch_error: BatchErrorEvent | None = None
    try:
        output = _Output(args, source, schema, stdout)
        progress = _Progress(source.count(), not args.no_progress, stderr)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                events = loom.stream_events(
                    source.records(), task_name=task_name, max_workers=args.workers, ordered=True
                )
            except LoomUsageError as exc:
                raise CliUsageError(str(exc)) from None
            except StoreError as exc:
                # Before anything was sent: --db names a store that cannot be opened.
                raise CliUsageError(f"the result store cannot be used: {exc}") from None
        for warning in caught:
            stderr.write(f"loom: warning: {warning.message}\n")
        merger = _InOrder(source, output, progress)
        try:
            for event in events:
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
                    output.finish(complete)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
    if output is None or progress is None:  # Ctrl-C before the first result
        stderr.write("loom: interrupted before the run started; nothing was written\n")
        return EXIT_INTERRUPTED
    return _report(args, output, progress, task_name, resume, stopped, batch_error, source, stderr)


class _InOrder:
    """Writes results in input order: the engine's (ordered) with the bad records set aside."""

    def __init__(self, source: InputSource, output: _Output, progress: _Progress) -> None:
        self._source = source
        self._output = output
        self._progress = progress
        self._pending: tuple[int, TaskResult[Any]] | None = None

    def emit(self, index: int, result: TaskResult[Any]) -> None:
        """Write the bad records before ``index`` (all are queued by now), then ``result``."""
        self._flush_failures(index)
        self._write(index, result)

    def emit_rest(self) -> None:
        """Write the bad records still queued."""
        self._flush_failures(None)

    def _flush_failures(self, limit: int | None) -> None:
        failures = self._source.failures
        while True:
            if self._pending is None:
                if failures.empty():
                    return
                self._pending = failures.get_nowait()
            if limit is not None and self._pending[0] >= limit:
                return
            index, result = self._pending
            self._pending = None
            self._write(index, result)

    def _write(self, index: int, result: TaskResult[Any]) -> None:
        self._output.writer.write(index, result)
        self._progress.add(result)
        error = result.error
        if error is not None:
            self._output.failed_codes[error.code.value] += 1
            if error.retryable or error.code in _TRANSIENT:
                self._output.retryable += 1


def _report(
    args: argparse.Namespace,
    output: _Output,
    progress: _Progress,
    task_name: str,
    resume: str,
    stopped: bool,
    batch_error: BatchErrorEvent | None,
    source: InputSource,
    stderr: IO[str],
) -> int:
    written = output.writer.written
    where = output.path if output.atomic is not None else "stdout"
    store = f"{args.db!r} under task {task_name!r}"
    if output.atomic is not None:
        kept = f"{where} was not written" + (
            f" (the earlier {where} is left as it was)" if output.atomic.existed else ""
        )
    else:
        kept = f"{written} result(s) written to stdout"
    if stopped:
        stderr.write(
            f"loom: interrupted: {kept}; every finished task is saved in {store}.\n"
            f"Resume with (finished inputs are served from the store):\n  {resume}\n"
        )
        return EXIT_INTERRUPTED
    if source.error is not None:
        stderr.write(
            f"loom: error: cannot read input {args.input!r} further: {source.error}\n"
            f"{kept}; after fixing the input, resume with:\n  {resume}\n"
        )
        return EXIT_USAGE
    summary = progress.counter.summary()
    stderr.write(
        f"loom: {summary.total} done: {summary.succeeded} succeeded, {summary.failed} failed, "
        f"{summary.cached} cached; {summary.total_tokens} tokens; results in {where}, "
        f"stored in {store}\n"
    )
    if batch_error is not None:
        stderr.write(f"loom: error: {batch_error.error}\n{kept}; resume with:\n  {resume}\n")
        return EXIT_FAILED
    if isinstance(output.writer, CsvResultWriter) and output.writer.dropped_keys:
        dropped = ", ".join(sorted(output.writer.dropped_keys))
        stderr.write(
            f"loom: warning: input keys not among the CSV's columns were left out: {dropped} "
            "(the columns come from the first record when reading stdin)\n"
        )
    if summary.failed:
        codes = ", ".join(f"{code}: {n}" for code, n in sorted(output.failed_codes.items()))
        if output.retryable:
            stderr.write(
                f"loom: some inputs failed ({codes}); {output.retryable} of them for a "
                "transient reason: running the same command again retries them (succeeded "
                f"ones are served from the store):\n  {resume}\n"
            )
        else:
            stderr.write(
                f"loom: some inputs failed ({codes}); these failures are not transient, so "
                "running the same command again would fail the same way: fix the cause first "
                "(the template, the inputs, the schema, the model or its key). Then this "
                f"command sends only the failed inputs again:\n  {resume}\n"
            )
        return EXIT_FAILED
    return EXIT_OK
