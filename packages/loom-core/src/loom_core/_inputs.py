"""Admitting inputs: normalise one input to its canonical value and task id, never raising.

The canonical value (``loom_protocol.canonicalize``) is what the task id hashes and what the
templates render, so two inputs with the same id always get the same prompt. Values that are
not JSON but have an obvious JSON meaning are converted on the way (:func:`json_value`); the
rest, and anything that cannot even be read, make the input ``input_invalid``.

pandas and numpy are never imported here: a value can only be a DataFrame or a numpy number
when the caller has imported them already, so they are looked up in ``sys.modules``.
"""

from __future__ import annotations

import datetime
import decimal
import reprlib
import sys
from collections.abc import Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass
from typing import Any

from loom_protocol import (
    Error,
    ErrorCode,
    LoomUsageError,
    TaskResult,
    Usage,
    canonical_fingerprint,
    fingerprint,
    shorten,
)

__all__ = [
    "DataFrameRecords",
    "PreparedInput",
    "failed_result",
    "json_value",
    "prepare_input",
    "records_of",
]


def failed_result(
    task_id: str,
    code: ErrorCode,
    message: str,
    *,
    input_data: dict[str, Any] | None = None,
    detail: str | None = None,
    raw_output: str | None = None,
    reasoning: str | None = None,
    attempts: int = 0,
    usage: Usage | None = None,
    latency_ms: float | None = None,
    model: str | None = None,
    retryable: bool = False,
    status: int | None = None,
) -> TaskResult[Any]:
    """A failed result with an :class:`Error` of ``code``."""
    return TaskResult(
        task_id=task_id,
        is_success=False,
        error=Error(code=code, message=message, detail=detail, retryable=retryable, status=status),
        input_data=input_data or {},
        raw_output=raw_output,
        reasoning=reasoning,
        attempts=attempts,
        usage=usage,
        latency_ms=latency_ms,
        model=model,
    )


@dataclass(slots=True)
class PreparedInput:
    """An input after admission: its task id and canonical value, or a failure."""

    task_id: str
    data: dict[str, Any]
    failure: TaskResult[Any] | None = None


