"""Several processes run one task on one store: each input is called once and stored once.

Every worker is a real process running ``TaskLoom.map`` against one FakeLLMServer (in this
process); they start together (each waits for a line on stdin once its loom is built). Each
test runs on a SQLite file and (marked postgres) on PostgreSQL in a scratch schema.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from loom_backends.testing import FakeLLMServer
from loom_store import ResultStore

pytestmark = pytest.mark.slow

#: The lease of the tests that stop a worker: what its inputs wait before they are taken over.
LEASE = 5.0

CHILD = textwrap.dedent(
    """
    import json, sys
    from loom_core import TaskLoom

    base_url, store, n, task, lease, workers = sys.argv[1:7]
    loom = TaskLoom("fake-model", "{{ text }}", response_model=dict, base_url=base_url,
                    api_key="k", store=store, lease_s=float(lease), max_retries=0)
    print("ready", flush=True)
    sys.stdin.readline()
    results = loom.map([{"text": f"item {i}"} for i in range(int(n))], task_name=task,
                       max_workers=int(workers))
    bad = [i for i, r in enumerate(results)
           if not (r.is_success and r.data == {"echo": f"item {i}"})]
    print(json.dumps({"n": len(results), "bad": bad[:5], "nbad": len(bad),
                      "cached": sum(r.cached for r in results)}), flush=True)
    loom.close()
    """
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "workers.db")
    url: str = request.getfixturevalue("scratch_pg_url")
    return url


class Workers:
    """Worker processes started together on one task."""

    def __init__(self, script: Path, server: FakeLLMServer, store: str, task: str) -> None:
        self.script, self.server, self.store, self.task = script, server, store, task
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, count: int, n: int, *, lease: float = 30.0, workers: int = 16) -> None:
        args = [self.server.base_url, self.store, str(n), self.task, str(lease), str(workers)]
        for _ in range(count):
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, str(self.script), *args],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for proc in self.procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in self.procs:  # all at once
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()

    def wait_for_requests(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.server.request_count < count:
            assert time.monotonic() < deadline, "the workers made too few requests"
            time.sleep(0.02)

    def freeze(self, proc: subprocess.Popen[str], attempts: int = 40) -> None:
        """SIGSTOP ``proc`` at a moment it holds no lock of the store.

        Frozen inside a write transaction, it would stop the other workers until it resumes,
        which the test only lets it do once they have finished: a deadlock of the test, not
        of Loom (a real stopped process holds its locks alike). A loaded machine, where the
        transactions last longer, hit that moment now and then.
        """
        for _ in range(attempts):
            proc.send_signal(signal.SIGSTOP)
            if not self._holds_a_lock(proc):
                return
            proc.send_signal(signal.SIGCONT)
            time.sleep(0.05)
        pytest.fail(f"the worker held a lock of the store at each of {attempts} attempts")

    def _holds_a_lock(self, proc: subprocess.Popen[str]) -> bool:
        """Whether stopped ``proc`` holds a lock of the store (which it cannot release)."""
        url = make_url(self.store) if "://" in self.store else None
        if url is None:  # SQLite: its write lock is free, or freed by a live worker soon
            # Not long (a false "held" only means one more attempt): a long stop would cost
            # the frozen worker its leases before it is even meant to be frozen.
            conn = sqlite3.connect(self.store, timeout=1, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
            except sqlite3.OperationalError:
                return True
            finally:
                conn.close()
            return False
        # PostgreSQL: a session of ``proc``'s in a transaction (or running a statement).
        server = url.port or 5432
        ports = [
            c.laddr.port
            for c in psutil.Process(proc.pid).net_connections("tcp")
            if c.raddr and c.raddr.port == server
        ]
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                busy = conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE client_port = ANY(:ports) AND state <> 'idle'"
                    ),
                    {"ports": ports},
                ).scalar_one()
        finally:
            engine.dispose()
        return bool(busy)

    def finish(self, proc: subprocess.Popen[str]) -> dict[str, Any]:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
        summary: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return summary

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()  # reaps it and closes its pipes


@pytest.fixture
def workers(tmp_path: Path, store_url: str) -> Iterator[Workers]:
    script = tmp_path / "worker.py"
    script.write_text(CHILD)
    with FakeLLMServer(latency=0.05) as server:
        group = Workers(script, server, store_url, f"workers-{tmp_path.name}")
        try:
            yield group
        finally:
            group.stop_all()


def _rows(group: Workers) -> tuple[int, int]:
    """Rows of the task, and distinct task ids among them."""
    with ResultStore(group.store) as store:
        rows = list(store.iter_results(group.task))
    return len(rows), len({row.task_id for row in rows})


def _check_complete(summary: dict[str, Any], n: int) -> None:
    assert summary["n"] == n
    assert summary["nbad"] == 0, summary["bad"]


@pytest.mark.parametrize("count", [2, 3])
def test_workers_call_each_input_once_and_each_returns_everything(
    workers: Workers, count: int
) -> None:
    n = 600
    workers.start(count, n)
    summaries = [workers.finish(proc) for proc in workers.procs]
    for summary in summaries:
        _check_complete(summary, n)
    assert workers.server.request_count == n
    # Every input was computed by exactly one worker and read from the store by the others.
    assert sum(n - s["cached"] for s in summaries) == n
    assert _rows(workers) == (n, n)


def test_a_killed_worker_s_inputs_are_taken_over_after_its_lease(workers: Workers) -> None:
    # A live worker beats every half lease: 2.5 s of slack before a loaded machine's delays
    # cost its claims (and calls made twice). 2 s leases (1 s of slack) were missed.
    n, window, lease = 1500, 16, LEASE
    workers.start(3, n, lease=lease, workers=window)
    workers.wait_for_requests(n // 5)
    victim = workers.procs[0]
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    started = time.monotonic()
    for proc in workers.procs[1:]:
        _check_complete(workers.finish(proc), n)
    assert time.monotonic() - started < 60
    assert _rows(workers) == (n, n)
    # At-least-once under a crash: only the calls the victim had in flight (its window) and
    # the answers whose rows it had not committed yet (a group commit's worth) were made twice.
    duplicates = workers.server.request_count - n
    assert 0 <= duplicates <= 2 * window


def test_a_frozen_worker_loses_its_leases_and_its_late_calls_store_one_row(
    workers: Workers,
) -> None:
    # SIGSTOP freezes the worker's heartbeat and its calls in flight: its leases expire, the
    # others take its inputs over; resumed, its slow calls complete after the takeover. At
    # most those calls are made twice, and every input still has exactly one row.
    n, window, lease = 1200, 16, LEASE
    workers.start(3, n, lease=lease, workers=window)
    workers.wait_for_requests(n // 5)
    frozen = workers.procs[0]
    workers.freeze(frozen)
    try:
        for proc in workers.procs[1:]:
            _check_complete(workers.finish(proc), n)
    finally:
        frozen.send_signal(signal.SIGCONT)
    _check_complete(workers.finish(frozen), n)
    assert _rows(workers) == (n, n)
    duplicates = workers.server.request_count - n
    assert 0 <= duplicates <= 2 * window  # as for a kill: in flight, or not committed


def test_a_second_run_after_the_workers_calls_nothing(workers: Workers) -> None:
    n = 300
    workers.start(2, n)
    for proc in list(workers.procs):
        _check_complete(workers.finish(proc), n)
    first = workers.server.request_count
    workers.procs.clear()
    workers.start(2, n)
    for proc in workers.procs:
        summary = workers.finish(proc)
        _check_complete(summary, n)
        assert summary["cached"] == n
    assert workers.server.request_count == first == n
