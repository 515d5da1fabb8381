"""Prices per model, and what a call's usage cost: pure data and pure arithmetic.

A :class:`ModelPrice` is three numbers in US dollars per million tokens: uncached input,
cached input (prompt-cache reads), output. :data:`BUNDLED_PRICES` holds the common OpenAI and
Anthropic models as their providers published them on :data:`PRICES_DATE` (sources in
``docs/cost.md``); a model whose price could not be confirmed there is left out, not guessed.

Looking a model up (:func:`find_price`), in this order:

1. the name as it is (a user's own table first, then the bundled one);
2. without a leading ``provider/`` (``anthropic/claude-3-haiku`` → ``claude-3-haiku``);
3. without a trailing snapshot date, ``-YYYY-MM-DD`` (OpenAI) or ``-YYYYMMDD`` (Anthropic), or
   a trailing ``-latest`` (``gpt-4o-2024-08-06`` → ``gpt-4o``), except the snapshots listed in
   :data:`UNPRICED_SNAPSHOTS`, which were priced differently from their family.

There is no looser prefix rule: ``claude-opus-4`` never prices ``claude-opus-4-5``.

Provider batches (OpenAI Batch, Anthropic Message Batches) cost half of every price:
:func:`usage_cost` with ``batch=True``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ._chat import Usage
from ._checks import is_number
from ._errors import LoomUsageError

__all__ = [
    "BATCH_DISCOUNT",
    "BUNDLED_PRICES",
    "PRICES_DATE",
    "UNPRICED_SNAPSHOTS",
    "ModelPrice",
    "PriceSource",
    "check_prices",
    "find_price",
    "usage_cost",
]

#: The day the bundled prices were taken from the providers' pricing pages.
PRICES_DATE = date(2026, 12, 1)

#: What a provider batch costs, relative to the same calls made one by one.
BATCH_DISCOUNT = 0.5

PriceSource = Literal["user", "bundled"]

_PER_TOKEN = 1e-6
_FIELDS = ("input", "output", "cached_input")


class ModelPrice(BaseModel):
    """One model's prices, in US dollars per million tokens.

    Attributes:
        input: Uncached input (prompt) tokens.
        output: Output (completion) tokens, reasoning tokens included.
        cached_input: Input tokens read from the provider's prompt cache; ``None`` when the
            model has no cache price (cached tokens then cost ``input``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: float = Field(ge=0, allow_inf_nan=False, strict=True)
    output: float = Field(ge=0, allow_inf_nan=False, strict=True)
    cached_input: float | None = Field(default=None, ge=0, allow_inf_nan=False, strict=True)


def _p(input: float, cached_input: float | None, output: float) -> ModelPrice:
    return ModelPrice(input=input, cached_input=cached_input, output=output)


#: The bundled table, by model name (see the module docstring for how names are matched).
BUNDLED_PRICES: Mapping[str, ModelPrice] = {
    # OpenAI, standard tier (developers.openai.com/api/docs/pricing).
    "gpt-4o": _p(2.50, 1.25, 10.00),
    "gpt-4o-mini": _p(0.15, 0.075, 0.60),
    "gpt-4.1": _p(2.00, 0.50, 8.00),
    "gpt-4.1-mini": _p(0.40, 0.10, 1.60),
    "o1": _p(15.00, 7.50, 60.00),
    # Anthropic (platform.claude.com/docs/en/about-claude/pricing): cache hits as cached input.
    "claude-opus-4-6": _p(5.00, 0.50, 25.00),
    "claude-opus-4-5": _p(5.00, 0.50, 25.00),
    "claude-opus-4-1": _p(15.00, 1.50, 75.00),
    "claude-opus-4": _p(15.00, 1.50, 75.00),
    "claude-opus-4-0": _p(15.00, 1.50, 75.00),
    "claude-sonnet-4": _p(3.00, 0.30, 15.00),
    "claude-sonnet-4-0": _p(3.00, 0.30, 15.00),
    "claude-3-7-sonnet": _p(3.00, 0.30, 15.00),
    "claude-3-5-sonnet": _p(3.00, 0.30, 15.00),
    "claude-3-5-haiku": _p(0.80, 0.08, 4.00),
    "claude-3-opus": _p(15.00, 1.50, 75.00),
    "claude-3-haiku": _p(0.25, 0.03, 1.25),
}

#: Dated snapshots priced differently from their family's name: never priced by the date rule.
UNPRICED_SNAPSHOTS = frozenset({"gpt-4o-2024-05-13"})

_SNAPSHOT = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|latest)$")


