"""One call of a batch method: its arguments checked at once, and where it was made.

``map``, ``stream``, ``stream_events`` and their async twins all start with a
:class:`BatchCall`: what is misuse (a closed loom, a bad ``task_name`` or ``max_workers``, a
single string given as the inputs) is refused when the method is called, the same way by every
twin. What can only fail later (opening the store) fails the same way too: inside the batch.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import AsyncIterable, Iterable, Sized
from dataclasses import dataclass
from typing import Any

from loom_protocol import LoomUsageError, check_int, check_non_empty_string

from ._budget import BudgetLimits
from ._inputs import records_of

__all__ = ["BatchCall", "LoomConfigWarning", "batch_call"]

Inputs = Iterable[Any] | AsyncIterable[Any]

#: The prefix of loom-core's own modules, whose frames a warning never points at.
_OURS = "loom_core."


class LoomConfigWarning(UserWarning):
    """A task_name holds results of another configuration; they are not served, but recomputed."""


@dataclass(frozen=True, slots=True)
class _Site:
    """Where the user called the batch method: what a warning about the call points at."""

    filename: str
    lineno: int
    module: str
    globals: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BatchCall:
    """The checked arguments of one batch method call."""

    sequence: Inputs
    task_name: str | None
    max_workers: int
    ordered: bool
    #: Whether a consumer reads it at its own pace (streams), rather than collecting it (map).
    streamed: bool
    #: The number of inputs, when the inputs have a ``len()``.
    total: int | None
    site: _Site
    #: The batch's spending caps (``max_cost``, ``max_tokens_total``), if any.
    budget: BudgetLimits | None = None

    def warn_other_configs(self, others: list[str]) -> None:
        """Warn that ``task_name`` holds results of ``others`` configurations, at the call.

        The warning is raised from wherever the batch runs (the loom's loop thread for the
        sync API) but points at the user's call, as ``stacklevel`` would, so that the usual
        filters (once per call site) apply.
        """
        if not others:
            return
        site = self.site
        warnings.warn_explicit(
            f"task_name {self.task_name!r} holds results of {len(others)} other "
            "configuration(s) (model, templates, schema or generation parameters differ); "
            "their rows are kept and served again if you switch back. Inputs this "
            "configuration has no result for are computed.",
            LoomConfigWarning,
            site.filename,
            site.lineno,
            module=site.module,
            # No module_globals (warnings.warn passes none either): given them, warn_explicit
            # asks the module's loader for its source, which raises for a script run with
            # -m (measured: "loader … cannot handle __main__").
            registry=site.globals.setdefault("__warningregistry__", {}),
        )


def batch_call(
    sequence: Inputs,
    task_name: str | None,
    max_workers: int,
    ordered: bool,
    *,
    streamed: bool,
    budget: BudgetLimits | None = None,
) -> BatchCall:
    """Check a batch method's arguments, and note where the user called the method.

    Raises:
        LoomUsageError: a bad ``task_name`` or ``max_workers``, or inputs that are not an
            iterable of inputs (a single string or dict, a number).
    """
    if task_name is not None:
        check_non_empty_string("task_name", task_name)
    check_int("max_workers", max_workers, 1)
    sequence = records_of(sequence)  # a DataFrame: its rows, not its column names
    if isinstance(sequence, str | bytes | dict):
        raise LoomUsageError(
            f"map/stream take an iterable of inputs, got a single {type(sequence).__name__}; "
            "use process() for one input, or wrap it in a list"
        )
    if not isinstance(sequence, Iterable | AsyncIterable):
        raise LoomUsageError(f"inputs must be iterable, got {type(sequence).__name__}")
    site = _user_site()
    total = len(sequence) if isinstance(sequence, Sized) else None
    return BatchCall(sequence, task_name, max_workers, ordered, streamed, total, site, budget)


def _user_site() -> _Site:
    """The innermost frame outside loom-core: the user's call of map, process, stream…"""
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(_OURS):
        frame = frame.f_back
    return _Site(
        frame.f_code.co_filename,
        frame.f_lineno,
        frame.f_globals.get("__name__", "<unknown>"),
        frame.f_globals,
    )
