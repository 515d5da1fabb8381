"""Defaults shared by the Python API and the ``loom`` command line, defined once."""

from __future__ import annotations

from loom_store import DEFAULT_TARGET

__all__ = ["DEFAULT_DB", "DEFAULT_FIXED_WORKERS", "DEFAULT_MAX_WORKERS", "default_workers"]

#: The result store used when a task name is given and no store: a SQLite file in the
#: working directory (``db_path=`` in Python, ``--db`` on the command line).
DEFAULT_DB = DEFAULT_TARGET

#: Calls in flight at most, per batch, unless ``max_workers`` (``--workers``) says otherwise:
#: the ceiling of an adaptive loom, which finds the concurrency the provider takes below it.
DEFAULT_MAX_WORKERS = 64

#: The same default for a loom with ``adaptive=False``: the fixed concurrency of Loom before
#: adaptive limits (issue 15), so that turning adaptation off restores that behaviour.
DEFAULT_FIXED_WORKERS = 5


def default_workers(adaptive: bool) -> int:
    """The default ``max_workers`` of a loom, adaptive or not."""
    return DEFAULT_MAX_WORKERS if adaptive else DEFAULT_FIXED_WORKERS
