"""The ``loom`` command line: ``run``, ``tasks``, ``show`` and ``export``.

``loom run`` streams a JSONL or CSV file through a :class:`~loom_core.TaskLoom` and writes each
result as it finishes; the store keeps every finished result, so an interrupted run resumes by
running the same command again. Exit status: 0 every input succeeded, 1 some failed, 2 a usage
error (bad arguments, an unreadable input, a bad ``--schema``, an unusable store), 130 when
interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import signal
import sys
import threading
import warnings
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel
from tqdm import tqdm

from loom_protocol import (
    BatchErrorEvent,
    LoomUsageError,
    StoreError,
    SummaryCounter,
    TaskResult,
    TaskResultEvent,
)

from ._cli_args import build_parser
from ._cli_io import (
    CsvResultWriter,
    InputSource,
    JsonlResultWriter,
    ResultWriter,
    file_format,
    open_output,
)
from ._cli_store import CliUsageError, export_task, list_tasks, open_store, show_task
from ._loom import TaskLoom

__all__ = ["build_parser", "main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def load_schema(spec: str) -> type[BaseModel]:
    """Import ``module:Model`` (the current directory first on ``sys.path``).

    Raises:
        CliUsageError: The spec is malformed, the module cannot be imported, the attribute is
            missing, or it is not a pydantic model class.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise CliUsageError(f"--schema must look like module:Model, got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise CliUsageError(
                f"--schema {spec!r}: no module named {module_name!r} "
                f"(looked in {cwd} and on sys.path)"
            ) from None
        raise CliUsageError(f"--schema {spec!r}: importing {module_name!r} failed: {exc}") from None
    except Exception as exc:
        raise CliUsageError(
            f"--schema {spec!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CliUsageError(f"--schema {spec!r}: module {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
        kind = f"the class {obj.__name__}" if isinstance(obj, type) else type(obj).__name__
        raise CliUsageError(f"--schema {spec!r} is {kind}, not a pydantic BaseModel subclass")
    return obj


def default_task_name(input_path: str) -> str:
    """The task name used when ``--task-name`` is not given: the input file's stem."""
    return "stdin" if input_path == "-" else Path(input_path).stem or "input"


def resume_command(argv: Sequence[str], task_name: str, named: bool) -> str:
    """The shell command that resumes this run (the same command, with the task name fixed)."""
    words = ["loom", *argv]
    if not named:
        words += ["--task-name", task_name]
    return shlex.join(words)


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


def _read_template(args: argparse.Namespace) -> str:
    if args.template is not None:
        return str(args.template)
    try:
        return Path(args.template_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CliUsageError(
            f"cannot read --template-file {args.template_file!r}: {reason}"
        ) from None


def _api_key(args: argparse.Namespace) -> str | None:
    if args.api_key_env is None:
        return None  # the backend reads OPENAI_API_KEY / ANTHROPIC_API_KEY itself
    key = os.environ.get(args.api_key_env)
    if not key:
        raise CliUsageError(
            f"the environment variable {args.api_key_env} (--api-key-env) is not set"
        )
    return key


def _build_loom(args: argparse.Namespace, response_model: Any) -> TaskLoom[Any]:
    llm_kwargs: dict[str, Any] = {}
    if args.temperature is not None:
        llm_kwargs["temperature"] = args.temperature
    if args.max_tokens is not None:
        llm_kwargs["max_tokens"] = args.max_tokens
    try:
        return TaskLoom(
            args.model,
            _read_template(args),
            system_prompt=args.system,
            response_model=response_model,
            max_retries=args.max_retries,
            store=args.db,
            base_url=args.base_url,
            api_key=_api_key(args),
            rpm=args.rpm,
            image_root=args.image_root,
            **llm_kwargs,
        )
    except LoomUsageError as exc:
        raise CliUsageError(str(exc)) from None


def _run(
    args: argparse.Namespace,
    argv: Sequence[str],
    stdin: IO[bytes],
    stdout: IO[str],
    stderr: IO[str],
) -> int:
    try:
        source = InputSource(args.input, stdin=stdin)
    except ValueError as exc:
        raise CliUsageError(str(exc)) from None
    except OSError as exc:
        raise CliUsageError(f"cannot read input {args.input!r}: {exc.strerror or exc}") from None
    out_path = args.output or "-"
    try:
        out_format = file_format(out_path, role="output")
    except ValueError as exc:
        raise CliUsageError(str(exc)) from None
    task_name = args.task_name or default_task_name(args.input)
    resume = resume_command(argv, task_name, named=args.task_name is not None)

    schema = load_schema(args.schema) if args.schema is not None else None
    loom = _build_loom(args, schema if schema is not None else (dict if args.json else None))
    stopped = False
    progress: _Progress | None = None
    writer: ResultWriter | None = None
    file: IO[str] | None = None
    owned = False
    try:
        try:
            file, owned = open_output(out_path, stdout)
        except OSError as exc:
            raise CliUsageError(f"cannot write output {out_path!r}: {exc}") from None
        writer = CsvResultWriter(file, schema) if out_format == "csv" else JsonlResultWriter(file)
        progress = _Progress(source.count(), not args.no_progress, stderr)
        batch_error: BatchErrorEvent | None = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                events = loom.stream_events(
                    source.records(), task_name=task_name, max_workers=args.workers
                )
            except LoomUsageError as exc:
                raise CliUsageError(str(exc)) from None
        for warning in caught:
            stderr.write(f"loom: warning: {warning.message}\n")
        try:
            for event in events:
                if isinstance(event, TaskResultEvent):
                    _emit(writer, progress, source.record_index(event.index), event.result)
                elif isinstance(event, BatchErrorEvent):
                    batch_error = event
                _drain(source, writer, progress)
            _drain(source, writer, progress)
        except KeyboardInterrupt:
            stopped = True
        finally:
            if isinstance(events, Generator):  # cancels the calls in flight
                events.close()
    except KeyboardInterrupt:
        stopped = True
    finally:
        previous: Any = None
        if stopped and threading.current_thread() is threading.main_thread():
            # A second Ctrl-C must not cut short the draining of committed results below.
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if progress is not None:
                progress.close()
            loom.close()
            if owned and file is not None:
                file.close()
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)

    counter = progress.counter if progress is not None else SummaryCounter()
    written = writer.written if writer is not None else 0
    where = "stdout" if out_path == "-" else out_path
    store = f"{args.db!r} under task {task_name!r}"
    if stopped:
        stderr.write(
            f"loom: interrupted: {written} result(s) written to {where}; every finished task "
            f"is saved in {store}.\nResume with (finished inputs are served from the store):\n"
            f"  {resume}\n"
        )
        return EXIT_INTERRUPTED
    if source.error is not None:
        stderr.write(
            f"loom: error: cannot read input {args.input!r} further: {source.error}\n"
            f"{written} result(s) written to {where}; after fixing the input, resume with:\n"
            f"  {resume}\n"
        )
        return EXIT_USAGE
    summary = counter.summary()
    stderr.write(
        f"loom: {summary.total} done: {summary.succeeded} succeeded, {summary.failed} failed, "
        f"{summary.cached} cached; {summary.total_tokens} tokens; results in {where}, "
        f"stored in {store}\n"
    )
    if batch_error is not None:
        stderr.write(f"loom: error: {batch_error.error}\nResume with:\n  {resume}\n")
        return EXIT_FAILED
    if summary.failed:
        stderr.write(
            "loom: some inputs failed; running the same command again retries them "
            f"(succeeded ones are served from the store):\n  {resume}\n"
        )
        return EXIT_FAILED
    return EXIT_OK


def _emit(writer: ResultWriter, progress: _Progress, index: int, result: TaskResult[Any]) -> None:
    writer.write(index, result)
    progress.add(result)


def _drain(source: InputSource, writer: ResultWriter, progress: _Progress) -> None:
    while not source.failures.empty():
        index, result = source.failures.get_nowait()
        _emit(writer, progress, index, result)


def _store_command(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> int:
    store = open_store(args.db)
    try:
        if args.command == "tasks":
            list_tasks(store, stdout)
        elif args.command == "show":
            show_task(store, args.task, stdout)
        else:
            count = export_task(store, args.task, args.output, args.status, stdout)
            where = "stdout" if args.output == "-" else args.output
            stderr.write(f"loom: exported {count} result(s) of {args.task!r} to {where}\n")
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
        if args.command == "run":
            return _run(args, args_list, sys.stdin.buffer, stdout, stderr)
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
