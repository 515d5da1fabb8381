"""Rate limit and chaos: the server's rpm limit held, and every fault answered correctly."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from loom_backends.testing import FakeLLMServer, FaultPlan

from ._common import Outcome, inputs, new_loom

__all__ = ["scenario_chaos", "scenario_ratelimit"]


def scenario_ratelimit(quick: bool, workdir: Path) -> Outcome:
    """``rpm`` set to the server's own limit: the share of the limit reached, and of 429s."""
    rpm, seconds = 1200, (30 if quick else 120)
    n = int(rpm / 60 * seconds)
    with FakeLLMServer(rpm_limit=rpm, process=True) as server:
        with new_loom(server, None, rpm=rpm) as loom:
            started = time.perf_counter()
            batch = loom.map(inputs(n), max_workers=32)
            elapsed = time.perf_counter() - started
        limited = server.status_counts.get(429, 0)
        total = server.request_count
    achieved = n / elapsed * 60 / rpm
    share_429 = limited / total
    ok = achieved >= 0.95 and share_429 < 0.005 and not batch.failed()
    return Outcome(
        "rate limit",
        f"rpm={rpm} for {elapsed:.0f}s: {achieved:.1%} of the limit, {limited} of {total} "
        f"requests answered 429 ({share_429:.2%})",
        achieved,
        ">= 95 %, < 0.5 % 429",
        ok,
    )


def scenario_chaos(quick: bool, workdir: Path) -> Outcome:
    """Injected 429s, 5xx, broken and cut answers: every task accounted for, once, on time."""
    n = 300 if quick else 1000
    db = workdir / "chaos.db"
    faults = FaultPlan(
        rate_429=0.15,
        retry_after=(1.0, 3.0),
        rate_500=0.025,
        rate_503=0.025,
        rate_broken_json=0.05,
        rate_truncated=0.02,
    )
    items = inputs(n, "chaos")
    with FakeLLMServer(faults=faults, seed=7, process=True) as server:
        with new_loom(server, db, max_retries=4) as loom:
            batch = loom.map(items, task_name="chaos", max_workers=32)
        requests = server.requests
    problems: list[str] = []
    if len(batch) != n:
        problems.append(f"{len(batch)} results for {n} inputs")
    unexplained = [r for r in batch if not r.is_success and r.error is None]
    if unexplained:
        problems.append(f"{len(unexplained)} failures without an error code")
    with sqlite3.connect(db) as conn:
        rows, distinct = conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT task_id) FROM loom_results WHERE task_name='chaos'"
        ).fetchone()
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    if rows != n or distinct != n:
        problems.append(f"store holds {rows} rows ({distinct} distinct) for {n} tasks")
    if integrity != "ok":
        problems.append(f"integrity_check: {integrity}")
    # Retries never before Retry-After: after a 429 carrying Retry-After R, no request of the
    # same task arrives before R has passed.
    early = 0
    last_429: dict[str, tuple[float, float]] = {}
    for req in sorted(requests, key=lambda r: r.received_at):
        key = first_user_text(req.body)  # a re-ask's last message is the shared feedback text
        if key in last_429:
            at, wait = last_429.pop(key)
            if req.received_at < at + wait - 0.05:
                early += 1
        if req.status == 429 and req.retry_after is not None:
            last_429[key] = (req.received_at, req.retry_after)
    if early:
        problems.append(f"{early} retries came before Retry-After")
    codes: dict[str, int] = {}
    for result in batch.failed():
        assert result.error is not None
        codes[result.error.code.value] = codes.get(result.error.code.value, 0) + 1
    statuses = {str(k): v for k, v in sorted(server_status(requests).items())}
    return Outcome(
        "chaos",
        f"{n} tasks, {len(requests)} requests {statuses}: {len(batch.successful())} succeeded, "
        f"failed by code {codes}",
        float(len(problems)),
        "every task accounted for, no duplicates, no early retry",
        not problems,
        "; ".join(problems),
    )


def first_user_text(body: dict[str, Any]) -> str:
    """The first user message of a request body: the task's key across its retries."""
    for message in body.get("messages", []):
        if message.get("role") == "user":
            return str(message.get("content"))
    return ""


def server_status(requests: list[Any]) -> dict[int, int]:
    """How many of the recorded requests the server answered with each status."""
    counts: dict[int, int] = {}
    for req in requests:
        counts[req.status] = counts.get(req.status, 0) + 1
    return counts
