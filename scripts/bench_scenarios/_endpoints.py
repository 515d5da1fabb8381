"""Several endpoints: two servers, one killed mid-run; every task succeeds, throughput recovers."""

from __future__ import annotations

import bisect
import os
import signal
import threading
import time
from pathlib import Path

from loom_backends import EndpointPool
from loom_backends.testing import FakeLLMServer
from loom_core import TaskLoom

from ._common import MODEL, TEMPLATE, Echo, Outcome, inputs

__all__ = ["scenario_failover"]

#: Each server's latency, and the requests in flight each endpoint takes (its capacity).
_LATENCY = 0.05
_PER_ENDPOINT = 8


def _loom(pool: EndpointPool) -> TaskLoom[Echo]:
    return TaskLoom(MODEL, TEMPLATE, response_model=Echo, backend=pool, max_retries=3)


def _pool(*servers: FakeLLMServer) -> EndpointPool:
    pool = EndpointPool([s.base_url for s in servers], api_key="sk-bench")
    for i in range(len(servers)):
        # The capacity of each endpoint: what an adaptive limit would have learned.
        pool.set_limit(i, _PER_ENDPOINT)
    return pool


def _survivor_rate(server: FakeLLMServer, n: int) -> float:
    """Requests per second of the survivor alone, at its capacity (the baseline)."""
    pool = _pool(server)
    with _loom(pool) as loom:
        started = time.perf_counter()
        batch = loom.map(inputs(n, "alone"), max_workers=2 * _PER_ENDPOINT)
        elapsed = time.perf_counter() - started
    if batch.failed():
        raise RuntimeError(f"baseline: {len(batch.failed())} tasks failed")
    return n / elapsed


def _rate(done: list[float], start: float, window: float) -> float:
    """Completions per second in ``[start, start + window)``."""
    return (bisect.bisect_left(done, start + window) - bisect.bisect_left(done, start)) / window


def _recovery(done: list[float], killed: float, capacity: float, window: float = 0.5) -> float:
    """Seconds from the kill until a ``window`` whose throughput is >= 90 % of ``capacity``."""
    step = 0.05
    start = killed
    while start + window <= done[-1]:
        if _rate(done, start, window) >= 0.9 * capacity:
            return start - killed
        start += step
    return float("inf")


def _kill(server: FakeLLMServer) -> None:
    """SIGKILL the server's process: no goodbye, its connections reset by the kernel."""
    process = server._process  # the bench reaches in: a real crash, not an orderly stop()
    os.kill(process.pid, signal.SIGKILL)


def scenario_failover(quick: bool, workdir: Path) -> Outcome:
    """Two endpoints at capacity, one SIGKILLed mid-run: tasks lost, and the recovery time."""
    n = 1200 if quick else 2400
    kill_after = 2.0
    with (
        FakeLLMServer(latency=_LATENCY, process=True) as doomed,
        FakeLLMServer(latency=_LATENCY, process=True) as survivor,
    ):
        capacity = _survivor_rate(survivor, 300 if quick else 600)
        pool = _pool(doomed, survivor)
        done: list[float] = []
        killed: list[float] = []
        with _loom(pool) as loom:
            timer = threading.Timer(
                kill_after, lambda: (_kill(doomed), killed.append(time.perf_counter()))
            )
            started = time.perf_counter()
            timer.start()
            results = []
            for result in loom.stream(inputs(n, "failover"), max_workers=2 * _PER_ENDPOINT):
                done.append(time.perf_counter())
                results.append(result)
            timer.join()
        status = pool.status()
    failed = [r for r in results if not r.is_success]
    before = [t for t in done if t < killed[0]]
    both_rate = len(before) / (killed[0] - started) if before else 0.0
    recovery = _recovery(done, killed[0], capacity)
    ok = not failed and len(results) == n and recovery <= 5.0
    first = _rate(done, killed[0], 1.0)
    detail = (
        f"first second after the kill: {first:.0f} req/s ({first / capacity:.0%} of the "
        f"survivor alone); {pool.failovers} requests failed over; dead endpoint: "
        f"{status[0].state}, {status[0].sent} sent, {status[0].failed} failed"
    )
    if failed:
        detail += f"; first failure: {failed[0].error}"
    return Outcome(
        "failover",
        f"{n} tasks over 2 endpoints ({both_rate:.0f} req/s), one SIGKILLed at "
        f"{kill_after:g}s: {len(results) - len(failed)} succeeded; throughput back to 90 % "
        f"of the survivor's {capacity:.0f} req/s after",
        recovery,
        "every task succeeds, recovery <= 5 s",
        ok,
        detail,
    )