def _candidates(model: str) -> list[str]:
    """The names ``model`` is looked up under, in order (the module docstring's rules)."""
    names = [model]
    bare = model.rpartition("/")[2]
    if bare != model:
        names.append(bare)
    if bare not in UNPRICED_SNAPSHOTS:
        family = _SNAPSHOT.sub("", bare)
        if family != bare and family:
            names.append(family)
    return names


def find_price(
    model: str | None, prices: Mapping[str, ModelPrice] | None = None
) -> tuple[ModelPrice, PriceSource, str] | None:
    """The price of ``model``: from ``prices`` (the user's) first, then the bundled table.

    Args:
        model: The model name (as sent, or as the provider answered).
        prices: The user's table (checked by :func:`check_prices`), or ``None``.

    Returns:
        ``(price, source, name)``, the name being the table's key that matched; ``None`` when
        neither table knows the model (its cost is then unknown, never 0).
    """
    if not model:
        return None
    names = _candidates(model)
    for source, table in (("user", prices or {}), ("bundled", BUNDLED_PRICES)):
        for name in names:
            price = table.get(name)
            if price is not None:
                return price, source, name  # type: ignore[return-value]
    return None


def usage_cost(usage: Usage, price: ModelPrice, *, batch: bool = False) -> float:
    """What ``usage`` cost at ``price``, in US dollars.

    Input tokens are billed uncached at ``input`` and cached (``usage.cached_tokens``, at most
    the prompt) at ``cached_input`` (``input`` when the model has none); completion tokens at
    ``output``. ``batch=True`` (a result that came from a provider batch) halves the whole.
    Long-context surcharges and cache writes are not modelled (see ``docs/cost.md``).
    """
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    cached_price = price.input if price.cached_input is None else price.cached_input
    cost = (
        (usage.prompt_tokens - cached) * price.input
        + cached * cached_price
        + usage.completion_tokens * price.output
    ) * _PER_TOKEN
    return cost * BATCH_DISCOUNT if batch else cost


def check_prices(prices: Any) -> dict[str, ModelPrice]:
    """A user's ``prices=`` as a table, or :class:`LoomUsageError` naming what is wrong.

    ``prices`` maps a model name to a :class:`ModelPrice` or a dict with the keys ``input``
    and ``output`` (required) and ``cached_input`` (optional), numbers in US dollars per
    million tokens: finite, >= 0, not a bool.

    Raises:
        LoomUsageError: not a mapping, an empty or non-string model name, an unknown or
            missing key, or a price that is negative, NaN, infinite, a bool or not a number.
    """
    if prices is None:
        return {}
    if not isinstance(prices, Mapping):
        raise LoomUsageError(
            f"prices must be a dict of model name -> price, got {type(prices).__name__}"
        )
    table: dict[str, ModelPrice] = {}
    for model, entry in prices.items():
        if not isinstance(model, str) or not model.strip():
            raise LoomUsageError(f"prices: a model name must be a non-empty string, got {model!r}")
        table[model] = _check_entry(model, entry)
    return table


def _check_entry(model: str, entry: Any) -> ModelPrice:
    if isinstance(entry, ModelPrice):
        return entry
    if not isinstance(entry, Mapping):
        raise LoomUsageError(
            f"prices[{model!r}] must be a dict with 'input', 'output' and optionally "
            f"'cached_input' (dollars per million tokens), got {type(entry).__name__}"
        )
    unknown = sorted(str(key) for key in entry if key not in _FIELDS)
    if unknown:
        raise LoomUsageError(
            f"prices[{model!r}] has unknown key(s) {', '.join(map(repr, unknown))}; "
            "the keys are 'input', 'output' and 'cached_input' (dollars per million tokens)"
        )
    for key in ("input", "output"):
        if key not in entry:
            raise LoomUsageError(f"prices[{model!r}] needs {key!r} (dollars per million tokens)")
    for key in _FIELDS:
        value = entry.get(key)
        if key == "cached_input" and value is None:
            continue
        if not (is_number(value) and math.isfinite(value) and value >= 0):
            raise LoomUsageError(
                f"prices[{model!r}][{key!r}] must be a finite number >= 0 (dollars per "
                f"million tokens), not a bool, got {value!r}"
            )
    cached = entry.get("cached_input")
    return ModelPrice(
        input=float(entry["input"]),
        output=float(entry["output"]),
        cached_input=None if cached is None else float(cached),
    )
