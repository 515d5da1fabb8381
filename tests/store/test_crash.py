"""kill -9 at a random moment loses no result that anyone has seen.

A child process writes through a StoreWriter and prints each task id once its future has
completed; the parent SIGKILLs it at a random moment, 20 times over one SQLite file. Every
printed id must then be present with intact data, the file must pass
``PRAGMA integrity_check``, and no key may appear twice.
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from loom_store import ResultStore

RUNS = 20

CHILD = textwrap.dedent(
    """
    import hashlib, json, sys
    from loom_store import ResultRow, ResultStore

    path, run = sys.argv[1], int(sys.argv[2])
    store = ResultStore(path)
    writer = store.writer(max_batch=64)
    print("ready", flush=True)

    def row(task_id, version):
        check = hashlib.sha256(f"{task_id}/{version}".encode()).hexdigest()
        data = json.dumps({"id": task_id, "version": version, "check": check})
        return ResultRow("crash", task_id, "cfg", "succeeded", data=data, raw_output="x" * 800)

    i = 0
    while True:
        batch = []
        for _ in range(24):
            task_id = f"{run}-{i}"
            batch.append((task_id, writer.submit(row(task_id, f"{run}-{i}"))))
            # Keys shared by every run are overwritten again and again (upserts under fire).
            shared = f"shared-{i % 37}"
            batch.append((shared, writer.submit(row(shared, f"{run}-{i}"))))
            i += 1
        for task_id, future in batch:
            future.result()
            sys.stdout.write(task_id + "\\n")
        sys.stdout.flush()
    """
)


def _intact(data: str | None, task_id: str) -> bool:
    if data is None:
        return False
    payload = json.loads(data)
    expected = hashlib.sha256(f"{task_id}/{payload['version']}".encode()).hexdigest()
    return payload["id"] == task_id and payload["check"] == expected


@pytest.mark.slow
def test_sigkill_never_loses_a_seen_result(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    db = tmp_path / "crash.db"
    rng = random.Random()
    seen: set[str] = set()
    killed_while_writing = 0

    for run in range(RUNS):
        child = subprocess.Popen(
            [sys.executable, str(script), str(db), str(run)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            if run % 5 == 4:
                # Now and then, kill it while it starts (opening, creating the schema).
                time.sleep(rng.uniform(0.0, 0.5))
            else:
                assert child.stdout is not None
                ready = child.stdout.readline()
                assert ready == "ready\n", child.stderr.read() if child.stderr else ""
                time.sleep(rng.uniform(0.05, 0.35))
            child.send_signal(signal.SIGKILL)
            assert child.stdout is not None and child.stderr is not None
            # Through the text streams, not communicate(): it reads the pipes' descriptors and
            # would miss the lines that readline() above already buffered (results seen).
            with child.stdout, child.stderr:
                out, err = child.stdout.read(), child.stderr.read()
            child.wait(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()
        assert child.returncode == -signal.SIGKILL, err
        lines = out.split("\n")[:-1]  # the last piece is "" or a line cut short by the kill
        printed = [line for line in lines if line and line != "ready"]
        killed_while_writing += bool(printed)
        seen.update(printed)

    assert killed_while_writing >= RUNS // 2, "the children were killed before writing anything"

    with ResultStore(db) as store:
        found = store.get_many("crash", sorted(seen), "cfg")
        missing = seen - found.keys()
        assert not missing, f"{len(missing)} printed ids lost, e.g. {sorted(missing)[:5]}"
        broken = [i for i, row in found.items() if not _intact(row.data, i)]
        assert not broken, f"damaged rows: {broken[:5]}"
        assert all(_intact(row.data, row.task_id) for row in store.iter_results("crash"))

    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        duplicates = conn.execute(
            "SELECT task_name, task_id, COUNT(*) FROM loom_results "
            "GROUP BY task_name, task_id HAVING COUNT(*) > 1"
        ).fetchall()
        assert duplicates == []
    finally:
        conn.close()
