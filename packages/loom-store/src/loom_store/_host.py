"""What a :class:`~loom_store.StoreWriter` needs of its store, and nothing more.

The writer depends on this interface, not on ``ResultStore``: the store module imports the
writer (``ResultStore.writer()``), never the other way round.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from loom_protocol import StoreError

from ._rows import ResultRow

__all__ = ["ClosableWriter", "RowRejectedError", "WriterHost"]


class RowRejectedError(StoreError):
    """The database refused the rows themselves (a constraint, a value it cannot store).

    Unlike a lost connection or a lock timeout, retrying other rows may succeed; the writer
    uses this to isolate the offending submission from the rest of its group.
    """


class ClosableWriter(Protocol):
    """A writer its store drains and stops when the store closes."""

    def close(self, timeout: float | None = None) -> None:
        """Write everything queued, then stop."""


@runtime_checkable
class WriterHost(Protocol):
    """The store side of a writer; :class:`~loom_store.ResultStore` implements it."""

    @property
    def url(self) -> str:
        """The store's URL, safe to print."""

    def put_many(self, rows: Sequence[ResultRow]) -> None:
        """Write ``rows`` in one transaction; every failure is a ``StoreError``, and a
        :class:`RowRejectedError` when the rows themselves were refused."""

    def attach_writer(self, writer: ClosableWriter) -> None:
        """Close ``writer`` with the store; a ``StoreError`` if the store is closed."""
