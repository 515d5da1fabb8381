"""The records the store reads and writes: ``ResultRow``, ``RunRecord``, ``ConfigInfo`` and
``TaskStats``."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Generic, Literal, NamedTuple, TypeVar

from pydantic import NonNegativeFloat, NonNegativeInt

from loom_protocol import (
    LoomUsageError,
    check_int,
    check_non_empty_string,
    check_non_negative_number,
)

__all__ = [
    "STATUSES",
    "CachedHit",
    "ConfigInfo",
    "ResultRow",
    "RunRecord",
    "TaskStats",
    "row_from_values",
]

D = TypeVar("D")

#: The two values of ``ResultRow.status``.
STATUSES: tuple[str, ...] = ("succeeded", "failed")

_TEXT_FIELDS = ("data", "raw_output", "reasoning", "error", "input", "usage", "model")


@dataclass(frozen=True, slots=True)
class ResultRow:
    """One task's outcome as stored in ``loom_results``.

    The engine serializes the structured parts (``data``, ``error``, ``input``, ``usage``) to
    JSON text before handing the row over; the store keeps them verbatim.

    Attributes:
        task_name: The batch's name; with ``config_fp`` and ``task_id`` the primary key.
        task_id: The input's fingerprint.
        config_fp: The fingerprint of the configuration that produced the row: every
            configuration keeps its own row of an input.
        status: ``"succeeded"`` (served from the cache) or ``"failed"`` (kept for inspection,
            never served).
        data: JSON text of the parsed data.
        raw_output: The model's raw answer.
        reasoning: The model's reasoning, when it gave one.
        error: JSON text of a ``loom_protocol.Error``.
        input: JSON text of the normalised input.
        usage: JSON text of a ``loom_protocol.Usage``.
        attempts: How many calls the task took.
        latency_ms: Wall time of the task.
        model: The model that answered.
        created_at: When the row was first written (UTC); set by the store, ignored on write.
        updated_at: When the row was last written (UTC); set by the store, ignored on write.

    Raises:
        LoomUsageError: a key is empty or not a string, ``status`` is unknown, ``attempts`` is
            negative, or a text field holds a non-string.
    """

    task_name: str
    task_id: str
    config_fp: str
    status: Literal["succeeded", "failed"]
    data: str | None = None
    raw_output: str | None = None
    reasoning: str | None = None
    error: str | None = None
    input: str | None = None
    usage: str | None = None
    attempts: int = 0
    latency_ms: float | None = None
    model: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def __post_init__(self) -> None:
        # Checked here, once, so that a bad row fails in the caller's frame with a clear
        # message instead of inside the writer thread as a constraint violation. One boolean
        # expression on the common path: rows are built per task and per cache hit.
        latency = self.latency_ms
        if (
            type(self.task_name) is str
            and self.task_name
            and type(self.task_id) is str
            and self.task_id
            and type(self.config_fp) is str
            and self.config_fp
            and (self.status == "succeeded" or self.status == "failed")
            and (self.data is None or type(self.data) is str)
            and (self.raw_output is None or type(self.raw_output) is str)
            and (self.reasoning is None or type(self.reasoning) is str)
            and (self.error is None or type(self.error) is str)
            and (self.input is None or type(self.input) is str)
            and (self.usage is None or type(self.usage) is str)
            and (self.model is None or type(self.model) is str)
            and type(self.attempts) is int
            and self.attempts >= 0
            and (latency is None or (type(latency) is float and 0 <= latency < math.inf))
        ):
            return
        self._explain()

    def _explain(self) -> None:
        """Raise the precise error for a row that failed the fast check in __post_init__."""
        for name in ("task_name", "task_id", "config_fp"):
            value = getattr(self, name)
            check_non_empty_string(f"ResultRow.{name}", value)
        if self.status not in STATUSES:
            raise LoomUsageError(
                f"ResultRow.status must be 'succeeded' or 'failed', got {self.status!r}"
            )
        for name in _TEXT_FIELDS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise LoomUsageError(
                    f"ResultRow.{name} must be a str (JSON text) or None, "
                    f"got {type(value).__name__}"
                )
        check_int("ResultRow.attempts", self.attempts, 0)
        latency = self.latency_ms
        if latency is not None:
            check_non_negative_number("ResultRow.latency_ms", latency)
        # Only str subclasses, int subclasses or an int latency get here: normalise them so
        # that what is stored and read back is exactly what was given.
        for name in ("task_name", "task_id", "config_fp", "status", *_TEXT_FIELDS):
            value = getattr(self, name)
            if value is not None and type(value) is not str:
                object.__setattr__(self, name, str(value))
        object.__setattr__(self, "attempts", int(self.attempts))
        if latency is not None:
            object.__setattr__(self, "latency_ms", float(latency))


def _compile_row_builder() -> Callable[[Sequence[Any]], ResultRow]:
    # Rows read back from the store were validated when they were written; building them
    # through __init__ would validate again and go through object.__setattr__ per field.
    # Straight-line code over the slots' own setters (as dataclasses generates __init__)
    # costs ~1.1 µs a row against ~2.6 µs, a sixth of a cache lookup's total.
    names = [f.name for f in fields(ResultRow)]
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": ResultRow}
    lines = ["def row_from_values(values):", "    row = _new(_cls)"]
    for i, name in enumerate(names):
        namespace[f"_set_{name}"] = getattr(ResultRow, name).__set__
        lines.append(f"    _set_{name}(row, values[{i}])")
    lines.append("    return row")
    exec("\n".join(lines), namespace)  # the code is built from field names only
    builder: Callable[[Sequence[Any]], ResultRow] = namespace["row_from_values"]
    return builder


#: Build a ResultRow from the 15 values of a ``loom_results`` row, in column order, without
#: validating them again.
row_from_values = _compile_row_builder()


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One configuration a task name has been run with (a row of ``loom_runs``).

    Attributes:
        task_name: The batch's name.
        config_fp: The configuration's fingerprint.
        config: The configuration as registered, with credentials replaced by ``"***"``.
        created_at: When the configuration was first registered (UTC).
        last_run_at: When a run last registered it (UTC); a store migrated from schema 1
            starts with its last row write, or ``created_at``.
    """

    task_name: str
    config_fp: str
    config: dict[str, Any]
    created_at: datetime
    last_run_at: datetime


