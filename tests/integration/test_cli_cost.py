"""``loom run --dry-run / --max-cost / --max-tokens-total / --prices`` and the cost in ``show``."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from loom_backends.testing import FakeLLMServer, FakeReply, RecordedRequest
from loom_core._cli.cost import describe_stored_cost, stored_cost
from loom_protocol import check_prices
from loom_store import ResultRow, ResultStore

from .conftest import CliRunner, read_jsonl, write_jsonl

N = 30
PRICES = {"fake-model": {"input": 1.0, "output": 2.0}}
CALL = 0.002  # 1,000 tokens in and 500 out at PRICES


def scripted(_req: RecordedRequest) -> FakeReply:
    return FakeReply(content="ok", usage={"prompt_tokens": 1000, "completion_tokens": 500})


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(scripted) as srv:
        yield srv


@pytest.fixture
def files(tmp_path: Path) -> Path:
    write_jsonl(tmp_path / "items.jsonl", [f"item {i:02d}" for i in range(N)])
    (tmp_path / "prices.json").write_text(json.dumps(PRICES), encoding="utf-8")
    return tmp_path


def _run(srv: FakeLLMServer, *extra: str) -> list[str]:
    return [
        "run", "items.jsonl", "--model", "fake-model", "--base-url", srv.base_url,
        "-t", "Say {{ text }}", "--prices", "prices.json", "--no-progress", *extra,
    ]  # fmt: skip


def test_dry_run_reports_and_sends_nothing(
    server: FakeLLMServer, run_cli: CliRunner, files: Path
) -> None:
    done = run_cli(*_run(server, "--dry-run", "--max-tokens", "500"))
    assert done.returncode == 0, done.stderr
    assert server.request_count == 0
    assert not (files / ".loom.db").exists()  # a dry run creates no store
    out = done.stdout
    assert "dry run, nothing was sent" in out
    prompt = N * (math.ceil(len("Say item 00") / 4) + 4)
    assert f"~{prompt:,} (characters / 4" in out
    assert re.search(rf"to call +{N}\n", out)
    low, high = prompt * 1e-6, prompt * 1e-6 + N * 500 * 2e-6
    assert f"${low:.4g} to ${high:.4g}" in out
    assert "fake-model (--prices)" in out

    # After half the inputs ran, the dry run sees them in the store.
    write_jsonl(files / "half.jsonl", [f"item {i:02d}" for i in range(N // 2)])
    args = _run(server)
    args[1] = "half.jsonl"
    assert run_cli(*args, "--task-name", "items").returncode == 0
    again = run_cli(*_run(server, "--dry-run"))
    assert re.search(rf"in the store +{N // 2} \(served", again.stdout)
    assert "no --max-tokens set" in again.stdout


def test_max_cost_stops_the_run_and_the_same_command_continues(
    server: FakeLLMServer, run_cli: CliRunner, files: Path
) -> None:
    cap = N * CALL / 2
    args = _run(server, "--max-cost", str(cap), "--max-tokens", "500", "-w", "3", "-o", "o.jsonl")
    first = run_cli(*args)
    assert first.returncode == 1, first.stderr
    assert "the spending cap was reached" in first.stderr
    rows = read_jsonl(files / "o.jsonl")
    done = sum(row["is_success"] for row in rows)
    assert cap - 3 * CALL <= done * CALL <= cap + 3 * CALL
    codes = {row["error"]["code"] for row in rows if not row["is_success"]}
    assert codes == {"budget_exceeded"}
    with ResultStore(files / ".loom.db") as store:
        stats = store.stats("items")
    assert (stats.succeeded, stats.failed) == (done, 0)
    # The same command again: the rest is called, within a new cap of the same size.
    second = run_cli(*args)
    assert second.returncode == 0, second.stderr
    assert server.request_count == N
    show = run_cli("show", "items", "--prices", "prices.json")
    assert show.returncode == 0, show.stderr
    assert f"cost     ${N * CALL:.4g} for {N} stored call(s)" in show.stdout


def test_max_cost_needs_a_price_and_tokens_do_not(
    server: FakeLLMServer, run_cli: CliRunner, files: Path
) -> None:
    args = _run(server, "--max-cost", "1")
    args.remove("--prices")
    args.remove("prices.json")
    refused = run_cli(*args)
    assert refused.returncode == 2
    assert "max_cost needs the price of model 'fake-model'" in refused.stderr
    assert server.request_count == 0
    tokens = run_cli(*_run(server, "--max-tokens-total", "15000", "--max-tokens", "500", "-w", "1"))
    assert tokens.returncode == 1
    assert server.request_count == 10  # 15,000 tokens at 1,500 a call
    show = run_cli("show", "items")  # no --prices: fake-model has no bundled price
    assert "cost     unknown: no price for model(s) fake-model" in show.stdout


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ("{", "is not JSON"),
        ('{"fake-model": {"input": -1, "output": 1}}', "['input'] must be a finite number"),
        ('{"fake-model": {"input": 1, "output": 1, "cache": 1}}', "unknown key(s) 'cache'"),
        ("[1]", "prices must be a dict"),
    ],
)
def test_bad_prices_file(
    server: FakeLLMServer, run_cli: CliRunner, files: Path, content: str, said: str
) -> None:
    (files / "prices.json").write_text(content, encoding="utf-8")
    done = run_cli(*_run(server, "--dry-run"))
    assert done.returncode == 2
    assert said in done.stderr


def _row(task_id: str, model: str | None, usage: str | None, fp: str = "fp1") -> ResultRow:
    return ResultRow("t", task_id, fp, "succeeded", data="1", usage=usage, model=model)


def test_stored_cost_prices_each_row_by_its_model_and_names_the_unknown() -> None:
    usage = json.dumps({"prompt_tokens": 1_000_000, "completion_tokens": 0})
    mine = check_prices({"mine": {"input": 1.0, "output": 1.0}})
    rows = [
        _row("a", "gpt-4o-2024-08-06", usage),  # bundled, by its snapshot rule: $2.50
        _row("b", "served-name", usage, fp="fp2"),  # priced by its configuration's model: $1
        _row("c", "mystery", usage, fp="fp3"),  # no price, and an unregistered configuration
        _row("f", "mystery", usage),  # not priced itself: by its configuration's gpt-4o
        _row("d", "gpt-4o", None),  # no usage: nothing to price
        _row("e", "gpt-4o", "not json"),  # unreadable usage: skipped
    ]
    cost = stored_cost(rows, mine, {"fp1": "gpt-4o", "fp2": "mine"})
    assert (cost.priced, cost.unpriced, cost.unknown_models) == (3, 1, frozenset({"mystery"}))
    assert cost.cost_usd == pytest.approx(6.0)
    line = describe_stored_cost(cost, prices_given=True)
    assert line.startswith("cost     $6 for 3 stored call(s) (--prices, then the bundled")
    assert "1 call(s) of model(s) without a price (mystery)" in line
    assert describe_stored_cost(stored_cost([], None, {}), False).startswith("cost     $0")
