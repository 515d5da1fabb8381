"""Crash: SIGKILLs at random moments of a run lose nothing and duplicate nothing."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from loom_backends.testing import FakeLLMServer

from ._common import Outcome

__all__ = ["scenario_crash"]


_CRASH_CHILD = """
import sys
from loom_core import TaskLoom
base_url, db, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
loom = TaskLoom("fake-model", "{{ text }}", response_model=dict, base_url=base_url,
                api_key="k", db_path=db)
for result in loom.stream(({"text": f"crash {i}"} for i in range(n)), task_name="crash",
                          max_workers=32):
    print(result.task_id, flush=True)
loom.close()
print("DONE", flush=True)
"""


def scenario_crash(quick: bool, workdir: Path) -> Outcome:
    """SIGKILLs of a child running a stored stream, then a clean re-run: nothing lost or doubled."""
    # 100 ms per answer at 32 in flight is ~320 tasks/s, so the 20 kills, each a random
    # moment after the child's first result, are spread over the whole run.
    n, kills, window = (3000 if quick else 10_000), 20, 32
    pause = (0.3, 0.8) if quick else (0.8, 2.4)
    db = workdir / "crash.db"
    script = workdir / "crash_child.py"
    script.write_text(_CRASH_CHILD)
    rng = random.Random(11)
    seen: set[str] = set()
    with FakeLLMServer(latency=0.1, process=True) as server:
        for _ in range(kills):
            child = subprocess.Popen(
                [sys.executable, str(script), server.base_url, str(db), str(n)],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert child.stdout is not None
            lines: list[str] = []
            reader = threading.Thread(target=lines.extend, args=(child.stdout,), daemon=True)
            reader.start()
            started = time.monotonic()
            while not lines and time.monotonic() - started < 30 and child.poll() is None:
                time.sleep(0.01)
            time.sleep(rng.uniform(*pause))
            child.send_signal(signal.SIGKILL)
            child.wait()
            reader.join()
            child.stdout.close()
            # A line without its newline was cut by the kill: it was never fully printed.
            seen.update(
                line.strip() for line in lines if line.endswith("\n") and line.strip() != "DONE"
            )
        killed_requests = server.request_count
        final = subprocess.run(
            [sys.executable, str(script), server.base_url, str(db), str(n)],
            capture_output=True,
            text=True,
            check=True,
        )
        assert final.stdout.strip().endswith("DONE")
        total_requests = server.request_count
    with sqlite3.connect(db) as conn:
        stored = {row[0] for row in conn.execute("SELECT task_id FROM loom_results")}
        rows = conn.execute("SELECT COUNT(*) FROM loom_results").fetchone()[0]
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    lost = len(seen - stored)
    duplicates = rows - len(stored)
    reexecuted = total_requests - n
    problems = []
    if lost:
        problems.append(f"{lost} seen results lost")
    if duplicates:
        problems.append(f"{duplicates} duplicate rows")
    if integrity != "ok":
        problems.append(f"integrity_check: {integrity}")
    if rows != n:
        problems.append(f"{rows} rows for {n} tasks")
    # A kill loses the calls in flight (at most max_workers = window) and the answers that
    # arrived during the last group commit (a few milliseconds' worth): nothing else.
    allowance = window + 8
    if reexecuted > kills * allowance:
        problems.append(f"{reexecuted} re-executed > {kills} kills x ({window} in flight + 8)")
    return Outcome(
        "crash",
        f"{kills} SIGKILLs over a {n}-task run: {len(seen)} results seen before the kills, "
        f"{killed_requests} requests while killing, {reexecuted} re-executed in all "
        f"({reexecuted / kills:.1f} per kill, window {window})",
        float(len(problems)),
        "0 lost, 0 duplicates, integrity ok, <= one window (32 in flight + 8) per kill",
        not problems,
        "; ".join(problems),
    )