@dataclass(frozen=True, slots=True)
class ConfigInfo:
    """One configuration of a task name: its registration and its rows.

    A configuration appears when it is registered (``loom_runs``) or has rows, so a store
    filled through ``put_many`` alone (or a 0.1 store whose registry is empty) lists its
    configurations too, with ``config`` and the registration times ``None``.

    Attributes:
        task_name: The batch's name.
        config_fp: The configuration's fingerprint.
        config: The configuration as registered (credentials replaced by ``"***"``), or
            ``None`` when it was never registered.
        created_at: When it was first registered (UTC), or ``None``.
        last_run_at: When a run last registered it (UTC), or ``None``.
        last_write_at: When one of its rows was last written (UTC), or ``None`` without rows.
        total: Its rows.
        succeeded: Its rows with status ``succeeded``.
        failed: Its rows with status ``failed``.
    """

    task_name: str
    config_fp: str
    config: dict[str, Any] | None
    created_at: datetime | None
    last_run_at: datetime | None
    last_write_at: datetime | None
    total: int
    succeeded: int
    failed: int


@dataclass(frozen=True, slots=True)
class TaskStats:
    """Counts over one task name's results, of one configuration or of all.

    Attributes:
        task_name: The batch's name.
        total: Rows stored under the name (and configuration).
        succeeded: Rows with status ``succeeded``.
        failed: Rows with status ``failed``.
        failures_by_code: Failed rows per error code (the ``code`` of the row's error JSON;
            ``"unknown"`` when the error is missing or unreadable).
        config_fps: The configuration fingerprints the rows were produced with, sorted.
        config_fp: The configuration counted, or ``None`` for all of them.
    """

    task_name: str
    total: int
    succeeded: int
    failed: int
    failures_by_code: dict[str, int] = field(default_factory=dict)
    config_fps: tuple[str, ...] = ()
    config_fp: str | None = None


class CachedHit(NamedTuple, Generic[D]):
    """One cache hit: what serving a stored result needs of a succeeded row, and nothing more.

    The layout of an element of :meth:`ResultStore.get_hits`'s JSON array, defined here once:
    the dialects build their SQL from these fields, and the engine validates the array as
    ``list[CachedHit[its data type]]`` in one pydantic pass. ``position`` is the index of
    the hit's id in the ids asked for; ``data`` is the stored JSON value, validated as ``D``;
    ``usage`` the stored token counts.
    """

    position: NonNegativeInt
    data: D
    usage: dict[str, NonNegativeInt] | None
    raw_output: str | None
    reasoning: str | None
    attempts: NonNegativeInt
    latency_ms: NonNegativeFloat | None
    model: str | None
