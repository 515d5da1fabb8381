"""Several worker processes on one task and one PostgreSQL store (docs/scale.md).

Each worker is a process running ``TaskLoom.map`` over the same inputs with the same task
name; every worker builds its loom, says so, and starts when told, so that all start together.
The store is a scratch schema of the PostgreSQL server named by ``LOOM_BENCH_POSTGRES_URL`` (or
``LOOM_TEST_POSTGRES_URL``), dropped afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from loom_backends.testing import FakeLLMServer

from ._common import Outcome

__all__ = ["scenario_shared_rpm", "scenario_workers", "scenario_workers_crash"]

_PG_ENVS = ("LOOM_BENCH_POSTGRES_URL", "LOOM_TEST_POSTGRES_URL")

_CHILD = """
import json, sys, time
from loom_core import TaskLoom
base_url, store, n, task, lease, window, rpm = sys.argv[1:8]
loom = TaskLoom("fake-model", "{{ text }}", response_model=dict, base_url=base_url,
                api_key="k", store=store, lease_s=float(lease), max_retries=5,
                rpm=float(rpm) if rpm != "-" else None)
print("ready", flush=True)
sys.stdin.readline()
started = time.time()
results = loom.map([{"text": f"item {i}"} for i in range(int(n))], task_name=task,
                   max_workers=int(window))
ended = time.time()
bad = sum(not (r.is_success and r.data == {"echo": f"item {i}"}) for i, r in enumerate(results))
print(json.dumps({"n": len(results), "bad": bad, "computed": sum(not r.cached for r in results),
                  "started": started, "ended": ended}), flush=True)
loom.close()
"""


def _pg_url() -> str | None:
    for name in _PG_ENVS:
        if os.environ.get(name):
            return os.environ[name]
    return None


@contextlib.contextmanager
def _scratch_schema(raw: str) -> Iterator[str]:
    """A store URL on a fresh schema of ``raw``'s database, dropped on exit."""
    url = make_url(raw)
    admin = create_engine(url)
    schema = f"loom_bench_{secrets.token_hex(5)}"
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        scoped = url.update_query_dict({"options": f"-csearch_path={schema}"})
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _rows(store: str, task: str) -> tuple[int, int]:
    engine = create_engine(store)
    try:
        with engine.connect() as conn:
            rows, distinct = conn.execute(
                text(
                    "SELECT COUNT(*), COUNT(DISTINCT task_id) FROM loom_results "
                    "WHERE task_name = :t"
                ),
                {"t": task},
            ).one()
    finally:
        engine.dispose()
    return int(rows), int(distinct)