def json_value(value: Any) -> Any:
    """The JSON meaning of a value that is not a JSON type (the fingerprint's ``convert``).

    numpy numbers become Python numbers, numpy arrays lists, other mappings dicts;
    ``datetime``, ``date``, ``time`` (pandas ``Timestamp`` too) and ``numpy.datetime64`` become
    ISO 8601 text; ``Decimal`` becomes its text (``"9.90"``: a float could change the digits).
    A missing value (pandas
    ``NA``/``NaT``, a NaN ``Decimal``) and ``bytes`` raise ``ValueError``/``TypeError`` saying
    why. Anything else is returned as it is, which the fingerprint then refuses by type.
    """
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.generic | np.ndarray):
        if isinstance(value, np.datetime64):
            if np.isnat(value):
                raise ValueError("a missing value (NaT) is not JSON; drop or fill it first")
            return str(np.datetime_as_string(value))
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "biufUO":
                raise TypeError(f"a numpy array of dtype {value.dtype} has no JSON meaning")
            return value.tolist()
        if isinstance(value, np.bool_ | np.integer | np.floating):
            return value.item()
        return value
    pd = sys.modules.get("pandas")
    if pd is not None and (value is pd.NA or value is pd.NaT):
        name = "NA" if value is pd.NA else "NaT"
        raise ValueError(f"a missing value (pandas {name}) is not JSON; drop or fill it first")
    if isinstance(value, datetime.date | datetime.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise ValueError(f"Decimal {value} is not a number JSON can hold")
        return str(value)
    if isinstance(value, Mapping):  # a MappingProxyType, a UserDict... inside an input
        return dict(value.items())
    if isinstance(value, bytes | bytearray | memoryview):
        raise TypeError("bytes are not text: decode them first (or pass an image as a path)")
    return value


# Built-in types whose repr is bounded and safe under reprlib's limits; anything else (a
# subclass with its own __repr__, an object of the user's) is shown by its type's name only.
_SHOWN_TYPES = frozenset({dict, list, tuple, str, int, float, bool, type(None), bytes, set})


class _SafeRepr(reprlib.Repr):
    """reprlib's bounded repr that never runs an object's own ``__repr__``."""

    def repr1(self, x: Any, level: int) -> str:
        if type(x) in _SHOWN_TYPES:
            return super().repr1(x, level)
        return f"<{_type_name(x)} object>"

    def repr_int(self, x: int, level: int) -> str:
        try:
            return super().repr_int(x, level)
        except ValueError:  # more digits than Python converts to text
            return "<int too long to show>"


_shown = _SafeRepr()
_shown.maxlevel = 3
_shown.maxstring = 120
_shown.maxother = 60
_shown.maxlong = 60


def _describe(value: Any) -> str:
    """A short description of an invalid input that never runs the input's own code."""
    try:
        return _shown.repr(value)
    except Exception:  # pragma: no cover - a bug in reprlib's handling of built-in types
        return f"<{_type_name(value)} object>"


_TYPE_NAME = vars(type)["__name__"]


def _type_name(value: Any) -> str:
    """The name of ``value``'s class, read without running any of its code (or its
    metaclass's): safe for a message about a value that misbehaves."""
    name: str = _TYPE_NAME.__get__(type(value), type)
    return name


def _invalid(raw: Any, message: str) -> PreparedInput:
    shown = _describe(raw)
    task_id = fingerprint({"invalid_input": shown})
    return PreparedInput(
        task_id=task_id,
        data={"value": shown},
        failure=failed_result(
            task_id, ErrorCode.INPUT_INVALID, message, input_data={"value": shown}
        ),
    )


def _record(raw: Any) -> dict[str, Any] | None:
    """``raw`` as the dict to fingerprint, or ``None`` when it is no kind of record."""
    if isinstance(raw, str):
        return {"text": raw}
    if isinstance(raw, dict):
        return raw
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(raw, pd.Series):  # one row of a DataFrame
        return dict(raw.items())
    if isinstance(raw, Mapping):
        return dict(raw.items())
    return None


def prepare_input(raw: Any) -> PreparedInput:
    """Normalise one input and fingerprint it (a string ``s`` becomes ``{"text": s}``).

    The prepared data is the input's canonical value (see the module docstring). Never raises
    (except ``BaseException`` such as KeyboardInterrupt): an input that is not a dict, a string,
    a mapping or a pandas Series, that holds something with no JSON meaning (named with where
    it sits), that nests deeper than ``MAX_INPUT_DEPTH`` or contains itself, or whose own code
    raises while it is read, becomes a prepared failure with code ``input_invalid``.
    """
    try:
        kind = type(raw)
        if kind is dict:
            data: dict[str, Any] | None = raw
        elif kind is str:
            data = {"text": raw}
        else:
            data = _record(raw)
            if data is None:
                return _invalid(
                    raw,
                    "an input must be a dict or a string (or a mapping, or a pandas row), "
                    f"got {_type_name(raw)}",
                )
        value, task_id = canonical_fingerprint(data, convert=json_value)
    except Exception as exc:
        return _invalid(raw, f"the input cannot be used: {_reason(exc)}")
    return PreparedInput(task_id=task_id, data=value)


def _reason(exc: Exception) -> str:
    try:
        text = str(exc)
    except Exception:
        text = ""
    if isinstance(exc, TypeError | ValueError) and text.startswith("fingerprint: "):
        return text.removeprefix("fingerprint: ")
    name = _type_name(exc)
    return f"{name}: {shorten(text, 300)}" if text else name


class DataFrameRecords(Sized, Iterable[dict[str, Any]]):
    """A pandas DataFrame as inputs: one dict per row, column name to cell, made lazily.

    The index is not part of the input (``df.reset_index()`` to include it). Cells go through
    the engine's admission like any input (numpy numbers become Python numbers; a NaN makes the
    row ``input_invalid``, naming its column).

    Raises:
        LoomUsageError: a column name is not a string, or two columns share a name.
    """

    def __init__(self, frame: Any) -> None:
        columns = list(frame.columns)
        for column in columns:
            if not isinstance(column, str):
                raise LoomUsageError(
                    f"DataFrame column names must be strings (they become template variables), "
                    f"got {_describe(column)} ({_type_name(column)}); "
                    "rename them, e.g. df.columns = df.columns.astype(str)"
                )
        if len(set(columns)) != len(columns):
            repeated = sorted({c for c in columns if columns.count(c) > 1})
            raise LoomUsageError(f"DataFrame has repeated column names: {', '.join(repeated)}")
        self._frame = frame
        self._columns = columns

    def __len__(self) -> int:
        return len(self._frame)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        columns = self._columns
        for row in self._frame.itertuples(index=False, name=None):
            yield dict(zip(columns, row, strict=True))


def records_of(sequence: Any) -> Any:
    """The inputs of ``sequence``: a DataFrame's rows as records, anything else unchanged."""
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(sequence, pd.DataFrame):
        return DataFrameRecords(sequence)
    return sequence
