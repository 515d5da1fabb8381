"""Loom's performance and fault benchmarks, against FakeLLMServer in a separate process.

Each scenario measures Loom side by side with a baseline in the same run (this machine has
two noisy cores: absolute times drift, ratios hold) and prints PASS/FAIL against its target.

    uv run python scripts/bench.py                  # every scenario, full size
    uv run python scripts/bench.py --quick          # smaller sizes, a few minutes
    uv run python scripts/bench.py latency overhead # named scenarios only

Scenarios (each in the ``bench_scenarios`` package beside this script):

    latency    Loom's map ÷ bare aiohttp, 50 ms server latency
    overhead   Loom's rate ÷ bare aiohttp's, no latency
    store      a store-on map ÷ a store-off map, callable backend (no server)
    resume     stored results re-run through map; first new request behind them
    memory     peak RSS of stream over a generator of a million inputs
    ratelimit  rpm held at the server's limit without 429s
    hidden-limits  nothing configured vs the best fixed setting: rpm in headers, a hidden cap
    chaos      every task accounted for under injected faults
    crash      SIGKILLs lose and duplicate nothing
    failover   two endpoints, one SIGKILLed mid-run: every task succeeds, recovery time
    max_cost   max_cost at half a run's cost: how far past the cap it stopped
    ray        2 LoomMapper actors ÷ one process; the shared limit's cost (loom-ray)
    workers    1, 2, 4 worker processes on one task (PostgreSQL): no duplicates, throughput
    workers-crash  kill -9 one of 3 workers 5 times: nothing lost, one row per input
    shared-rpm 3 workers under one task rpm equal to the server's limit

Targets and sizes: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from bench_scenarios import SCENARIOS, Outcome


def main(argv: list[str] | None = None) -> int:
    """Run the named scenarios (default: all); print each verdict; 1 when any target failed."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("scenarios", nargs="*", help=f"default: all of {', '.join(SCENARIOS)}")
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    args = parser.parse_args(argv)
    unknown = [name for name in args.scenarios if name not in SCENARIOS]
    if unknown:
        parser.error(
            f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}"
        )
    names = args.scenarios or list(SCENARIOS)
    outcomes: list[Outcome] = []
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, quick={args.quick}")
    with tempfile.TemporaryDirectory(prefix="loom-bench-") as tmp:
        for name in names:
            started = time.perf_counter()
            result = SCENARIOS[name](args.quick, Path(tmp))
            for outcome in result if isinstance(result, list) else [result]:
                outcomes.append(outcome)
                verdict = "PASS" if outcome.passed else "FAIL"
                print(
                    f"[{verdict}] {outcome.name}: {outcome.measure} -> {outcome.value:,.3f} "
                    f"(target {outcome.target}) [{time.perf_counter() - started:.0f}s]"
                    + (f"\n       {outcome.detail}" if outcome.detail else ""),
                    flush=True,
                )
    failed = [o.name for o in outcomes if not o.passed]
    print(f"{len(outcomes) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
