"""Hidden limits, nothing configured (issue 15): Loom's default against the best fixed setting.

Two servers whose limits the user does not know: (a) 600 requests a minute, said in OpenAI's
rate-limit headers; (b) at most 24 requests in flight, 50 ms per answer, a 429 beyond that and
nothing in the headers (a vLLM-like server behind a proxy). Each scenario first sweeps fixed
settings (``adaptive=False``, the knobs a user would try), then runs a fresh loom with nothing
configured, timed from its very first call: its throughput over the whole run (shorter than
20 s, so reached within 20 s of the start) is compared with the best fixed setting's.

(c) Two endpoints with keys of their own, 300 and 900 requests a minute, each said in its own
OpenAI headers: Loom with nothing configured, against the sum of the two limits (what a perfect
client reaches), beside the fixed setting a user would guess (``rpm=1200``, their sum).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loom_backends.testing import FakeLLMServer, ServerLimits
from loom_core import TaskLoom

from ._common import MODEL, TEMPLATE, Echo, Outcome, inputs, new_loom

__all__ = ["scenario_hidden_limits"]

RATIO_TARGET = 0.90  # Loom's throughput ÷ the best fixed setting's, at least
SHARE_429_TARGET = 0.02  # of the requests Loom sent, at most


@dataclass
class Run:
    """One batch against the server: what was set, its throughput and its 429s."""

    label: str
    done: int
    seconds: float
    sent: int
    refused: int

    @property
    def rate(self) -> float:
        return self.done / self.seconds

    @property
    def share_429(self) -> float:
        return self.refused / self.sent if self.sent else 0.0

    def line(self) -> str:
        return (
            f"{self.label}: {self.rate:.1f}/s ({self.done} ok in {self.seconds:.1f}s, "
            f"{self.refused}/{self.sent} answered 429)"
        )


def _run(server: FakeLLMServer, label: str, n: int, prefix: str, **settings: Any) -> Run:
    workers = settings.pop("max_workers", None)
    server.clear()
    with new_loom(server, None, max_retries=6, **settings) as loom:
        started = time.perf_counter()
        batch = loom.map(inputs(n, prefix), max_workers=workers)
        seconds = time.perf_counter() - started
    counts = server.status_counts
    return Run(label, len(batch.successful()), seconds, sum(counts.values()), counts.get(429, 0))


def _verdict(name: str, what: str, loom: Run, sweep: list[Run], extra: list[Run]) -> Outcome:
    best = max(sweep, key=lambda run: run.rate)
    ratio = loom.rate / best.rate
    ok = ratio >= RATIO_TARGET and loom.share_429 < SHARE_429_TARGET and loom.seconds <= 20.0
    detail = "\n       ".join(
        [f"Loom, nothing set: {loom.line()}"]
        + [f"  {run.line()}" for run in extra]
        + [f"fixed {run.line()}" + ("  <- best" if run is best else "") for run in sweep]
    )
    return Outcome(
        name,
        f"{what}: Loom {loom.rate:.1f}/s ÷ best fixed ({best.label}) {best.rate:.1f}/s, "
        f"{loom.share_429:.2%} answered 429",
        ratio,
        f">= {RATIO_TARGET}, < {SHARE_429_TARGET:.0%} 429, run <= 20 s",
        ok,
        detail,
    )


def _headers_scenario(quick: bool) -> Outcome:
    n = 100 if quick else 150  # 10-15 s at 600 a minute
    limits = ServerLimits(rpm=600, headers="openai")
    with FakeLLMServer(latency=0.05, limits=limits, process=True) as server:
        sweep = [
            _run(
                server,
                f"max_workers=16 rpm={rpm}",
                n,
                f"a-fixed-{rpm}",
                adaptive=False,
                max_workers=16,
                rpm=rpm,
            )
            for rpm in (None, 300, 450, 600)
        ]
        loom = _run(server, "default", n, "a-loom")
    return _verdict("hidden limits (a)", "rpm 600 in OpenAI headers", loom, sweep, [])


def _cap_scenario(quick: bool) -> Outcome:
    n = 1000 if quick else 2500
    limits = ServerLimits(max_in_flight=24)
    with FakeLLMServer(latency=0.05, limits=limits, process=True) as server:
        sweep = [
            _run(server, f"max_workers={w}", n, f"b-fixed-{w}", adaptive=False, max_workers=w)
            for w in (8, 16, 24, 32, 48)
        ]
        loom = _run(server, "default (aimd)", n, "b-loom")
        gradient = _run(server, "adaptive='gradient'", n, "b-gradient", adaptive="gradient")
    return _verdict(
        "hidden limits (b)", "24 in flight at most, 50 ms, no headers", loom, sweep, [gradient]
    )


def _two_keys_run(
    servers: tuple[FakeLLMServer, FakeLLMServer], label: str, n: int, prefix: str, **settings: Any
) -> Run:
    workers = settings.pop("max_workers", None)
    for server in servers:
        server.clear()
    endpoints = [
        {"url": server.base_url, "api_key": f"sk-bench-{i}"} for i, server in enumerate(servers)
    ]
    with TaskLoom(
        MODEL, TEMPLATE, response_model=Echo, endpoints=endpoints, max_retries=6, **settings
    ) as loom:
        started = time.perf_counter()
        batch = loom.map(inputs(n, prefix), max_workers=workers)
        seconds = time.perf_counter() - started
    sent = sum(sum(s.status_counts.values()) for s in servers)
    refused = sum(s.status_counts.get(429, 0) for s in servers)
    return Run(label, len(batch.successful()), seconds, sent, refused)


def _two_keys_scenario(quick: bool) -> Outcome:
    n = 200 if quick else 300  # 10-15 s at 1,200 a minute
    small = ServerLimits(rpm=300, headers="openai")
    large = ServerLimits(rpm=900, headers="openai")
    with (
        FakeLLMServer(latency=0.05, limits=small, process=True) as a,
        FakeLLMServer(latency=0.05, limits=large, process=True) as b,
    ):
        loom = _two_keys_run((a, b), "default", n, "c-loom")
        fixed = _two_keys_run(
            (a, b),
            "max_workers=16 rpm=1200",
            n,
            "c-fixed",
            adaptive=False,
            max_workers=16,
            rpm=1200,
        )
    ideal = (300 + 900) / 60.0
    ratio = loom.rate / ideal
    ok = ratio >= RATIO_TARGET and loom.share_429 < SHARE_429_TARGET and loom.seconds <= 20.0
    return Outcome(
        "hidden limits (c)",
        f"two keys, rpm 300 and 900 in their own headers: Loom {loom.rate:.1f}/s ÷ the sum "
        f"of the limits {ideal:.1f}/s, {loom.share_429:.2%} answered 429",
        ratio,
        f">= {RATIO_TARGET}, < {SHARE_429_TARGET:.0%} 429, run <= 20 s",
        ok,
        f"Loom, nothing set: {loom.line()}\n       fixed {fixed.line()}",
    )


def scenario_hidden_limits(quick: bool, workdir: Path) -> list[Outcome]:
    """(a) rpm 600 with OpenAI headers, (b) a hidden cap of 24 in flight: Loom with nothing
    configured ÷ the best of a sweep of fixed settings, and its share of 429s; (c) two
    endpoints with their own keys and limits: Loom ÷ the sum of their limits."""
    return [_headers_scenario(quick), _cap_scenario(quick), _two_keys_scenario(quick)]
