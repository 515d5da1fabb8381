"""Prices: the user's table checked hard, the bundled table's lookup rules, what usage costs."""

from __future__ import annotations

import math
from typing import Any

import pytest

from loom_protocol import (
    BATCH_DISCOUNT,
    BUNDLED_PRICES,
    PRICES_DATE,
    BatchSummary,
    ErrorCode,
    LoomUsageError,
    ModelPrice,
    TaskResult,
    Usage,
    check_prices,
    find_price,
    usage_cost,
)

# -- the user's table -------------------------------------------------------------------------


def test_a_good_table_is_read() -> None:
    table = check_prices(
        {"m": {"input": 1, "output": 2.5, "cached_input": 0.5}, "n": {"input": 0, "output": 0}}
    )
    assert table["m"] == ModelPrice(input=1.0, output=2.5, cached_input=0.5)
    assert table["n"] == ModelPrice(input=0.0, output=0.0, cached_input=None)
    assert check_prices(None) == {}
    price = ModelPrice(input=1.0, output=1.0)
    assert check_prices({"p": price})["p"] is price


@pytest.mark.parametrize(
    ("prices", "said"),
    [
        ([("m", 1)], "prices must be a dict"),
        ({"": {"input": 1, "output": 1}}, "non-empty string"),
        ({3: {"input": 1, "output": 1}}, "non-empty string"),
        ({"m": 1.0}, "prices['m'] must be a dict"),
        ({"m": {"input": 1}}, "prices['m'] needs 'output'"),
        ({"m": {"output": 1}}, "prices['m'] needs 'input'"),
        ({"m": {"input": 1, "output": 1, "cache": 1}}, "unknown key(s) 'cache'"),
        ({"m": {"input": -1, "output": 1}}, "prices['m']['input'] must be a finite number >= 0"),
        ({"m": {"input": 1, "output": math.nan}}, "prices['m']['output']"),
        ({"m": {"input": math.inf, "output": 1}}, "prices['m']['input']"),
        ({"m": {"input": True, "output": 1}}, "not a bool, got True"),
        ({"m": {"input": 1, "output": "2"}}, "got '2'"),
        ({"m": {"input": 1, "output": 1, "cached_input": -0.1}}, "['cached_input']"),
    ],
)
def test_bad_tables_are_refused_naming_the_problem(prices: Any, said: str) -> None:
    with pytest.raises(LoomUsageError) as caught:
        check_prices(prices)
    assert said in str(caught.value)


def test_model_price_itself_refuses_bools_and_nan() -> None:
    with pytest.raises(ValueError):
        ModelPrice(input=True, output=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ModelPrice(input=math.nan, output=1.0)
    with pytest.raises(ValueError):
        ModelPrice(input=1.0, output=1.0, extra=1.0)  # type: ignore[call-arg]


# -- lookup -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "key"),
    [
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("openai/gpt-4.1-2025-04-14", "gpt-4.1"),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
        ("anthropic/claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("claude-opus-4-5-20251101", "claude-opus-4-5"),
    ],
)
def test_bundled_lookup_exact_and_by_snapshot(model: str, key: str) -> None:
    found = find_price(model)
    assert found is not None
    assert found == (BUNDLED_PRICES[key], "bundled", key)


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o-2024-05-13",  # priced differently from gpt-4o: never by the date rule
        "gpt-4o-turbo",  # no looser prefix rule
        "claude-opus-4-9",  # not claude-opus-4
        "llama-3-70b",
        "",
        None,
    ],
)
def test_unknown_models_have_no_price(model: str | None) -> None:
    assert find_price(model) is None


def test_the_users_table_wins_and_uses_the_same_rules() -> None:
    mine = {"gpt-4o": ModelPrice(input=9.0, output=9.0), "local": ModelPrice(input=1, output=1)}
    assert find_price("gpt-4o-2024-11-20", mine) == (mine["gpt-4o"], "user", "gpt-4o")
    assert find_price("vllm/local", mine) == (mine["local"], "user", "local")
    assert find_price("gpt-4o-mini", mine) == (
        BUNDLED_PRICES["gpt-4o-mini"],
        "bundled",
        "gpt-4o-mini",
    )


def test_the_bundled_table_is_dated_and_sane() -> None:
    assert PRICES_DATE.year >= 2025
    for name, price in BUNDLED_PRICES.items():
        assert price.output >= price.input > 0, name
        assert price.cached_input is None or price.cached_input <= price.input, name


# -- cost -------------------------------------------------------------------------------------


def test_usage_cost_splits_cached_input_and_batch_halves() -> None:
    price = ModelPrice(input=2.0, output=8.0, cached_input=0.5)
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=500_000, cached_tokens=400_000)
    assert usage_cost(usage, price) == pytest.approx(0.6 * 2 + 0.4 * 0.5 + 0.5 * 8)
    assert usage_cost(usage, price, batch=True) == pytest.approx(
        (0.6 * 2 + 0.4 * 0.5 + 0.5 * 8) * BATCH_DISCOUNT
    )
    # No cache price: cached tokens cost the input price; more cached than prompt is clamped.
    plain = ModelPrice(input=2.0, output=8.0)
    assert usage_cost(usage, plain) == pytest.approx(2.0 + 4.0)
    odd = Usage(prompt_tokens=10, completion_tokens=0, cached_tokens=50)
    assert usage_cost(odd, price) == pytest.approx(10 * 0.5e-6)


def test_usage_cached_tokens_are_additive_and_old_rows_read() -> None:
    old = Usage.model_validate({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
    assert old.cached_tokens == 0
    both = old + Usage(prompt_tokens=5, cached_tokens=2)
    assert (both.prompt_tokens, both.cached_tokens, both.total_tokens) == (8, 2, 12)
    with pytest.raises(ValueError, match="cached_tokens must be an int"):
        Usage.model_validate({"prompt_tokens": 1, "cached_tokens": True})


def _result(task_id: str, cost: float | None, *, cached: bool = False) -> TaskResult[Any]:
    return TaskResult(
        task_id=task_id,
        is_success=True,
        data="x",
        cached=cached,
        usage=Usage(prompt_tokens=10, completion_tokens=5),
        latency_ms=float(len(task_id)),
        cost_usd=cost,
    )


def test_summary_cost_counts_new_calls_only_and_unknown_is_none() -> None:
    known = BatchSummary.from_results(
        [_result("a", 0.25), _result("bb", 0.5), _result("ccc", 9.0, cached=True)]
    )
    assert known.cost_usd == pytest.approx(0.75)
    unknown = BatchSummary.from_results([_result("a", 0.25), _result("bb", None)])
    assert unknown.cost_usd is None
    nothing_called = BatchSummary.from_results([_result("a", None, cached=True)])
    assert nothing_called.cost_usd == 0.0


def test_budget_exceeded_is_an_additive_error_code() -> None:
    assert ErrorCode("budget_exceeded") is ErrorCode.BUDGET_EXCEEDED
    result = TaskResult[Any].model_validate_json(
        _result("a", 1.5).model_dump_json().replace('"cost_usd":1.5', '"cost_usd":null')
    )
    assert result.cost_usd is None
    # A result written before cost_usd existed still reads.
    old = _result("a", None).model_dump(mode="json")
    del old["cost_usd"]
    assert TaskResult[Any].model_validate(old).cost_usd is None
