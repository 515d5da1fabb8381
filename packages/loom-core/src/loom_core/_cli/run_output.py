"""What ``loom run`` writes: rows in input order, the progress bar, and the closing report.

Bad records of the file never reach the engine (:class:`~.inputs.InputSource` sets them aside
as failed results); :class:`InOrder` merges them back, so the output has one row per record,
in the file's order, whatever order the calls finish in.
"""

from __future__ import annotations

import argparse
from collections import Counter
from typing import IO, Any

from pydantic import BaseModel
from tqdm import tqdm

from loom_protocol import (
    BatchErrorEvent,
    ErrorCode,
    SummaryCounter,
    TaskResult,
    record_columns,
)

from .command import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE
from .cost import dollars
from .inputs import InputSource
from .writers import Output, row_writer

__all__ = ["InOrder", "Progress", "RunOutput", "report"]


class Progress:
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
        """Count one result written."""
        self.counter.add(result)
        c = self.counter
        cost = "" if not c.cost_usd else f" cost={dollars(c.cost_usd)}"
        self._bar.set_postfix_str(
            f"ok={c.succeeded} failed={c.failed} cached={c.cached} tokens={c.total_tokens}{cost}",
            refresh=False,
        )
        self._bar.update(1)

    def close(self) -> None:
        """Close the bar."""
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


class RunOutput:
    """Where ``loom run`` writes: stdout as results come, or a file replaced at the end.

    A JSONL row is ``{"index": i, ...TaskResult.model_dump(mode="json")}`` (it always holds the
    input, as ``input_data``). A CSV row is the result's flat record plus ``index``, under a
    header fixed up front (a stream cannot grow its header): the input's columns with
    ``--include-input``, then the data: a ``--schema`` model's fields; for text and for dicts
    (whose keys are unknown until the answers come) one column ``data``. Input keys outside
    the header are counted in :attr:`dropped_keys`.
    """

    def __init__(
        self,
        args: argparse.Namespace,
        source: InputSource,
        schema: type[BaseModel] | None,
        stdout: IO[str],
    ) -> None:
        self.target = Output(args.output or "-", stdout)
        self._csv = self.target.format == "csv"
        input_keys = source.input_keys() if self._csv and args.include_input else None
        self._input_keys = None if input_keys is None else frozenset(input_keys)
        self._flatten = schema is not None
        data_keys = list(schema.model_fields) if schema is not None else ["data"]
        self.rows = row_writer(
            self.target,
            lambda: ["index", *record_columns(input_keys, data_keys)],
            flush_each=self.target.atomic is None,
        )
        self.dropped_keys: set[str] = set()
        self.failed_codes: Counter[str] = Counter()
        self.retryable = 0

    def write(self, index: int, result: TaskResult[Any]) -> None:
        """Write ``result`` of the input at ``index``, and count its failure if any."""
        if self._csv:
            known = self._input_keys
            record = result.to_record(include_input=known is not None, flatten_data=self._flatten)
            error = result.error
            invalid = error is not None and error.code is ErrorCode.INPUT_INVALID
            if known is not None and not invalid:
                self.dropped_keys.update(str(k) for k in result.input_data if k not in known)
        else:
            record = result.model_dump(mode="json")
        self.rows.write({"index": index, **record})
        error = result.error
        if error is not None:
            self.failed_codes[error.code.value] += 1
            if error.retryable or error.code in _TRANSIENT:
                self.retryable += 1


class InOrder:
    """Writes results in input order: the engine's (ordered) with the bad records set aside."""

    def __init__(self, source: InputSource, output: RunOutput, progress: Progress) -> None:
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
        self._output.write(index, result)
        self._progress.add(result)


def report(
    args: argparse.Namespace,
    output: RunOutput,
    progress: Progress,
    task_name: str,
    resume: str,
    stopped: bool,
    batch_error: BatchErrorEvent | None,
    source: InputSource,
    stderr: IO[str],
) -> int:
    """Tell how the run ended on ``stderr``, and how to resume it; returns the exit status."""
    written = output.rows.written
    where = output.target.where
    atomic = output.target.atomic
    store = f"{args.db!r} under task {task_name!r}"
    if atomic is not None:
        kept = f"{where} was not written" + (
            f" (the earlier {where} is left as it was)" if atomic.existed else ""
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
    cost = "" if summary.cost_usd is None else f", {dollars(summary.cost_usd)}"
    batched = f", {summary.provider_batch} by provider batch" if summary.provider_batch else ""
    stderr.write(
        f"loom: {summary.total} done: {summary.succeeded} succeeded, {summary.failed} failed, "
        f"{summary.cached} cached{batched}; {summary.total_tokens} tokens{cost}; "
        f"results in {where}, "
        f"stored in {store}\n"
    )
    budget = output.failed_codes.get(ErrorCode.BUDGET_EXCEEDED.value, 0)
    if budget:
        stderr.write(
            f"loom: the spending cap was reached: {budget} input(s) were not called (nothing "
            "stored for them); the same command continues with them, within a new cap:\n"
            f"  {resume}\n"
        )
    if batch_error is not None:
        stderr.write(f"loom: error: {batch_error.error}\n{kept}; resume with:\n  {resume}\n")
        return EXIT_FAILED
    if output.dropped_keys:
        dropped = ", ".join(sorted(output.dropped_keys))
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
