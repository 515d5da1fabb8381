"""The loom's store session: the store, its writer, the configurations registered, the runs.

One object owns what the sync and async APIs share besides the engine itself: the store
(opened on first use, or given), the one writer thread that commits its rows, which task names
this loom has registered its configuration under, and the batches running now (so that
closing the loom can end them). The facade never touches any of it directly.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from loom_protocol import LoomUsageError
from loom_store import ResultStore, StoreWriter

from ._batch import BatchRun
from ._bridge import LoomClosedError
from ._output import OutputSpec
from ._persist import ResultCache
from ._pricing import Pricer

__all__ = ["Session"]

_CLOSED = "this TaskLoom is closed"


class Session:
    """The store side of one loom, safe to use from any thread.

    Args:
        store: A ``ResultStore`` (the caller keeps owning it), a store URL (opened now, so a
            wrong URL fails at once), or ``None`` (``db_path`` is opened on first use).
        db_path: The SQLite file used when ``store`` is ``None``.
        config_fp: The loom's configuration fingerprint (the config part of every key).
        config: The configuration itself, as registered in ``loom_runs``.
        output: How results are stored and read back.
        pricer: Prices the results read back from the store.
    """

    def __init__(
        self,
        store: ResultStore | str | None,
        db_path: str | os.PathLike[str],
        *,
        config_fp: str,
        config: dict[str, Any],
        output: OutputSpec,
        pricer: Pricer,
    ) -> None:
        if store is not None and not isinstance(store, ResultStore | str):
            raise LoomUsageError(
                f"store must be a ResultStore or a URL string, got {type(store).__name__}"
            )
        self._config_fp = config_fp
        self._config = config
        self._output = output
        self._pricer = pricer
        self._lock = threading.Lock()
        self._closed = False
        self._registered: set[str] = set()
        self._runs: set[BatchRun] = set()
        self._writer: StoreWriter | None = None
        self._store: ResultStore | None = store if isinstance(store, ResultStore) else None
        self._owns_store = False
        self._target: str | os.PathLike[str] = db_path if store is None else str(store)
        if isinstance(store, str):
            self._open()

    @property
    def url(self) -> str:
        """The store's URL or path (not redacted: redact before showing it)."""
        return self._store.url if self._store is not None else os.fspath(self._target)

    def check_open(self) -> None:
        """Raise :class:`LoomClosedError` once the loom is closed."""
        if self._closed:
            raise LoomClosedError(_CLOSED)

    # -- the store -------------------------------------------------------------------------

    def _open(self) -> tuple[ResultStore, StoreWriter]:
        with self._lock:
            if self._closed:  # close() may have released the store already
                raise LoomClosedError(_CLOSED)
            if self._store is None:
                # A StoreError (the database cannot be opened or fails) reaches the caller as
                # it is: a dead database is not misuse. A target the store cannot use at all
                # (a malformed URL, an unsupported dialect) is the store's LoomUsageError.
                self._store = ResultStore(self._target)
                self._owns_store = True
            if self._writer is None:
                self._writer = StoreWriter(self._store)
            return self._store, self._writer

    def cache_for(
        self, task_name: str | None, *, register: bool = True
    ) -> tuple[ResultCache | None, list[str]]:
        """The cache of ``task_name`` (``None``: no store) and its other configurations.

        Blocking I/O (opening the store, registering the configuration): call it off the
        event loop. The other configurations are listed only the first time this loom sees
        ``task_name``, when it registers its own. ``register=False`` (a dry run) only reads:
        no configuration is registered, and a store file that does not exist yet is not
        created (there is then no cache: ``None``).
        """
        if task_name is None:
            return None, []
        if not register and not self._exists():
            return None, []
        store, writer = self._open()
        others: list[str] = []
        if register and task_name not in self._registered:
            others = store.other_configs(task_name, self._config_fp)
            store.register_run(task_name, self._config_fp, self._config)
            self._registered.add(task_name)
        cache = ResultCache(store, writer, task_name, self._config_fp, self._output, self._pricer)
        return cache, others

    def _exists(self) -> bool:
        """Whether the store is open, or is a URL, or a file that exists."""
        if self._store is not None:
            return True
        target = os.fspath(self._target)
        return "://" in target or os.path.exists(target)

    # -- the runs --------------------------------------------------------------------------

    def enter(self, run: BatchRun) -> None:
        """Start ``run`` on the running loop, known to close() (which ends it) until it ends."""
        with self._lock:
            if self._closed:
                raise LoomClosedError(_CLOSED)
            self._runs.add(run)
        run.start()

    async def leave(self, run: BatchRun) -> None:
        """Stop what is left of ``run`` and forget it."""
        try:
            await run.aclose()
        finally:
            with self._lock:
                self._runs.discard(run)

    def begin_close(self) -> list[BatchRun] | None:
        """Mark the session closed; the runs to end, or ``None`` when it was already closed."""
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            return list(self._runs)

    def release(self) -> None:
        """Drain the writer, then close the store if this session opened it."""
        if self._writer is not None:
            self._writer.close()
        if self._owns_store and self._store is not None:
            self._store.close()
