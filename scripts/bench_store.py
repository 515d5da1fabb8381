"""Benchmark of loom-store: writer upserts/s and get_many ids/s (a script, not a test).

Usage::

    uv run python scripts/bench_store.py [--rows 100000] [--inflight 64] [--postgres]

On a fresh SQLite file in a temporary folder (and, with ``--postgres`` or when
``LOOM_TEST_POSTGRES_URL`` is set, on a scratch schema of that database) it measures:

* writer upserts/s: ``--rows`` rows of ~1 KB submitted through one ``StoreWriter`` the way
  the engine does it, from asyncio with ``--inflight`` tasks each awaiting its commit before
  submitting the next, once with ``await writer.asubmit(row)`` (the asyncio-native path) and
  once with ``await asyncio.wrap_future(writer.submit(row))``;
* the same from 8 threads, each waiting on its future (fewer rows in flight);
* ``put_many`` in batches of 2000 (the ceiling the writer's group commit approaches);
* ``get_many`` ids/s: all the ids looked up in chunks of 1000 (every one a hit);
* ``get_hits`` ids/s: the same, through the engine's cache-hit lookup.

Targets (2-core machine): >= 20,000 upserts/s through the writer from asyncio, >= 100,000 ids/s
for get_many. Prints PASS/FAIL per target and the machine's load average (the machine is shared:
a busy neighbour halves every figure); exits 1 when a SQLite target fails (asubmit, get_many).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from loom_store import ResultRow, ResultStore

WRITER_TARGET = 20_000.0
GET_MANY_TARGET = 100_000.0


def make_rows(task_name: str, n: int) -> list[ResultRow]:
    """``n`` rows of about 1 KB each (data, raw output, input, usage)."""
    filler = "lorem ipsum dolor sit amet " * 24  # ~650 characters
    rows = []
    for i in range(n):
        # Real task ids are SHA-256 digests: random keys, the costly case for a B-tree.
        task_id = hashlib.sha256(f"{task_name}/{i}".encode()).hexdigest()
        data = json.dumps({"label": f"label-{i % 7}", "score": i / n, "summary": filler})
        rows.append(
            ResultRow(
                task_name=task_name,
                task_id=task_id,
                config_fp="c" * 64,
                status="succeeded",
                data=data,
                raw_output=data[:200],
                input=json.dumps({"text": f"input number {i}"}),
                usage='{"prompt_tokens":120,"completion_tokens":80,"total_tokens":200}',
                attempts=1,
                latency_ms=12.5,
                model="bench-model",
            )
        )
    return rows


def bench_writer_async(
    store: ResultStore, rows: list[ResultRow], inflight: int, *, native: bool
) -> float:
    """Rows/s through the writer with ``inflight`` asyncio tasks awaiting their commits.

    ``native``: ``await writer.asubmit(row)``; otherwise
    ``await asyncio.wrap_future(writer.submit(row))``.
    """

    async def main() -> None:
        it = iter(rows)
        with store.writer() as writer:

            async def worker() -> None:
                for row in it:
                    if native:
                        await writer.asubmit(row)
                    else:
                        await asyncio.wrap_future(writer.submit(row))

            await asyncio.gather(*(worker() for _ in range(inflight)))

    start = time.perf_counter()
    asyncio.run(main())
    return len(rows) / (time.perf_counter() - start)


def bench_writer_threads(store: ResultStore, rows: list[ResultRow], threads: int) -> float:
    """Rows/s through the writer from ``threads`` threads, each waiting on its future."""
    lock = threading.Lock()
    it = iter(rows)

    def take() -> ResultRow | None:
        with lock:
            return next(it, None)

    with store.writer() as writer:

        def worker() -> None:
            while (row := take()) is not None:
                writer.submit(row).result()

        pool = [threading.Thread(target=worker) for _ in range(threads)]
        start = time.perf_counter()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        elapsed = time.perf_counter() - start
    return len(rows) / elapsed


def bench_put_many(store: ResultStore, rows: list[ResultRow], batch: int = 2000) -> float:
    start = time.perf_counter()
    for i in range(0, len(rows), batch):
        store.put_many(rows[i : i + batch])
    return len(rows) / (time.perf_counter() - start)


def bench_get_many(store: ResultStore, rows: list[ResultRow], chunk: int = 1000) -> float:
    ids = [r.task_id for r in rows]
    task_name, config_fp = rows[0].task_name, rows[0].config_fp
    found = 0
    start = time.perf_counter()
    for i in range(0, len(ids), chunk):
        found += len(store.get_many(task_name, ids[i : i + chunk], config_fp))
    elapsed = time.perf_counter() - start
    if found != len(ids):
        raise SystemExit(f"get_many found {found} of {len(ids)} rows: the store lost rows")
    return len(ids) / elapsed


def bench_get_hits(store: ResultStore, rows: list[ResultRow], chunk: int = 1000) -> float:
    ids = [r.task_id for r in rows]
    task_name, config_fp = rows[0].task_name, rows[0].config_fp
    found = 0
    start = time.perf_counter()
    for i in range(0, len(ids), chunk):
        found += len(json.loads(store.get_hits(task_name, ids[i : i + chunk], config_fp)))
    elapsed = time.perf_counter() - start
    if found != len(ids):
        raise SystemExit(f"get_hits found {found} of {len(ids)} rows: the store lost rows")
    return len(ids) / elapsed


def verdict(value: float, target: float, judged: bool = True) -> str:
    if not judged:
        return f"(reference: x{value / target:.2f} of the SQLite target)"
    return f"{'PASS' if value >= target else 'FAIL'} (target {target:,.0f}, x{value / target:.2f})"


def row_bytes(row: ResultRow) -> int:
    texts = (row.task_name, row.task_id, row.config_fp, row.data, row.raw_output, row.input)
    return sum(len(t or "") for t in (*texts, row.usage, row.model))


def run_suite(
    label: str, open_store: Callable[[], ResultStore], n: int, inflight: int, *, judged: bool
) -> bool:
    """Run every measurement on a fresh store; True when both targets hold.

    ``judged``: the targets apply (SQLite); otherwise the figures are for reference.
    """
    print(f"\n== {label}: {n:,} rows of ~{row_bytes(make_rows('x', 1)[0]):,} B")
    native_rows = make_rows("bench-asubmit", n)
    wrapped_rows = make_rows("bench-wrap-future", n)
    thread_rows = make_rows("bench-threads", n // 5)
    batch_rows = make_rows("bench-put-many", n)
    with open_store() as store:
        native = bench_writer_async(store, native_rows, inflight, native=True)
        wrapped = bench_writer_async(store, wrapped_rows, inflight, native=False)
        threads = bench_writer_threads(store, thread_rows, 8)
        put_many = bench_put_many(store, batch_rows)
        get_many = bench_get_many(store, native_rows)
        hits_json = bench_get_hits(store, native_rows)
        for name, count in (("bench-asubmit", n), ("bench-wrap-future", n)):
            if store.stats(name).succeeded != count:
                raise SystemExit(f"the writer lost rows of {name}")
    print(
        f"   writer, await asubmit(row), {inflight} in flight:     {native:>9,.0f} upserts/s  "
        f"{verdict(native, WRITER_TARGET, judged)}"
    )
    print(
        f"   writer, await wrap_future(submit(row)), {inflight} in flight: {wrapped:>9,.0f} "
        f"upserts/s  {verdict(wrapped, WRITER_TARGET, judged)}"
    )
    print(f"   writer, submit(row).result() from 8 threads:  {threads:>9,.0f} upserts/s")
    print(f"   put_many, batches of 2000 (no writer):         {put_many:>9,.0f} upserts/s")
    print(
        f"   get_many, chunks of 1000:                      {get_many:>9,.0f} ids/s      "
        f"{verdict(get_many, GET_MANY_TARGET, judged)}"
    )
    print(f"   get_hits, chunks of 1000 (json.loads incl.): {hits_json:>6,.0f} ids/s")
    print(
        f"   ratios: asubmit / put_many {native / put_many:.2f}, "
        f"wrap_future / asubmit {wrapped / native:.2f}"
    )
    return native >= WRITER_TARGET and get_many >= GET_MANY_TARGET


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--postgres", action="store_true", help="also run on PostgreSQL")
    args = parser.parse_args()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load average {load}")

    with tempfile.TemporaryDirectory() as tmp:
        ok = run_suite(
            "SQLite",
            lambda: ResultStore(Path(tmp) / "bench.db"),
            args.rows,
            args.inflight,
            judged=True,
        )

    pg_url = os.environ.get("LOOM_TEST_POSTGRES_URL")
    if args.postgres or pg_url:
        base = make_url(pg_url or "postgresql+psycopg://postgres@127.0.0.1:5432/test")
        schema = f"loom_bench_{secrets.token_hex(4)}"
        admin = create_engine(base)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = base.update_query_dict({"options": f"-csearch_path={schema}"})
        try:
            run_suite(
                "PostgreSQL",
                lambda: ResultStore(url.render_as_string(hide_password=False)),
                args.rows,
                args.inflight,
                judged=False,
            )
        finally:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
