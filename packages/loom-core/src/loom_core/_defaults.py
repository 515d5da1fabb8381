"""Defaults shared by the Python API and the ``loom`` command line, defined once."""

from __future__ import annotations

from loom_store import DEFAULT_TARGET

__all__ = ["DEFAULT_DB", "DEFAULT_MAX_WORKERS"]

#: The result store used when a task name is given and no store: a SQLite file in the
#: working directory (``db_path=`` in Python, ``--db`` on the command line).
DEFAULT_DB = DEFAULT_TARGET

#: Calls in flight at most, per batch, unless ``max_workers`` (``--workers``) says otherwise.
DEFAULT_MAX_WORKERS = 5
