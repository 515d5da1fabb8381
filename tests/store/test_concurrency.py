"""Several processes, each with several threads, writing and reading one store at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from loom_store import ResultStore

PROCESSES = 4
THREADS = 3
ROWS_PER_THREAD = 120
SHARED_KEYS = 25

CHILD = textwrap.dedent(
    """
    import sys, threading
    from loom_store import ResultRow, ResultStore

    target, proc = sys.argv[1], int(sys.argv[2])
    threads, per_thread, shared = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    store = ResultStore(target)  # every process opens (and may create) the schema at once
    writer = store.writer()
    errors = []

    def row(task_id, data):
        return ResultRow("conc", task_id, "cfg", "succeeded", data=data, raw_output="y" * 500)

    def work(n):
        try:
            written = []
            for k in range(0, per_thread, 8):
                ids = [f"p{proc}-t{n}-{j}" for j in range(k, min(k + 8, per_thread))]
                rows = [row(i, f'"{i}"') for i in ids]
                if n == 0:  # one thread per process writes through the group-commit writer
                    for f in [writer.submit(r) for r in rows]:
                        f.result()
                elif n == 1:  # one uses submit_many
                    writer.submit_many(rows).result()
                else:  # the others write directly
                    store.put_many(rows)
                store.put_many([row(f"shared-{(k + n) % shared}", f'"p{proc}-t{n}-{k}"')])
                written += ids
                # Read-your-writes, from this process, while the others keep writing.
                found = store.get_many("conc", written, "cfg")
                assert found.keys() == set(written), f"{len(written) - len(found)} rows missing"
                assert all(found[i].data == f'"{i}"' for i in written)
                store.stats("conc")
                store.register_run("conc", "cfg", {"process": proc})
        except BaseException as exc:
            errors.append(repr(exc))

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    store.close()
    if errors:
        print("\\n".join(errors), file=sys.stderr)
        sys.exit(1)
    """
)


@pytest.mark.slow
def test_processes_and_threads_share_one_store(target: Any, tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    args = [str(THREADS), str(ROWS_PER_THREAD), str(SHARED_KEYS)]
    children = [
        subprocess.Popen(
            [sys.executable, str(script), target.target, str(p), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(PROCESSES)
    ]
    outcomes = []
    for child in children:
        try:
            _out, err = child.communicate(timeout=240)
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()
        outcomes.append((child.returncode, err))
    for code, err in outcomes:
        assert "database is locked" not in err
        assert code == 0, err

    with ResultStore(target.target) as store:
        stats = store.stats("conc")
        own = PROCESSES * THREADS * ROWS_PER_THREAD
        shared = {
            (k + n) % SHARED_KEYS for k in range(0, ROWS_PER_THREAD, 8) for n in range(THREADS)
        }
        assert stats.total == own + len(shared)
        assert stats.succeeded == stats.total and stats.failed == 0
        ids = [
            f"p{p}-t{n}-{j}"
            for p in range(PROCESSES)
            for n in range(THREADS)
            for j in range(ROWS_PER_THREAD)
        ]
        found = store.get_many("conc", ids, "cfg")
        assert len(found) == own
        assert all(found[i].data == f'"{i}"' for i in ids)
        assert [r.config_fp for r in store.runs("conc")] == ["cfg"]
