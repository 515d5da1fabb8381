"""A store's engines and the facts the store needs about them (shared by every dialect)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from loom_protocol import LoomUsageError, StoreError

from ._secrets import Redactor, render_url

if TYPE_CHECKING:
    from ._dialect import Dialect

__all__ = ["WRITE_OPTION", "StoreTarget", "create", "nullcontext_factory", "target"]

#: Execution option marking an engine whose transactions write (SQLite: ``BEGIN IMMEDIATE``).
WRITE_OPTION = "loom_store_write"


@dataclass(frozen=True)
class StoreTarget:
    """A store's engines and the facts the store needs about them.

    Attributes:
        engine: For reads.
        write_engine: The same pool, flagged so that its transactions write.
        url: The URL, safe to print.
        dialect: The database's dialect (connect hooks, locks, hot-path SQL, migrations).
        redact: Removes this URL's secrets from any text.
        serialize: A lock every operation takes (an in-memory SQLite database lives on one
            shared connection), or a no-op.
    """

    engine: Engine
    write_engine: Engine
    url: str
    dialect: Dialect
    redact: Callable[[str], str]
    serialize: Callable[[], contextlib.AbstractContextManager[Any]]


def create(url: URL, **kwargs: Any) -> Engine:
    """SQLAlchemy's engine for ``url``; its failures as loom's errors, free of secrets.

    Raises:
        LoomUsageError: SQLAlchemy knows no such dialect (the URL names none it can use).
        StoreError: the driver is not installed, or the URL's arguments are refused.
    """
    shown = render_url(url)
    misuse = False
    # Errors are raised outside the except blocks so that the foreign exception is neither
    # cause nor context of the error the caller sees.
    try:
        # hide_parameters: a failed statement's message must not carry a batch of rows.
        return create_engine(url, hide_parameters=True, **kwargs)
    except NoSuchModuleError:
        misuse = True
        problem = f"unknown database dialect {url.drivername!r}"
    except ImportError as exc:
        problem = (
            f"the database driver is not installed ({exc.name}); "
            "for PostgreSQL install loom-store[postgres]"
        )
    except (ArgumentError, TypeError, ValueError) as exc:
        problem = Redactor(url)(str(exc))
    if misuse:
        raise LoomUsageError(f"cannot open store {shown}: {problem}")
    raise StoreError(f"cannot open store {shown}: {problem}")


def target(
    engine: Engine,
    url: URL,
    dialect: Dialect,
    serialize: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
) -> StoreTarget:
    """The :class:`StoreTarget` of a built engine."""
    return StoreTarget(
        engine=engine,
        write_engine=engine.execution_options(**{WRITE_OPTION: True}),
        url=render_url(url),
        dialect=dialect,
        redact=Redactor(url),
        serialize=serialize or nullcontext_factory,
    )


def nullcontext_factory() -> contextlib.AbstractContextManager[None]:
    """No serialization: the pool hands each thread its own connection."""
    return contextlib.nullcontext()
