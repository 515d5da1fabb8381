"""The scenarios of ``scripts/bench.py``, one module per family (see docs/benchmarks.md).

Each scenario is ``scenario(quick, workdir) -> Outcome | list[Outcome]``: it measures Loom and
its baseline in the same run and judges the figure against its target.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ._common import Outcome
from ._cost import scenario_max_cost
from ._crash import scenario_crash
from ._endpoints import scenario_failover
from ._faults import scenario_chaos, scenario_ratelimit
from ._hidden import scenario_hidden_limits
from ._memory import scenario_memory
from ._ray import scenario_ray
from ._resume import scenario_resume
from ._store import scenario_store
from ._throughput import scenario_latency, scenario_overhead
from ._workers import scenario_shared_rpm, scenario_workers, scenario_workers_crash

__all__ = ["SCENARIOS", "Outcome", "Scenario"]

Scenario = Callable[[bool, Path], Outcome | list[Outcome]]

#: Every scenario by its command-line name, in the order a full run takes them.
SCENARIOS: dict[str, Scenario] = {
    "latency": scenario_latency,
    "overhead": scenario_overhead,
    "store": scenario_store,
    "resume": scenario_resume,
    "memory": scenario_memory,
    "ratelimit": scenario_ratelimit,
    "hidden-limits": scenario_hidden_limits,
    "chaos": scenario_chaos,
    "crash": scenario_crash,
    "failover": scenario_failover,
    "max_cost": scenario_max_cost,
    "ray": scenario_ray,
    "workers": scenario_workers,
    "workers-crash": scenario_workers_crash,
    "shared-rpm": scenario_shared_rpm,
}
