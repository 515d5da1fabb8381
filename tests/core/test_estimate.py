"""``estimate`` / ``aestimate``: what a batch would call and cost, without calling."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from loom_backends.testing import FakeLLMServer
from loom_core import CostEstimate
from loom_core._pricing import DEFAULT_OUTPUT_TOKENS, IMAGE_TOKENS
from loom_protocol import BUNDLED_PRICES, PRICES_DATE, LoomUsageError, ModelPrice

from .conftest import LoomFactory

PRICES = {"fake-model": {"input": 1.0, "output": 2.0}}


def tokens(text: str) -> int:
    """The documented estimate of one user message: characters / 4, plus 4 for the message."""
    return math.ceil(len(text) / 4) + 4


def test_estimate_counts_and_tokens(server: FakeLLMServer, make_loom: LoomFactory) -> None:
    loom = make_loom(server, prices=PRICES, max_tokens=100)
    texts = ["a" * 40, "b" * 41, "c" * 400]
    data: list[Any] = [*texts, texts[0], 42, {"text": "d" * 8, "images": ["x.png", "y.png"]}]
    estimate = loom.estimate(data)
    prompt = sum(tokens(t) for t in texts) + tokens("d" * 8) + 2 * IMAGE_TOKENS
    assert estimate.price == ModelPrice(input=1.0, output=2.0)
    assert estimate.cost_low_usd == pytest.approx(prompt * 1e-6)
    assert estimate.cost_high_usd == pytest.approx(prompt * 1e-6 + 4 * 100 * 2e-6)
    assert estimate == CostEstimate(
        model="fake-model",
        inputs=6,
        invalid=1,
        cached=0,
        duplicates=1,
        uncached=4,
        unrenderable=0,
        calls=4,
        prompt_tokens=prompt,
        images=2,
        max_output_tokens=100,
        output_bound=True,
        cost_low_usd=estimate.cost_low_usd,
        cost_high_usd=estimate.cost_high_usd,
        price=estimate.price,
        price_source="user",
        price_model="fake-model",
        prices_date=PRICES_DATE,
    )
    assert server.request_count == 0  # nothing was called (the images were not read either)


def test_estimate_sees_the_store(server: FakeLLMServer, make_loom: LoomFactory) -> None:
    loom = make_loom(server, prices=PRICES)
    texts = [f"input {i}" for i in range(10)]
    loom.map(texts[:4], task_name="est")
    calls_before = server.request_count
    estimate = loom.estimate(texts, task_name="est")
    assert (estimate.inputs, estimate.cached, estimate.uncached) == (10, 4, 6)
    assert estimate.prompt_tokens == sum(tokens(t) for t in texts[4:])
    # No max_tokens: the high end assumes the documented default answer.
    assert (estimate.max_output_tokens, estimate.output_bound) == (DEFAULT_OUTPUT_TOKENS, False)
    assert estimate.cost_high_usd == pytest.approx(
        estimate.prompt_tokens * 1e-6 + 6 * DEFAULT_OUTPUT_TOKENS * 2e-6
    )
    assert server.request_count == calls_before
    # After the run, the estimate says there is nothing left to call.
    loom.map(texts, task_name="est")
    done = loom.estimate(texts, task_name="est")
    assert (done.cached, done.uncached, done.cost_low_usd, done.cost_high_usd) == (10, 0, 0, 0)


def test_estimate_template_errors_and_unknown_price(
    server: FakeLLMServer, make_loom: LoomFactory
) -> None:
    loom = make_loom(server, model="my-model", prompt_template="{{ text }} {{ other }}")
    estimate = loom.estimate(["no other", {"text": "t", "other": "o"}])
    assert (estimate.uncached, estimate.unrenderable, estimate.calls) == (2, 1, 1)
    assert estimate.prompt_tokens == tokens("t o")
    assert estimate.price is None and estimate.cost_low_usd is None
    assert estimate.cost_high_usd is None


def test_estimate_with_a_bundled_price(server: FakeLLMServer, make_loom: LoomFactory) -> None:
    estimate = make_loom(server, model="gpt-4o-2024-08-06").estimate(["x" * 4000])
    assert (estimate.price, estimate.price_source) == (BUNDLED_PRICES["gpt-4o"], "bundled")
    assert estimate.cost_low_usd == pytest.approx(tokens("x" * 4000) * 2.5e-6)


def test_estimate_creates_no_store_and_registers_nothing(
    server: FakeLLMServer, make_loom: LoomFactory, tmp_path: Path
) -> None:
    db = tmp_path / "fresh.db"
    estimate = make_loom(server, db_path=db).estimate(["a", "b"], task_name="t")
    assert estimate.uncached == 2
    assert not db.exists()


async def test_aestimate_takes_an_async_iterable(
    server: FakeLLMServer, amake_loom: LoomFactory
) -> None:
    async def texts() -> Any:
        for i in range(2500):  # more than one chunk
            yield f"text {i % 2000}"

    estimate = await amake_loom(server, prices=PRICES).aestimate(texts())
    assert (estimate.inputs, estimate.duplicates, estimate.uncached) == (2500, 500, 2000)


def test_estimate_refuses_misuse(server: FakeLLMServer, make_loom: LoomFactory) -> None:
    loom = make_loom(server)
    with pytest.raises(LoomUsageError, match="single str"):
        loom.estimate("one string")  # type: ignore[arg-type]
    with pytest.raises(LoomUsageError, match="task_name"):
        loom.estimate(["x"], task_name="")
