"""SQLite's WAL is checkpointed and restarted in the background, not in the writer's commits."""

from __future__ import annotations

import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loom_store import ResultRow, ResultStore

MakeRow = Callable[..., ResultRow]


def _wal_pages(path: Path) -> int:
    """Pages in the WAL since its last restart, read without touching the database.

    ``mxFrame``, a native-endian u32 at offset 16 of the wal-index header at the start of the
    ``-shm`` file (documented in SQLite's file format, "The WAL-Index Format"). Asking SQLite
    instead (``PRAGMA wal_checkpoint``) would itself checkpoint.
    """
    header = (path.parent / (path.name + "-shm")).read_bytes()[:20]
    return int.from_bytes(header[16:20], sys.byteorder)


def test_background_checkpoint_restarts_the_wal(sqlite_target: Any, make_row: MakeRow) -> None:
    path = Path(sqlite_target.target)
    filler = "z" * 2_000
    with ResultStore(path) as store:
        for k in range(60):  # ~25 MiB of pages: far past the restart threshold (16 MiB)
            store.put_many([make_row(f"{k}-{i}", raw_output=filler) for i in range(100)])
        # The WAL restarts at the first write after a complete checkpoint: keep writing a
        # little until the background thread has done one.
        deadline = time.monotonic() + 20
        pages = _wal_pages(path)
        while pages > 1_000 and time.monotonic() < deadline:
            time.sleep(0.2)
            store.put_many([make_row(f"tick-{time.monotonic()}")])
            pages = _wal_pages(path)
        # The writer's own backstop only fires at 16,384 pages; below 1,000 means the
        # background thread checkpointed and restarted the WAL.
        assert pages <= 1_000
        assert store.stats("task").total >= 6_000
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
