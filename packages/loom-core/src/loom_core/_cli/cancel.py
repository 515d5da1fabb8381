"""``loom cancel TASK``: cancel a task's provider batch job.

Nothing more of the job is submitted, and the provider is asked to stop the batches that run;
answers that finished before stay in the job and are stored by the next ``loom run ... --batch``
(the rest fail as ``cancelled``). The backend is the one of the model the task's batches were
built for (``--model`` to choose another), with the key from the environment.
"""

from __future__ import annotations

import argparse
import asyncio

from loom_backends import ANTHROPIC_API_KEY_ENV, OPENAI_API_KEY_ENV, resolve_backend
from loom_core._batch_cancel import cancel_job
from loom_protocol import LoomError, LoomUsageError, ProviderBatchBackend
from loom_store import ResultStore

from .args import add_db_argument
from .batches import list_batches
from .command import EXIT_FAILED, EXIT_OK, CliUsageError, Console, Subcommands
from .store import open_store

__all__ = ["add_parser"]


def add_parser(commands: Subcommands) -> None:
    """Add ``loom cancel`` to the sub-commands ``commands``."""
    parser = commands.add_parser(
        "cancel",
        help="cancel a task's provider batch job",
        description=(
            "Cancel the open provider batches of TASK: nothing more is submitted and the "
            "provider is asked to stop; finished answers are kept (the next `loom run ... "
            "--batch` stores them)."
        ),
        epilog=f"The API key is read from {OPENAI_API_KEY_ENV} or {ANTHROPIC_API_KEY_ENV}.",
    )
    parser.add_argument("task", metavar="TASK", help="the task whose job to cancel")
    parser.add_argument(
        "--model", "-m", help="the model (default: the one the task's batches were built for)"
    )
    parser.add_argument("--base-url", help="the provider's base URL")
    add_db_argument(parser)
    parser.set_defaults(func=_command)


def _command(args: argparse.Namespace, console: Console) -> int:
    store = open_store(args.db)
    try:
        return _cancel(store, args, console)
    finally:
        store.close()


def _cancel(store: ResultStore, args: argparse.Namespace, console: Console) -> int:
    records = store.provider_batches(args.task, open_only=True)
    if not records:
        console.stdout.write(
            f"task {args.task!r} has no open provider batches: nothing to cancel\n"
        )
        return EXIT_OK
    model = args.model or _registered_model(store, args.task, records[0].config_fp)
    try:
        backend = resolve_backend(model, base_url=args.base_url).backend
    except LoomUsageError as exc:
        raise CliUsageError(str(exc)) from None
    if not isinstance(backend, ProviderBatchBackend):
        raise CliUsageError(f"the backend of model {model!r} has no Batch API")

    async def cancel() -> int:
        try:
            return await cancel_job(store, backend, args.task)
        finally:
            await backend.aclose()

    try:
        asked = asyncio.run(cancel())
    except LoomError as exc:
        console.stderr.write(f"loom cancel: error: {exc}\n")
        return EXIT_FAILED
    console.stdout.write(
        f"cancel requested for {len(records)} open batch(es) of {args.task!r}; "
        f"{asked} asked to stop at the provider\n"
    )
    list_batches(store, args.task, console.stdout)
    return EXIT_OK


def _registered_model(store: ResultStore, task: str, config_fp: str) -> str:
    for run in store.runs(task):
        if run.config_fp == config_fp and isinstance(run.config.get("model"), str):
            return str(run.config["model"])
    raise CliUsageError(f"the model of task {task!r} is not registered; pass --model")
