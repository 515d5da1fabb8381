"""Where the ``loom`` command shows what the engine logs: above the progress bar, on stderr.

The library itself never configures logging (it only adds a ``NullHandler``, see
``loom_core/__init__.py``); a command line is an application, so it does: WARNING and above by
default (429 pauses, give-ups, a store upgrade), INFO as well with ``--verbose`` (each retry and
re-ask).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from tqdm import tqdm

__all__ = ["cli_logging"]


class _BarSafeHandler(logging.Handler):
    """Writes each record with ``tqdm.write``, so a line never tears the progress bar."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # a closed stderr must not break the run
            self.handleError(record)


@contextmanager
def cli_logging(stream: IO[str], *, verbose: bool) -> Iterator[None]:
    """Show the ``loom`` loggers' records on ``stream`` while the block runs."""
    logger = logging.getLogger("loom")
    handler = _BarSafeHandler(stream)
    handler.setFormatter(logging.Formatter("loom: %(levelname)s %(name)s: %(message)s"))
    level = logging.INFO if verbose else logging.WARNING
    handler.setLevel(level)
    previous = logger.level
    logger.addHandler(handler)
    # Only ever lowered: an application embedding main() may already ask for more.
    if logger.getEffectiveLevel() > level:
        logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
