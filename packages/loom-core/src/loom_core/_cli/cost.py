"""Cost on the command line: ``--prices``, ``--max-cost``, ``--max-tokens-total``, the dry run's
table and the cost ``loom show`` reads from stored usage."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pydantic import ValidationError

from loom_core._estimate import CostEstimate
from loom_protocol import (
    PRICES_DATE,
    LoomUsageError,
    ModelPrice,
    Usage,
    check_prices,
    find_price,
    usage_cost,
)
from loom_store import ResultRow

from .args import positive_float, positive_int
from .command import CliUsageError

__all__ = [
    "StoredCost",
    "add_budget_arguments",
    "add_prices_argument",
    "describe_stored_cost",
    "dollars",
    "load_prices",
    "print_estimate",
    "stored_cost",
]


def add_prices_argument(parser: argparse.ArgumentParser) -> None:
    """``--prices FILE``: a JSON object of model name -> price."""
    parser.add_argument(
        "--prices",
        metavar="FILE",
        help='a JSON file of prices, dollars per million tokens: {"MODEL": {"input": 0.5, '
        '"output": 1.5, "cached_input": 0.25}}; wins over the bundled table (of '
        f"{PRICES_DATE:%Y-%m-%d})",
    )


def add_budget_arguments(parser: argparse.ArgumentParser) -> None:
    """``--max-cost``, ``--max-tokens-total`` and ``--dry-run`` of ``loom run``."""
    add_prices_argument(parser)
    parser.add_argument(
        "--max-cost",
        type=positive_float,
        metavar="DOLLARS",
        help="start no call once what this run spent plus what is in flight would pass "
        "DOLLARS; the inputs left fail with budget_exceeded and are not stored (running "
        "again continues). Needs the model's price (bundled, or --prices)",
    )
    parser.add_argument(
        "--max-tokens-total",
        type=positive_int,
        metavar="TOKENS",
        help="the same cap in tokens (prompt + completion)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="send nothing: print the inputs already in the store, how many would be "
        "called, their estimated prompt tokens and cost range, then exit",
    )


def load_prices(path: str | None) -> dict[str, ModelPrice] | None:
    """The prices of ``--prices FILE`` (``None`` when not given).

    Raises:
        CliUsageError: The file cannot be read, is not JSON, or is not a valid price table.
    """
    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliUsageError(f"cannot read --prices {path!r}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise CliUsageError(f"--prices {path!r} is not JSON: {exc}") from None
    try:
        return check_prices(data)
    except LoomUsageError as exc:
        raise CliUsageError(f"--prices {path!r}: {exc}") from None


def dollars(value: float) -> str:
    """``value`` as dollars, with enough digits for a fraction of a cent."""
    return f"${value:,.2f}" if value >= 100 else f"${value:.4g}"


def _describe_price(estimate: CostEstimate) -> str:
    price = estimate.price
    if price is None:
        return "unknown (no price for this model: give one with --prices FILE)"
    where = "--prices" if estimate.price_source == "user" else f"bundled, {PRICES_DATE:%Y-%m-%d}"
    cached = "" if price.cached_input is None else f", cached {price.cached_input:g}"
    return (
        f"{estimate.price_model} ({where}): input {price.input:g}{cached}, output "
        f"{price.output:g} dollars per million tokens"
    )


def print_estimate(estimate: CostEstimate, task_name: str, out: IO[str]) -> None:
    """The dry run's table (nothing was sent)."""
    answer = (
        f"up to {estimate.max_output_tokens:,} per call (max_tokens)"
        if estimate.output_bound
        else f"~{estimate.max_output_tokens:,} per call assumed (no --max-tokens set)"
    )
    if estimate.cost_low_usd is None or estimate.cost_high_usd is None:
        cost = "unknown"
    else:
        cost = (
            f"{dollars(estimate.cost_low_usd)} to {dollars(estimate.cost_high_usd)} (low: "
            "prompts only; high: prompts and the answer tokens above; re-asks not counted)"
        )
    unrenderable = f" ({estimate.unrenderable} fail to render)" if estimate.unrenderable else ""
    rows = [
        ("task", task_name),
        ("model", estimate.model),
        ("price", _describe_price(estimate)),
        ("inputs", f"{estimate.inputs:,}"),
        ("  in the store", f"{estimate.cached:,} (served, not called)"),
        ("  duplicates", f"{estimate.duplicates:,} (called once)"),
        ("  invalid", f"{estimate.invalid:,}"),
        ("  to call", f"{estimate.uncached:,}{unrenderable}"),
        (
            "prompt tokens",
            f"~{estimate.prompt_tokens:,} (characters / 4; {estimate.images} image(s) at "
            "1,000 each)",
        ),
        ("answer tokens", answer),
        ("cost", cost),
    ]
    out.write("loom: dry run, nothing was sent\n")
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        out.write(f"{label.ljust(width)}  {value}\n")


@dataclass(frozen=True, slots=True)
class StoredCost:
    """What a task's stored calls cost at today's prices."""

    cost_usd: float
    #: Rows whose usage was priced.
    priced: int
    #: Rows with usage whose model has no known price.
    unpriced: int
    #: Models without a price, as stored.
    unknown_models: frozenset[str]


def stored_cost(
    rows: Iterable[ResultRow],
    prices: Mapping[str, ModelPrice] | None,
    config_models: Mapping[str, str],
) -> StoredCost:
    """Price each row's stored usage: by the model that answered, else its configuration's.

    The cost is not stored: it is recomputed from the stored usage at the prices known now
    (the bundled table's date, or ``--prices``), so it is always explainable by the table
    shown, and changes when the table does.
    """
    total = 0.0
    priced = unpriced = 0
    unknown: set[str] = set()
    for row in rows:
        if row.usage is None:
            continue
        try:
            usage = Usage.model_validate_json(row.usage)
        except ValidationError:
            continue  # an unreadable usage costs what nobody can tell: counted as unpriced
        configured = config_models.get(row.config_fp)
        found = find_price(row.model, prices) or find_price(configured, prices)
        if found is None:
            unpriced += 1
            unknown.add(row.model or configured or "?")
            continue
        priced += 1
        total += usage_cost(usage, found[0])
    return StoredCost(total, priced, unpriced, frozenset(unknown))


def describe_stored_cost(cost: StoredCost, prices_given: bool) -> str:
    """``loom show``'s cost line."""
    basis = "--prices, then the bundled table" if prices_given else "the bundled table"
    basis += f" of {PRICES_DATE:%Y-%m-%d}; recomputed from the stored usage"
    if cost.priced == 0 and cost.unpriced == 0:
        return "cost     $0 (no stored call reported usage)\n"
    models = ", ".join(sorted(cost.unknown_models))
    if cost.priced == 0:
        return f"cost     unknown: no price for model(s) {models} (give them with --prices FILE)\n"
    line = f"cost     {dollars(cost.cost_usd)} for {cost.priced} stored call(s) ({basis})\n"
    if cost.unpriced:
        line += (
            f"         and {cost.unpriced} call(s) of model(s) without a price ({models}): "
            "their cost is unknown\n"
        )
    return line
