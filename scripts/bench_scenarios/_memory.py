"""Memory: the peak RSS of ``stream`` over a generator of a million inputs, in a child process."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from ._common import Outcome

__all__ = ["scenario_memory"]


_MEMORY_CHILD = """
import asyncio, sys
from loom_backends import CallableBackend
from loom_core import TaskLoom

n, ordered = int(sys.argv[1]), sys.argv[2] == "ordered"

async def instant(request):
    return '{"echo": "ok"}'

def gen():
    for i in range(n):
        yield {"text": f"document number {i} " + "x" * 200}

with TaskLoom("local", "{{ text }}", response_model=dict, backend=CallableBackend(instant)) as loom:
    count = sum(1 for r in loom.stream(gen(), max_workers=64, ordered=ordered) if r.is_success)
assert count == n, count
# VmHWM is the peak RSS of this process's own address space. ru_maxrss is not: Linux carries
# it over fork and exec, so a child started by a large parent reports the parent's peak.
with open("/proc/self/status") as status:
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(peak_kb / 1024)
"""


def scenario_memory(quick: bool, workdir: Path) -> list[Outcome]:
    """Peak RSS of a child streaming a generator, unordered and ordered."""
    n = 200_000 if quick else 1_000_000
    script = workdir / "memory_child.py"
    script.write_text(_MEMORY_CHILD)
    outcomes = []
    for mode in ("unordered", "ordered"):
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, str(script), str(n), mode], capture_output=True, text=True, check=True
        )
        elapsed = time.perf_counter() - started
        peak = float(out.stdout.strip().splitlines()[-1])
        outcomes.append(
            Outcome(
                f"memory ({mode})",
                f"stream over a generator of {n:,} inputs: peak RSS {peak:.0f} MB "
                f"({n / elapsed:,.0f} tasks/s)",
                peak,
                "< 200 MB",
                peak < 200,
            )
        )
    return outcomes
