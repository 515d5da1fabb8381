"""loom-ray: two LoomMapper actors against one process, and the shared limit's cost.

Both sides run the same inputs against one FakeLLMServer (its own process, 50 ms per answer),
64 calls in flight per worker, results stored. The actors' start-up (Ray starting two worker
processes that import Ray, Loom and open the store) is measured apart: from the pipeline's
start to the first request the server sees. Throughput is counted from that first request to
the pipeline's end, so the figure compares the work, not Ray's fixed cost.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from loom_backends.testing import FakeLLMServer

from ._common import MODEL, TEMPLATE, Outcome, inputs, new_loom, timed_map
from ._throughput import bare_aiohttp, request_bodies

__all__ = ["scenario_ray"]

RAY_TARGET = 1.6  # 2 actors' throughput ÷ one process's, at least (issue 14)
CONCURRENCY = 64
BATCH_SIZE = 256
# A batch's last calls run below the window (its tail): two batches at once per actor, each
# with half the window, keep 64 calls in flight per actor across batch boundaries.
CALLS_PER_ACTOR = 2


def _pipeline(ray: Any, server: FakeLLMServer, items: list[dict[str, str]], **extra: Any) -> Any:
    from loom_ray import LoomMapper

    kwargs = {
        "model": MODEL,
        "prompt_template": TEMPLATE,
        "response_model": dict,
        "base_url": server.base_url,
        "api_key": "sk-bench",
        "max_workers": CONCURRENCY // CALLS_PER_ACTOR,
        **extra,
    }
    return ray.data.from_items(items).map_batches(
        LoomMapper,
        fn_constructor_kwargs=kwargs,
        compute=ray.data.ActorPoolStrategy(size=2, max_concurrent_calls_per_actor=CALLS_PER_ACTOR),
        batch_size=BATCH_SIZE,
        num_cpus=0.5,
    )


def _timed_pipeline(
    ray: Any, server: FakeLLMServer, items: list[dict[str, str]], **extra: Any
) -> tuple[float, float]:
    """(start-up seconds, working seconds) of one pipeline over ``items`` on a cleared server."""
    server.clear()
    started = time.time()
    rows = _pipeline(ray, server, items, **extra).take_all()
    ended = time.time()
    failed = [row for row in rows if not row["loom_ok"]]
    if len(rows) != len(items) or failed:
        raise RuntimeError(f"{len(failed)} of {len(rows)} rows failed: {failed[:1]}")
    first = min(r.received_at for r in server.requests)
    return first - started, ended - first


def _permit_costs(ray: Any) -> str:
    """One permit per round trip against bulk permits, on the bucket actor itself."""
    from loom_ray._permits import PermitPool
    from loom_ray._shared import SharedLimit

    shared = SharedLimit("bench-permits", 6_000_000.0, None)  # 100,000/s: never the limit
    n = 500
    started = time.perf_counter()
    for _ in range(n):
        ray.get(shared._handle.take.remote(1, 1, 0, 0))
    single = (time.perf_counter() - started) / n

    async def bulk() -> float:
        pool = PermitPool(shared.take, 6_000_000.0, None)
        t0 = time.perf_counter()
        await asyncio.gather(*(pool.acquire() for _ in range(50_000)))
        return (time.perf_counter() - t0) / 50_000

    per_permit = asyncio.run(bulk())
    return (
        f"bucket actor: {single * 1e3:.2f} ms per round trip ({1 / single:,.0f} permits/s one "
        f"at a time); in bulk {per_permit * 1e6:.1f} µs per permit ({1 / per_permit:,.0f}/s)"
    )


def scenario_ray(quick: bool, workdir: Path) -> list[Outcome]:
    """2 LoomMapper actors ÷ one process on the same inputs; the shared limit's overhead."""
    # Under `uv run`, Ray would start each worker with `uv run` and ship the working
    # directory: not what a local measurement wants (read when Ray is imported).
    os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    try:
        import ray
        import ray.data
    except ImportError as exc:
        return [Outcome("ray", f"ray[data] missing: {exc}", 0.0, "ray installed", False)]
    n = 1000 if quick else 4000
    outcomes: list[Outcome] = []
    with FakeLLMServer(latency=0.05, process=True) as server:
        with new_loom(server, workdir / "ray-one.db") as loom:
            timed_map(loom, inputs(200, "warm"), max_workers=CONCURRENCY)
            server.clear()
            # The same inputs on both sides, each side with its own store.
            one = timed_map(loom, inputs(n, "same"), task_name="bench-ray", max_workers=CONCURRENCY)
        # What the server itself can serve to 2 x 64 calls in flight (a bare aiohttp client):
        # when this is not above one process's rate, the server, not Loom, is the ceiling.
        server.clear()
        url = server.base_url + "/chat/completions"
        ceiling = n / asyncio.run(
            bare_aiohttp(url, request_bodies(inputs(n, "bare")), 2 * CONCURRENCY)
        )
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        init = time.perf_counter() - t0
        try:
            ray.data.DataContext.get_current().enable_progress_bars = False
            store = str(workdir / "ray-actors.db")
            startup, work = _timed_pipeline(
                ray, server, inputs(n, "same"), task_name="bench-ray", store=store
            )
            ratio = (n / work) / (n / one)
            outcomes.append(
                Outcome(
                    "ray-2-actors",
                    f"{n} tasks, 50 ms, 64 in flight per worker, batches of {BATCH_SIZE} "
                    f"({CALLS_PER_ACTOR} at once per actor): "
                    f"2 actors {n / work:,.0f}/s "
                    f"(after {startup:.1f}s actor start-up), one process {n / one:,.0f}/s",
                    ratio,
                    f">= {RAY_TARGET}",
                    ratio >= RAY_TARGET,
                    detail=f"ray.init {init:.1f}s; wall time with start-up "
                    f"{startup + work:.1f}s vs one process {one:.1f}s; the server's ceiling "
                    f"(bare aiohttp, 128 in flight) {ceiling:,.0f}/s",
                )
            )
            # The same pipeline under a shared rpm far above what it reaches: the cost of
            # asking the bucket actor for permits, in bulk.
            lstart, limited = _timed_pipeline(
                ray,
                server,
                inputs(n, "limited"),
                task_name="bench-ray-limit",
                store=store,
                rpm=6_000_000,
            )
            per_request_ms = (limited - work) / n * 1e3
            outcomes.append(
                Outcome(
                    "ray-shared-limit",
                    f"same pipeline with a shared rpm (never reached): {n / limited:,.0f}/s "
                    f"vs {n / work:,.0f}/s, {per_request_ms:+.3f} ms per request",
                    (n / limited) / (n / work),
                    ">= 0.9",
                    (n / limited) / (n / work) >= 0.9,
                    detail=_permit_costs(ray) + f"; start-up {lstart:.1f}s",
                )
            )
        finally:
            ray.shutdown()
    return outcomes
