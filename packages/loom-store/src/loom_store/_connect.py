"""From a store target (a path or a URL) to the engines of its dialect (``_dialect.py``).

A path, ``":memory:"`` or a URL without ``://`` opens SQLite; any other URL is parsed by
SQLAlchemy and handed to the dialect module of its backend name. What can be told from the
target alone (not a string, empty, a URL that does not parse, a database the store does not
run on) is the caller's mistake, a :class:`~loom_protocol.LoomUsageError`; what needs the
machine (a missing folder, a driver not installed, a server that does not answer) is a
:class:`~loom_protocol.StoreError`.
"""

from __future__ import annotations

import os
import re

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from loom_protocol import LoomUsageError

from ._dialect import dialect_for
from ._secrets import render_url
from ._target import StoreTarget

__all__ = ["open_target"]

_URL_PASSWORD_RE = re.compile(r"(://[^/\s:@]*:)[^@\s/]+@")


def open_target(target: str | os.PathLike[str], busy_timeout_s: float) -> StoreTarget:
    """Build the engines for ``target``; nothing is connected yet.

    Raises:
        LoomUsageError: ``target`` is not a string or path, is empty, is not a valid URL, or
            names a database the store does not run on.
        StoreError: the dialect refused it (a SQLite file's folder does not exist, a driver
            is not installed).
    """
    if isinstance(target, os.PathLike):
        return _open(_sqlite_url(os.fspath(target)), busy_timeout_s)
    if not isinstance(target, str):
        raise LoomUsageError(
            f"ResultStore target must be a path or a URL string, got {type(target).__name__}"
        )
    if not target.strip():
        raise LoomUsageError("ResultStore target is empty; give a file path or a URL")
    if "://" not in target:
        return _open(_sqlite_url(target), busy_timeout_s)
    try:
        url = make_url(target)
        url.port  # noqa: B018 - parses the port, which make_url leaves to later
    except (ArgumentError, ValueError):
        url = None
    if url is None:
        shown = _URL_PASSWORD_RE.sub(r"\1***@", target)
        raise LoomUsageError(f"not a valid store URL: {shown!r}")
    return _open(url, busy_timeout_s)


def _sqlite_url(path: str) -> URL:
    return URL.create("sqlite+pysqlite", database=path)


def _open(url: URL, busy_timeout_s: float) -> StoreTarget:
    backend = url.get_backend_name()
    dialect = dialect_for(backend)
    if dialect is None:
        raise LoomUsageError(
            f"cannot open store {render_url(url)}: dialect {backend!r} is not supported; "
            "loom-store runs on SQLite and PostgreSQL"
        )
    return dialect.open(url, busy_timeout_s)
