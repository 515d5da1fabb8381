"""``estimate``: what a batch would send and cost, without calling anything.

The inputs are read the way a batch reads them (admission, task ids, duplicates, the store's
hits of this configuration, a chunk at a time); each input the store does not answer is
rendered, and its prompt estimated by :func:`~._pricing.prompt_tokens` (images counted, not
read). The cost range: *low* is the prompts alone, *high* adds ``max_tokens`` per call (or
:data:`~._pricing.DEFAULT_OUTPUT_TOKENS` when the loom sets none). Re-asks and retries are
not in the range.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from loom_protocol import PRICES_DATE, ModelPrice, PriceSource, Usage, usage_cost

from ._images import ImageError
from ._inputs import prepare_input
from ._persist import ResultCache
from ._pricing import DEFAULT_OUTPUT_TOKENS, Pricer, prompt_tokens
from ._render import TemplateRenderError
from ._request import RequestBuilder

__all__ = ["CostEstimate", "estimate_batch"]

_CHUNK = 1024


class CostEstimate(BaseModel):
    """What a batch would do and cost, estimated without calling (``TaskLoom.estimate``).

    Attributes:
        model: The loom's model.
        inputs: Inputs read.
        invalid: Inputs that are not valid inputs (``input_invalid``: never called).
        cached: Inputs the store already answers (this configuration's successes).
        duplicates: Inputs equal to an earlier input (called once for all).
        uncached: Distinct inputs that would be called.
        unrenderable: Of those, inputs whose template or images fail (never called).
        calls: Calls the batch would make at least: ``uncached - unrenderable``.
        prompt_tokens: The estimated input tokens of those calls (characters / 4, 4 per
            message, 1,000 per image; see docs/cost.md).
        images: Images among them.
        max_output_tokens: Tokens per answer assumed for the high end: the loom's
            ``max_tokens``, or ``DEFAULT_OUTPUT_TOKENS`` when it sets none.
        output_bound: Whether ``max_output_tokens`` is the loom's ``max_tokens`` (a bound),
            rather than the default (a guess).
        cost_low_usd: The prompts' cost, in dollars (``None``: no known price).
        cost_high_usd: Prompts plus ``max_output_tokens`` per call.
        price: The price used, dollars per million tokens (``None``: unknown).
        price_source: ``"user"`` (``prices=``) or ``"bundled"`` (the table of ``prices_date``).
        price_model: The name the price was found under.
        prices_date: The day the bundled prices were taken.
    """

    model_config = ConfigDict(frozen=True)

    model: str
    inputs: int = Field(ge=0)
    invalid: int = Field(ge=0)
    cached: int = Field(ge=0)
    duplicates: int = Field(ge=0)
    uncached: int = Field(ge=0)
    unrenderable: int = Field(ge=0)
    calls: int = Field(ge=0)
    prompt_tokens: int = Field(ge=0)
    images: int = Field(ge=0)
    max_output_tokens: int = Field(ge=0)
    output_bound: bool
    cost_low_usd: float | None
    cost_high_usd: float | None
    price: ModelPrice | None
    price_source: PriceSource | None
    price_model: str | None
    prices_date: date = PRICES_DATE


async def estimate_batch(
    inputs: Iterable[Any] | AsyncIterable[Any],
    *,
    requests: RequestBuilder,
    cache: ResultCache | None,
    pricer: Pricer,
) -> CostEstimate:
    """Estimate a batch of ``inputs`` (see :class:`CostEstimate` and the module docstring).

    Args:
        inputs: The inputs, as ``map`` takes them.
        requests: The loom's request builder (its templates, its ``max_tokens``).
        cache: The store's view of the task name (``None``: nothing is cached).
        pricer: The loom's prices.
    """
    counts = {"inputs": 0, "invalid": 0, "cached": 0, "duplicates": 0, "unrenderable": 0}
    prompt = images = uncached = 0
    seen: set[str] = set()
    async for chunk in _chunks(inputs):
        counts["inputs"] += len(chunk)
        fresh: dict[str, dict[str, Any]] = {}
        for raw in chunk:
            prepared = prepare_input(raw)
            if prepared.failure is not None:
                counts["invalid"] += 1
            elif prepared.task_id in seen or prepared.task_id in fresh:
                counts["duplicates"] += 1
            else:
                fresh[prepared.task_id] = prepared.data
        seen.update(fresh)
        hits = (
            await cache.lookup(list(fresh), list(fresh.values()))
            if cache is not None and fresh
            else [None] * len(fresh)
        )
        for data, hit in zip(fresh.values(), hits, strict=True):
            if hit is not None:
                counts["cached"] += 1
                continue
            uncached += 1
            try:
                messages, refs = requests.messages(data)
            except (TemplateRenderError, ImageError):
                counts["unrenderable"] += 1
                continue
            images += len(refs)
            prompt += prompt_tokens(messages, requests.response_format, len(refs))
    calls = uncached - counts["unrenderable"]
    max_tokens = requests.max_tokens
    output = max_tokens if max_tokens is not None else DEFAULT_OUTPUT_TOKENS
    found = pricer.find(pricer.model)
    low = high = None
    if found is not None:
        low = usage_cost(Usage(prompt_tokens=prompt), found[0])
        high = usage_cost(Usage(prompt_tokens=prompt, completion_tokens=output * calls), found[0])
    return CostEstimate(
        model=pricer.model,
        uncached=uncached,
        calls=calls,
        prompt_tokens=prompt,
        images=images,
        max_output_tokens=output,
        output_bound=max_tokens is not None,
        cost_low_usd=low,
        cost_high_usd=high,
        price=None if found is None else found[0],
        price_source=None if found is None else found[1],
        price_model=None if found is None else found[2],
        **counts,
    )


async def _chunks(inputs: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[list[Any]]:
    """``inputs`` a chunk at a time (bounded memory for a generator of millions)."""
    if isinstance(inputs, AsyncIterable):
        chunk: list[Any] = []
        async for item in inputs:
            chunk.append(item)
            if len(chunk) == _CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
        return
    iterator = iter(inputs)
    while chunk := list(itertools.islice(iterator, _CHUNK)):
        yield chunk
