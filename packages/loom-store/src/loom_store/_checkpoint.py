"""Background WAL checkpoints for a SQLite store.

In WAL mode every commit appends pages to the ``-wal`` file; a *checkpoint* copies them back
into the database file and is the only moment SQLite fsyncs (with ``synchronous=NORMAL``). By
default the connection whose commit crosses ``wal_autocheckpoint`` pages runs the checkpoint
itself, inside its ``commit()``: the writer thread then stalls for the whole copy and fsync
(measured: 10 commits out of 1,563 took 2.4 s of the writer's 3.7 s).

:class:`WalCheckpointer` moves that work to a thread of its own: after writes, at most every
``interval_s``, it runs ``PRAGMA wal_checkpoint(PASSIVE)``, which copies what has been committed
without taking the write lock, so the writer keeps committing meanwhile.

A passive checkpoint never *restarts* the WAL while commits keep arriving, so the file would
only grow; once it holds ``restart_frames`` pages the thread runs a second passive pass (for
the pages committed during the first) and then ``wal_checkpoint(RESTART)``, which blocks
writers only while it copies what was committed since and waits at most ``restart_wait_s`` for
readers of old snapshots (otherwise it gives up until next time). ``wal_autocheckpoint`` stays
on, higher, as a backstop for when this thread cannot keep up. Measured with 64-row groups on
a 100k-row file: ~30k rows/s against ~25k with the writer checkpointing itself.
"""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy.engine import Engine

__all__ = ["WalCheckpointer"]

logger = logging.getLogger("loom.store")


class WalCheckpointer:
    """Runs passive WAL checkpoints on a thread of its own, started at the first write.

    Args:
        engine: The store's engine (a pooled connection is borrowed per checkpoint).
        busy_timeout_s: The store's busy timeout, restored on the borrowed connection.
        interval_s: The least time between two checkpoints.
        restart_frames: WAL pages from which the WAL is restarted.
        restart_wait_s: The longest a restart may hold writers back waiting for readers.
    """

    def __init__(
        self,
        engine: Engine,
        busy_timeout_s: float,
        *,
        interval_s: float = 0.1,
        restart_frames: int = 4096,
        restart_wait_s: float = 0.01,
    ) -> None:
        self._engine = engine
        self._busy_ms = max(1, round(busy_timeout_s * 1000))
        self._restart_wait_ms = max(1, round(restart_wait_s * 1000))
        self._restart_frames = restart_frames
        self._interval_s = interval_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def note_write(self) -> None:
        """Called after each committed write: schedule a checkpoint."""
        if self._thread is None:
            with self._lock:
                if self._thread is None and not self._stop.is_set():
                    self._thread = threading.Thread(
                        target=self._run, name="loom-store-checkpoint", daemon=True
                    )
                    self._thread.start()
        self._wake.set()

    def stop(self) -> None:
        """Stop the thread (after the checkpoint in progress, if any). Idempotent."""
        with self._lock:
            self._stop.set()
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if self._stop.is_set():
                return
            self._wake.clear()
            started = time.monotonic()
            self._checkpoint()
            # Let writes accumulate: one copy of many commits costs less than many copies.
            pause = self._interval_s - (time.monotonic() - started)
            if pause > 0 and self._stop.wait(pause):
                return

    def _checkpoint(self) -> None:
        try:
            # The raw connection: no SQLAlchemy transaction (a checkpoint cannot run inside
            # one), and pysqlite is in autocommit mode on every connection of the store.
            raw = self._engine.raw_connection()
            try:
                cursor = raw.cursor()
                try:
                    cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    result = cursor.fetchone()
                    # (busy, pages in the WAL, pages copied); -1 pages when another
                    # connection was checkpointing at the same moment.
                    if result is not None and result[1] >= self._restart_frames:
                        # Catch up first, so that the restart (which holds writers back)
                        # has little left to copy.
                        cursor.execute("PRAGMA wal_checkpoint(PASSIVE)")
                        cursor.fetchall()
                        cursor.execute(f"PRAGMA busy_timeout = {self._restart_wait_ms}")
                        try:
                            cursor.execute("PRAGMA wal_checkpoint(RESTART)")
                            cursor.fetchall()
                        finally:
                            cursor.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
                finally:
                    cursor.close()
            finally:
                raw.close()
        except Exception as exc:  # a checkpoint is an optimisation: the next one retries
            logger.debug("loom-store: background WAL checkpoint failed: %s", exc)
