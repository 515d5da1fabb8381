"""kill -9 of a map(batch=True) process at every stage, then the same call: nothing paid twice.

The child (``batch_child.py``) runs one ``map(..., batch=True)`` of 400 inputs split into
batches of 20 against FakeLLMServer. The test kills it the moment the server sees a chosen
request arrive (its answer not yet sent): a file upload, a batch create, a poll, a results
read, or after a random time; ten kills, then the same command runs to the end. Then: every
input was in exactly one batch the server created (0 double submissions), every answer is
there and in order (0 lost), the store passes SQLite's integrity check and holds one
succeeded row per input, and every provider batch of the job is settled.
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from loom_backends.testing import BatchPlan, FakeLLMServer, RecordedRequest
from loom_store import ResultStore

CHILD = Path(__file__).with_name("batch_child.py")
N = 400
MAX_REQUESTS = 20

Trigger = Callable[[RecordedRequest], bool]


def echo(request: RecordedRequest) -> str:
    return json.dumps({"text": request.last_user_text})


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(echo, batch=BatchPlan(complete_after=1.0, shuffle=True)) as srv:
        yield srv


def _is_create(r: RecordedRequest) -> bool:
    return (r.path == "/v1/batches" and "input_file_id" in r.body) or (
        r.path == "/v1/messages/batches" and "requests" in r.body
    )


def _is_upload(r: RecordedRequest) -> bool:
    return r.path == "/v1/files" or _is_create(r)


def _is_poll(r: RecordedRequest) -> bool:
    parts = r.path.strip("/").split("/")
    return (parts[:2] == ["v1", "batches"] and len(parts) == 3) or (
        parts[:3] == ["v1", "messages", "batches"] and len(parts) == 4
    )


def _is_results(r: RecordedRequest) -> bool:
    return r.path.endswith("/content") or r.path.endswith("/results")


def _is_any(r: RecordedRequest) -> bool:
    # "A random moment" is the k-th request of the run, whatever it is (k random): a kill on
    # a timer missed a run that had already finished its little work on a loaded machine.
    return True


# In this order, so that every stage is still ahead when its kill comes: each kill hits the
# k-th such request of its run (k from 1 to 3), leaving most of the 20 batches for later runs.
TRIGGERS: list[tuple[str, Trigger]] = [
    ("during upload", _is_upload),
    ("after submit", _is_create),
    ("during upload", _is_upload),
    ("after submit", _is_create),
    ("during polling", _is_poll),
    ("at a random moment", _is_any),
    ("during collection", _is_results),
    ("during polling", _is_poll),
    ("during collection", _is_results),
    ("at a random moment", _is_any),
]


def _child(provider: str, server: FakeLLMServer, db: Path, out: Path) -> list[str]:
    base_url = server.base_url if provider == "openai" else server.anthropic_base_url
    return [
        sys.executable,
        str(CHILD),
        provider,
        base_url,
        str(db),
        str(N),
        str(MAX_REQUESTS),
        str(out),
    ]


def _kill_when(proc: subprocess.Popen[bytes], server: FakeLLMServer, trigger: Trigger) -> bool:
    """SIGKILL ``proc`` when the server sees the k-th request (k random, 1 to 3) that
    ``trigger`` accepts; whether it was killed before it finished."""
    seen = server.request_count
    wanted = random.randint(1, 3)
    deadline = time.monotonic() + 60.0
    while time.monotonic() < deadline and proc.poll() is None:
        count = server.request_count
        if count > seen:
            wanted -= sum(trigger(r) for r in server.requests[seen:count])
            if wanted <= 0:
                break
            seen = count
        time.sleep(0.001)
    if proc.poll() is not None:
        return False
    proc.kill()
    proc.wait()
    return True


def _created_batches(provider: str, server: FakeLLMServer) -> list[list[str]]:
    """The input texts of every batch the server created."""
    batches: list[list[str]] = []
    creates = [r for r in server.requests if _is_create(r) and r.status == 200]
    with httpx.Client(base_url=server.base_url, headers={"authorization": "Bearer x"}) as http:
        for r in creates:
            if provider == "anthropic":
                lines = [req["params"]["messages"][-1]["content"] for req in r.body["requests"]]
            else:
                content = http.get(f"/files/{r.body['input_file_id']}/content").text
                lines = [
                    json.loads(line)["body"]["messages"][-1]["content"]
                    for line in content.splitlines()
                    if line.strip()
                ]
            batches.append(lines)
    return batches


@pytest.mark.slow
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_kill_nine_at_every_stage_then_resume(
    provider: str, server: FakeLLMServer, tmp_path: Path
) -> None:
    db, out = tmp_path / "loom.db", tmp_path / "out.jsonl"
    kills: Counter[str] = Counter()
    for i in range(10):
        name, trigger = TRIGGERS[i]
        proc = subprocess.Popen(_child(provider, server, db, out), stderr=subprocess.PIPE)
        if _kill_when(proc, server, trigger):
            kills[name] += 1
        elif proc.returncode != 0:
            pytest.fail(f"the child failed: {proc.stderr.read().decode() if proc.stderr else ''}")
        proc.stderr and proc.stderr.close()
    assert sum(kills.values()) == 10, kills
    done = subprocess.run(_child(provider, server, db, out), capture_output=True, timeout=180)
    assert done.returncode == 0, done.stderr.decode()

    # 0 lost answers, in input order.
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [text for text, _, _ in rows] == [f"item {i}" for i in range(N)]
    assert all(ok and data == {"text": text} for text, data, ok in rows)
    # 0 double submissions: every input went into exactly one created batch.
    sent = Counter(text for batch in _created_batches(provider, server) for text in batch)
    assert set(sent) == {f"item {i}" for i in range(N)}
    assert max(sent.values()) == 1, [t for t, n in sent.items() if n > 1]
    # The store: intact, one succeeded row per input, every batch settled.
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    with ResultStore(db) as store:
        stats = store.stats("crash")
        assert (stats.succeeded, stats.failed) == (N, 0)
        records = store.provider_batches("crash")
        assert all(r.closed for r in records)
        collected = [r for r in records if r.state == "collected"]
        assert sum(r.requests for r in collected) == N