class _Group:
    """Worker processes of one task, started together."""

    def __init__(self, workdir: Path, args: list[str]) -> None:
        self.script = workdir / "worker_child.py"
        self.script.write_text(_CHILD)
        self.args = args
        self.procs: list[subprocess.Popen[str]] = []

    def spawn(self, count: int, *, go: bool = True) -> list[subprocess.Popen[str]]:
        new = [
            subprocess.Popen(
                [sys.executable, str(self.script), *self.args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(count)
        ]
        for proc in new:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a worker failed to start")
        if go:
            for proc in new:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
        self.procs.extend(new)
        return new

    def kill(self, proc: subprocess.Popen[str]) -> None:
        proc.kill()
        proc.communicate()
        self.procs.remove(proc)

    def finish(self) -> list[dict[str, Any]]:
        summaries = []
        for proc in self.procs:
            out, _ = proc.communicate(timeout=600)
            if proc.returncode != 0:
                raise RuntimeError(f"a worker failed (exit {proc.returncode})")
            summaries.append(json.loads(out.strip().splitlines()[-1]))
        return summaries

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def _no_pg(name: str) -> Outcome:
    return Outcome(
        name,
        f"needs PostgreSQL: set {' or '.join(_PG_ENVS)}",
        0.0,
        "a PostgreSQL server",
        False,
    )


def scenario_workers(quick: bool, workdir: Path) -> Outcome:
    """1, 2 and 4 worker processes on one task: no duplicates, and the throughput they add."""
    raw = _pg_url()
    if raw is None:
        return _no_pg("workers")
    n, window = (3000 if quick else 8000), 64
    rates: dict[int, float] = {}
    problems: list[str] = []
    with FakeLLMServer(latency=0.05, process=True) as server, _scratch_schema(raw) as store:
        for count in (1, 2, 4):
            task = f"workers-{count}"
            before = server.request_count
            group = _Group(workdir, [server.base_url, store, str(n), task, "30", str(window), "-"])
            try:
                group.spawn(count)
                summaries = group.finish()
            finally:
                group.stop()
            requests = server.request_count - before
            span = max(s["ended"] for s in summaries) - min(s["started"] for s in summaries)
            rates[count] = n / span
            rows = _rows(store, task)
            if requests != n:
                problems.append(f"{count} workers: {requests} requests for {n} inputs")
            if rows != (n, n):
                problems.append(f"{count} workers: {rows[0]} rows ({rows[1]} distinct)")
            if any(s["n"] != n or s["bad"] for s in summaries):
                problems.append(f"{count} workers: a BatchResult incomplete or wrong")
    gain = rates[4] / rates[1]
    if gain < 3:
        problems.append(f"4 workers {gain:.2f} x one worker (< 3)")
    return Outcome(
        "workers",
        f"{n} inputs, 50 ms latency, {window} in flight per worker, PostgreSQL: "
        + ", ".join(f"{k} worker(s) {rate:,.0f}/s" for k, rate in rates.items())
        + " (requests == inputs each time)",
        gain,
        ">= 3 (4 workers / 1), no duplicate call",
        not problems,
        "; ".join(problems),
    )


def scenario_workers_crash(quick: bool, workdir: Path) -> Outcome:
    """kill -9 one of 3 workers 5 times during a run (each replaced): nothing lost or doubled."""
    raw = _pg_url()
    if raw is None:
        return _no_pg("workers crash")
    n, window, kills, lease = (3000 if quick else 5000), 64, 5, 3.0
    rng = random.Random(5)
    problems: list[str] = []
    with FakeLLMServer(latency=0.05, process=True) as server, _scratch_schema(raw) as store:
        task = "workers-crash"
        group = _Group(
            workdir, [server.base_url, store, str(n), task, str(lease), str(window), "-"]
        )
        try:
            group.spawn(3)
            for k in range(kills):
                # Kills spread over the run: at 10 %, 25 %, ... of the calls.
                mark = n * (0.1 + 0.15 * k)
                deadline = time.monotonic() + 120
                while server.request_count < mark and time.monotonic() < deadline:
                    time.sleep(0.01)
                group.kill(rng.choice(group.procs))
                group.spawn(1)
            summaries = group.finish()
        finally:
            group.stop()
        requests = server.request_count
        rows = _rows(store, task)
    duplicates = requests - n
    if rows != (n, n):
        problems.append(f"{rows[0]} rows ({rows[1]} distinct) for {n} inputs")
    if any(s["n"] != n or s["bad"] for s in summaries):
        problems.append("a surviving worker's BatchResult is incomplete or wrong")
    if duplicates > kills * window:
        problems.append(f"{duplicates} duplicate calls > {kills} kills x {window} in flight")
    return Outcome(
        "workers crash",
        f"{kills} kill -9 of one of 3 workers (each replaced) over {n} inputs, lease {lease:g}s: "
        f"{n - rows[1]} lost, {rows[0] - rows[1]} extra rows, {duplicates} duplicate calls "
        f"({duplicates / kills:.1f} per kill, window {window})",
        float(duplicates) / kills,
        f"0 lost, one row per input, <= {window} duplicate calls per kill",
        not problems,
        "; ".join(problems),
    )


def scenario_shared_rpm(quick: bool, workdir: Path) -> Outcome:
    """3 workers with the task's rpm equal to the server's limit: the share held, and 429s."""
    raw = _pg_url()
    if raw is None:
        return _no_pg("shared rpm")
    rpm, seconds, window = 1200, (30 if quick else 60), 64
    n = int(rpm / 60 * seconds)
    with (
        FakeLLMServer(latency=0.05, rpm_limit=rpm, process=True) as server,
        _scratch_schema(raw) as store,
    ):
        group = _Group(
            workdir, [server.base_url, store, str(n), "shared-rpm", "30", str(window), str(rpm)]
        )
        try:
            group.spawn(3)
            summaries = group.finish()
        finally:
            group.stop()
        requests = server.requests
    answered = sorted(r.received_at for r in requests if r.status == 200)
    limited = sum(r.status == 429 for r in requests)
    span = answered[-1] - answered[0]
    held = (len(answered) - 1) / span * 60 / rpm
    share_429 = limited / len(requests)
    problems = []
    if any(s["n"] != n or s["bad"] for s in summaries):
        problems.append("a BatchResult is incomplete or wrong")
    if held < 0.9:
        problems.append(f"{held:.1%} of the limit held (< 90 %)")
    if share_429 >= 0.01:
        problems.append(f"{share_429:.2%} answered 429 (>= 1 %)")
    return Outcome(
        "shared rpm",
        f"3 workers, task rpm={rpm} = the server's limit, {n} inputs over {span:.0f}s: "
        f"{held:.1%} of the limit, {limited} of {len(requests)} requests answered 429 "
        f"({share_429:.2%})",
        held,
        ">= 90 % of the limit, < 1 % 429",
        not problems,
        "; ".join(problems),
    )
