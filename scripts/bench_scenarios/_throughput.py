"""Latency-bound and overhead-bound: Loom's ``map`` side by side with a bare aiohttp client."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from loom_backends.testing import FakeLLMServer

from ._common import MODEL, TEMPLATE, Echo, Outcome, inputs, new_loom, timed_map

__all__ = ["scenario_latency", "scenario_overhead"]

# Issue 12: the targets after the engine split (1.10 and 0.50 before it).
LATENCY_TARGET = 1.05  # Loom's map time ÷ bare aiohttp's, at most
OVERHEAD_TARGET = 0.65  # Loom's rate ÷ bare aiohttp's, at least


async def bare_aiohttp(url: str, bodies: list[bytes], concurrency: int) -> float:
    """Seconds for a bare aiohttp client to send every body, ``concurrency`` in flight."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"content-type": "application/json", "authorization": "Bearer sk-bench"}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                async with session.post(url, data=body, headers=headers) as response:
                    payload = await response.json()
                    json.loads(payload["choices"][0]["message"]["content"])

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


def request_bodies(items: list[dict[str, str]]) -> list[bytes]:
    """The JSON bodies Loom sends for ``items``, for the bare client to send the same."""
    schema = Echo.model_json_schema()
    return [
        json.dumps(
            {
                "model": MODEL,
                "messages": [
                    {"role": "user", "content": TEMPLATE.replace("{{ text }}", d["text"])}
                ],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "Echo", "schema": schema, "strict": False},
                },
            }
        ).encode()
        for d in items
    ]


def side_by_side(
    server: FakeLLMServer, n: int, concurrency: int, loom_run: Callable[[int], float]
) -> tuple[float, float]:
    """Best of three alternating rounds each of bare aiohttp and of Loom, on a cleared server.

    The server's record of requests grows with every request; clearing it before each round
    and alternating the order keeps one side from paying for the other's history.
    """
    url = server.base_url + "/chat/completions"
    bare, loom = [], []
    for round_ in range(3):
        server.clear()
        bodies = request_bodies(inputs(n, f"bare{round_}"))
        bare.append(asyncio.run(bare_aiohttp(url, bodies, concurrency)))
        server.clear()
        loom.append(loom_run(round_))
    return min(bare), min(loom)


def scenario_latency(quick: bool, workdir: Path) -> Outcome:
    """Loom's ``map`` time ÷ bare aiohttp's, 64 in flight, 50 ms per answer, store on."""
    n, concurrency = (600 if quick else 2000), 64
    with FakeLLMServer(latency=0.05, process=True) as server:
        url = server.base_url + "/chat/completions"
        asyncio.run(bare_aiohttp(url, request_bodies(inputs(200, "warm")), concurrency))
        with new_loom(server, workdir / "latency.db") as loom:
            timed_map(loom, inputs(200, "warm"), max_workers=concurrency)
            bare, loom_s = side_by_side(
                server,
                n,
                concurrency,
                lambda r: timed_map(
                    loom, inputs(n, f"loom{r}"), task_name="latency", max_workers=concurrency
                ),
            )
    ratio = loom_s / bare
    return Outcome(
        "latency-bound",
        f"{n} tasks, 64 in flight, 50 ms: Loom map {loom_s:.2f}s / bare aiohttp {bare:.2f}s",
        ratio,
        f"<= {LATENCY_TARGET}",
        ratio <= LATENCY_TARGET,
    )


def scenario_overhead(quick: bool, workdir: Path) -> Outcome:
    """Loom's rate ÷ bare aiohttp's, 64 in flight, instant answers, store off."""
    n, concurrency = (2000 if quick else 5000), 64
    with FakeLLMServer(process=True) as server:
        url = server.base_url + "/chat/completions"
        asyncio.run(bare_aiohttp(url, request_bodies(inputs(500, "warm")), concurrency))
        with new_loom(server, None) as loom:
            timed_map(loom, inputs(500, "warm"), max_workers=concurrency)
            bare, loom_s = side_by_side(
                server,
                n,
                concurrency,
                lambda r: timed_map(loom, inputs(n, f"loom{r}"), max_workers=concurrency),
            )
    ratio = (n / loom_s) / (n / bare)
    return Outcome(
        "overhead-bound",
        f"{n} tasks, no latency, 64 in flight: "
        f"Loom {n / loom_s:.0f}/s, bare aiohttp {n / bare:.0f}/s",
        ratio,
        f">= {OVERHEAD_TARGET}",
        ratio >= OVERHEAD_TARGET,
    )
