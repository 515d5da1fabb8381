"""``loom show``: one task's counts, its failures by code, and every configuration it ran with."""

from __future__ import annotations

import argparse
import json
from typing import IO, Any

from loom_protocol import ModelPrice, redact_value
from loom_store import ConfigInfo, ResultStore

from .args import add_config_argument, add_db_argument
from .command import Console, Subcommands
from .cost import add_prices_argument, describe_stored_cost, load_prices, stored_cost
from .store import SHORT, check_task, config_model, config_when, on_store, select_config, table

__all__ = ["add_parser", "show_task"]


def add_parser(commands: Subcommands) -> None:
    """Add ``loom show`` to the sub-commands ``commands``."""
    parser = commands.add_parser(
        "show",
        help="counts, failures and configurations of one task",
        description="Show a task's result counts, its failures by error code and every "
        "configuration it has been run with (oldest first).",
    )
    parser.add_argument("task", metavar="TASK")
    add_config_argument(parser)
    add_db_argument(parser)
    add_prices_argument(parser)
    parser.set_defaults(func=_command)


def _command(args: argparse.Namespace, console: Console) -> int:
    prices = load_prices(args.prices)
    return on_store(
        args.db,
        lambda store: show_task(store, args.task, args.config, console.stdout, prices),
        console.stderr,
    )


def _short(text: str | None, limit: int = 70) -> str:
    if text is None:
        return "-"
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[: limit - 3] + "...")


def _describe_output(output: Any) -> str:
    if not isinstance(output, dict):
        return "?"
    kind = output.get("kind", "?")
    schema = output.get("schema")
    if kind == "model" and isinstance(schema, dict):
        return f"model {schema.get('title', '?')}"
    return str(kind)


def _params(config: dict[str, Any]) -> dict[str, Any]:
    params = {
        key: config.get(key) for key in ("temperature", "max_tokens") if config.get(key) is not None
    }
    params.update(config.get("params") or {})
    return params


def _describe(info: ConfigInfo, number: int, shown: bool, out: IO[str]) -> None:
    # Masked again on display: a store written before the current rules may hold a credential.
    config = redact_value(info.config) if info.config is not None else None
    mark = "*" if shown else " "
    first = f"{info.created_at:%Y-%m-%d %H:%M:%S}" if info.created_at is not None else "-"
    output = _describe_output(config.get("output")) if config is not None else "?"
    out.write(
        f"{mark} {number}. {info.config_fp[:SHORT]}  first run {first}"
        f"  last run {config_when(info)}"
        f"  model {config_model(info)}  output {output}\n"
        f"     results {info.total} ({info.succeeded} succeeded, {info.failed} failed)\n"
    )
    if config is None:
        out.write("     (not registered: results written without a run)\n")
        return
    out.write(f"     prompt {_short(config.get('prompt_template'))}\n")
    if config.get("system_prompt") is not None:
        out.write(f"     system {_short(config.get('system_prompt'))}\n")
    params = _params(config)
    if params:
        shown_params = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(params.items()))
        out.write(f"     params {shown_params}\n")


def show_task(
    store: ResultStore,
    task: str,
    config: str | None,
    out: IO[str],
    prices: dict[str, ModelPrice] | None = None,
) -> None:
    """Print the counts, cost and failures of one configuration of a task (default: the
    latest; ``"all"``: every one) and every configuration the task was run with.

    The cost is recomputed from the stored usage at today's prices (``prices`` first, then
    the bundled table): a call whose model has no known price is said to be unknown.

    Raises:
        CliUsageError: The store has no such task, or ``config`` selects no configuration.
    """
    check_task(store, task)
    fp = select_config(store, task, config)
    infos = store.configs(task)
    stats = store.stats(task, fp)
    out.write(f"task     {task}\nstore    {store.url}\n")
    if fp is None:
        out.write(f"config   all {len(infos)}\n")
    else:
        which = "the latest" if config is None else "selected"
        out.write(
            f"config   {fp[:SHORT]} ({which} of {len(infos)}; --config FP selects another, "
            "--config all every one)\n"
        )
    out.write(f"results  {stats.total} ({stats.succeeded} succeeded, {stats.failed} failed)\n")
    models = {info.config_fp: config_model(info) for info in infos}
    cost = stored_cost(store.iter_results(task, config_fp=fp), prices, models)
    out.write(describe_stored_cost(cost, prices is not None))
    if stats.failures_by_code:
        out.write("\nfailures by error code:\n")
        table([[f"  {code}", str(n)] for code, n in stats.failures_by_code.items()], out)
    out.write(f"\nconfigurations ({len(infos)}, oldest first; * = counted above):\n")
    for number, info in enumerate(infos, 1):
        _describe(info, number, fp is None or info.config_fp == fp, out)
