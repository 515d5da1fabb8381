"""Defaults shared by the Python API and the ``loom`` command line, defined once."""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_WORKERS"]

#: Calls in flight at most, per batch, unless ``max_workers`` (``--workers``) says otherwise.
DEFAULT_MAX_WORKERS = 5
