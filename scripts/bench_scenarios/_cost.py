"""The spending cap: ``max_cost`` at half of a run's cost stops it within one in-flight window."""

from __future__ import annotations

from pathlib import Path

from loom_backends.testing import FakeLLMServer

from ._common import MODEL, Outcome, inputs, new_loom

__all__ = ["scenario_max_cost"]

#: gpt-4o's prices, dollars per million tokens: any price gives the same ratios.
PRICES = {MODEL: {"input": 2.5, "output": 10.0}}


def scenario_max_cost(quick: bool, workdir: Path) -> Outcome:
    """A run's cost measured, then a fresh run of the same inputs capped at half of it.

    The figure is how far past the cap the capped run's spending ended, in units of the
    in-flight window (``max_workers`` calls at the run's mean cost per call): the target is
    at most one window past the cap (0 or below: it stopped before the cap). A third run with
    the full cost as its cap must then finish every input the capped run left.
    """
    n, workers = (400, 16) if quick else (2000, 32)
    db = workdir / "cost.db"
    items = inputs(n, "cost")
    with (
        FakeLLMServer(latency=0.02, jitter=0.01, process=True) as server,
        new_loom(server, db, prices=PRICES) as loom,
    ):
        full = loom.map(items, task_name="cost-full", max_workers=workers)
        cost = full.summary.cost_usd
        if cost is None or full.failed():
            raise RuntimeError(f"the uncapped run failed or has no cost: {full.summary}")
        cap = cost / 2
        capped = loom.map(items, task_name="cost-half", max_workers=workers, max_cost=cap)
        rest = loom.map(items, task_name="cost-half", max_workers=workers, max_cost=cost)
    per_call = cost / n
    window = workers * per_call
    spent = capped.summary.cost_usd or 0.0
    past = (spent - cap) / window
    stopped = [r for r in capped if r.error is not None and r.error.code == "budget_exceeded"]
    others = [r for r in capped if not r.is_success and r not in stopped]
    finished = not rest.failed() and rest.summary.cached == capped.summary.succeeded
    ok = -1.0 <= past <= 1.0 and bool(stopped) and not others and finished
    return Outcome(
        "max_cost",
        f"cap ${cap:.4f} (half of ${cost:.4f}, {n} calls, {workers} workers): spent "
        f"${spent:.4f} in {capped.summary.succeeded} calls, {len(stopped)} budget_exceeded; "
        "past the cap, in in-flight windows",
        past,
        "within [-1, 1] window of the cap; the rerun finishes the rest",
        ok,
        f"window = {workers} x ${per_call:.6f}; rerun with the full cost as cap: "
        f"{rest.summary.succeeded - rest.summary.cached} new calls, "
        f"{len(rest.failed())} failed",
    )
