"""Benchmark the async path of OpenAIChatBackend against a bare aiohttp client.

Runs against FakeLLMServer in its own process (so the server has a core of its own) and
prints, in one run, requests/s for:

* bare aiohttp (the ceiling: no httpx, no Loom),
* OpenAIChatBackend on httpx's default AsyncHTTPTransport,
* OpenAIChatBackend as shipped (the aiohttp transport),

at 64 and 256 requests in flight, with ratios to bare aiohttp and the client's CPU time per
request, then PASS/FAIL for the two targets: the server serves >= 2,000 req/s (bare aiohttp)
and the shipped backend reaches >= 0.6 x bare aiohttp at 256 in flight.

Usage: ``uv run python scripts/bench_backends.py [--requests 3000] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpx

from loom_backends import OpenAIChatBackend
from loom_backends.testing import FakeLLMServer
from loom_protocol import ChatRequest, Message

REQUEST = ChatRequest(
    model="fake-model",
    messages=[
        Message(role="system", content="You extract fields and answer in JSON."),
        Message(role="user", content="Alice is 31 and lives in Lyon."),
    ],
    temperature=0.0,
)

Call = Callable[[], Awaitable[object]]


#: Client CPU seconds per request of the last measurement of each contender (the server runs
#: in another process, so this is the client's own cost, steadier than wall time on a shared box).
CPU: dict[str, float] = {}


async def drive(call: Call, total: int, in_flight: int) -> float:
    """Run ``total`` calls with ``in_flight`` workers; return requests per second."""
    counter = itertools.count()

    async def worker() -> None:
        while next(counter) < total:
            await call()

    cpu = time.process_time()
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    CPU["last"] = (time.process_time() - cpu) / total
    return total / (time.perf_counter() - start)


async def bench_bare(url: str, total: int, in_flight: int) -> float:
    body = json.dumps(
        {"model": REQUEST.model, "messages": [m.model_dump() for m in REQUEST.messages]}
    ).encode()
    headers = {"content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=in_flight)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def call() -> object:
            async with session.post(url, data=body, headers=headers) as response:
                data = await response.json()
                return data["choices"][0]["message"]["content"]

        await drive(call, min(500, total), in_flight)  # warm-up: open the connections
        return await drive(call, total, in_flight)


async def bench_backend(backend: OpenAIChatBackend, total: int, in_flight: int) -> float:
    async def call() -> object:
        return await backend.acomplete(REQUEST)

    try:
        await drive(call, min(500, total), in_flight)
        return await drive(call, total, in_flight)
    finally:
        await backend.aclose()


def run_all(
    base_url: str, total: int, rounds: int
) -> tuple[dict[tuple[str, int], float], dict[tuple[str, int], float]]:
    results: dict[tuple[str, int], float] = {}
    cpu: dict[tuple[str, int], float] = {}
    # Rounds are interleaved (every contender once per round) and the best round is kept:
    # the machine is shared, so the least disturbed round is the truest, and interleaving
    # spreads any disturbance over all contenders alike.
    for _ in range(rounds):
        for in_flight in (64, 256):
            limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
            contenders: dict[str, Callable[[], Awaitable[float]]] = {
                "bare aiohttp": lambda n=in_flight: bench_bare(
                    f"{base_url}/chat/completions", total, n
                ),
                "backend, httpx default transport": lambda n=in_flight, lim=limits: bench_backend(
                    OpenAIChatBackend(
                        base_url=base_url,
                        max_connections=n,
                        async_transport=httpx.AsyncHTTPTransport(limits=lim),
                    ),
                    total,
                    n,
                ),
                "backend as shipped (aiohttp transport)": lambda n=in_flight: bench_backend(
                    OpenAIChatBackend(base_url=base_url, max_connections=n), total, n
                ),
            }
            for name, make in contenders.items():
                rate = asyncio.run(make())
                if rate > results.get((name, in_flight), 0.0):
                    results[(name, in_flight)] = rate
                    cpu[(name, in_flight)] = CPU["last"]
    return results, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per measurement (best kept)")
    args = parser.parse_args()
    with FakeLLMServer(process=True) as server:
        results, cpu = run_all(server.base_url, args.requests, args.rounds)
        served = server.request_count
    print(f"{args.requests} requests per measurement, best of {args.rounds}; server saw {served}")
    print(f"{'client':42} {'in flight':>9} {'req/s':>8} {'x bare':>7} {'client CPU/req':>15}")
    for (name, in_flight), rate in results.items():
        ratio = rate / results[("bare aiohttp", in_flight)]
        micros = cpu[(name, in_flight)] * 1e6
        print(f"{name:42} {in_flight:>9} {rate:>8.0f} {ratio:>7.2f} {micros:>12.0f} us")
    server_rate = max(results[("bare aiohttp", 64)], results[("bare aiohttp", 256)])
    shipped = results[("backend as shipped (aiohttp transport)", 256)]
    ratio = shipped / results[("bare aiohttp", 256)]
    ok_server = server_rate >= 2000
    ok_backend = ratio >= 0.6
    verdict = {True: "PASS", False: "FAIL"}
    print(f"{verdict[ok_server]}: FakeLLMServer serves {server_rate:.0f} req/s (target >= 2000)")
    print(f"{verdict[ok_backend]}: shipped at 256 in flight = {ratio:.2f} x bare (target >= 0.6)")
    return 0 if ok_server and ok_backend else 1


if __name__ == "__main__":
    sys.exit(main())
