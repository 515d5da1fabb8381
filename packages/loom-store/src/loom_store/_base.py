"""The plumbing every ``ResultStore`` operation shares: opening, closing, errors, writers."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import weakref
from collections.abc import Iterator
from typing import Self

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from loom_protocol import LoomError, StoreError, check_positive_number, shorten

from ._connect import open_target
from ._host import ClosableWriter, RowRejectedError
from ._migrate import prepare_schema
from ._target import StoreTarget

__all__ = ["DEFAULT_TARGET", "StoreBase"]

#: The store a bare ``ResultStore()`` opens: a SQLite file in the working directory.
DEFAULT_TARGET = ".loom.db"

_ROW_DETAIL_RE = re.compile(r"DETAIL:\s+Failing row contains \(.*\)\.?", re.DOTALL)
_MAX_DETAIL = 2000


class StoreBase:
    """A store's connection to its database and its lifetime; see ``ResultStore``."""

    def __init__(
        self, target: str | os.PathLike[str] = DEFAULT_TARGET, *, busy_timeout_s: float = 30.0
    ) -> None:
        self._busy_timeout_s = check_positive_number(
            "busy_timeout_s", busy_timeout_s, " of seconds"
        )
        self._t: StoreTarget = open_target(target, self._busy_timeout_s)
        self._closed = False
        self._close_lock = threading.Lock()
        self._writers: weakref.WeakSet[ClosableWriter] = weakref.WeakSet()
        self._d = self._t.dialect
        try:
            self._insert_run = self._d.insert_run()
            prepare_schema(self._t, self._wrap)
            self._checkpointer = self._d.checkpointer(self._t, self._busy_timeout_s)
        except BaseException:
            self._t.engine.dispose()
            raise

    # -- facts ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The store's URL with its password masked (safe to print or log)."""
        return self._t.url

    @property
    def dialect(self) -> str:
        """The database kind: ``"sqlite"`` or ``"postgresql"``."""
        return self._d.name

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ""
        return f"ResultStore({self.url!r}{state})"

    # -- writer and lifetime -------------------------------------------------------------

    def attach_writer(self, writer: ClosableWriter) -> None:
        """Drain and close ``writer`` when this store closes (a ``StoreWriter`` attaches
        itself when it starts).

        Raises:
            StoreError: the store is closed.
        """
        self._check_open("start a writer")
        self._writers.add(writer)

    def close(self) -> None:
        """Drain and stop this store's writers, then release every connection. Idempotent."""
        with self._close_lock:
            if self._closed:
                return
            try:
                for w in list(self._writers):
                    w.close()
            finally:
                self._closed = True
                if self._checkpointer is not None:
                    self._checkpointer.stop()
                self._t.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------

    def _check_open(self, action: str) -> None:
        if self._closed:
            raise StoreError(f"{action}: the store {self.url} is closed")

    @contextlib.contextmanager
    def _op(self, action: str) -> Iterator[None]:
        """Run one operation: refuse a closed store, wrap every foreign exception."""
        self._check_open(action)
        error: StoreError | None = None
        try:
            with self._t.serialize():
                yield
        except LoomError:
            raise
        except Exception as exc:
            error = self._wrap(action, exc)
        if error is not None:
            # Raised outside the except block: the driver's exception (its text unredacted)
            # is neither the cause nor the context of what the caller sees.
            raise error

    def _wrap(self, action: str, exc: BaseException) -> StoreError:
        cause: BaseException = exc
        if isinstance(exc, DBAPIError) and exc.orig is not None:
            cause = exc.orig
        detail = " ".join(str(cause).split()) or type(cause).__name__
        # PostgreSQL quotes the whole offending row ("DETAIL: Failing row contains (…)"):
        # a result's content does not belong in an error message or a log line.
        detail = _ROW_DETAIL_RE.sub("DETAIL: (the row is not shown)", detail)
        detail = shorten(detail, _MAX_DETAIL)
        hint = ""
        if "database is locked" in detail:
            hint = (
                f" (waited busy_timeout_s={self._busy_timeout_s:g} s for another "
                "connection's write lock)"
            )
        message = f"{action} failed on store {self.url}: {type(cause).__name__}: {detail}{hint}"
        rejected = isinstance(exc, IntegrityError | DataError) or (
            not isinstance(exc, DBAPIError) and isinstance(exc, ValueError | TypeError)
        )
        kind = RowRejectedError if rejected else StoreError
        return kind(self._t.redact(message))
