"""The errors of reading an answer, worded for the user and for the model asked again.

An unusable answer raises :class:`OutputError`, carrying a structured
:class:`~loom_protocol.Error` (``json_invalid`` or ``validation_failed``) whose detail is what
the engine quotes back to the model when it asks again.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ValidationError

from loom_protocol import Error, ErrorCode

__all__ = [
    "OutputError",
    "describe_type",
    "json_type_name",
    "not_an_object",
    "trim",
    "validation_error",
]

_MAX_ERRORS_IN_MESSAGE = 3


class OutputError(Exception):
    """An answer could not be turned into the requested output.

    Attributes:
        error: The structured error: code ``json_invalid`` or ``validation_failed``, a short
            message, and the full report in ``detail``.
    """

    def __init__(self, error: Error) -> None:
        super().__init__(str(error))
        self.error = error


def not_an_object(value: Any) -> OutputError:
    """The error for a decoded answer that should have been one JSON object."""
    kind = json_type_name(value)
    return OutputError(
        Error(
            code=ErrorCode.VALIDATION_FAILED,
            message=f"expected a JSON object, got {kind}",
            detail=f"The answer must be one JSON object; it was {kind}:"
            f" {trim(json.dumps(value, ensure_ascii=False), 300)}",
        )
    )


def validation_error(
    model: type[BaseModel], exc: ValidationError, subject: str = "the answer"
) -> Error:
    """An ``Error`` summarising pydantic's errors (first few in the message, all in the detail)."""
    errors = exc.errors(include_url=False)
    summary = "; ".join(
        f"{_location(error['loc'])}: {error['msg']}" for error in errors[:_MAX_ERRORS_IN_MESSAGE]
    )
    if len(errors) > _MAX_ERRORS_IN_MESSAGE:
        summary += f" (and {len(errors) - _MAX_ERRORS_IN_MESSAGE} more)"
    lines = [f"{len(errors)} validation error(s) for {model.__name__}:"]
    for error in errors:
        given = trim(repr(error.get("input")), 200)
        lines.append(
            f"- {_location(error['loc'])}: {error['msg']} [type={error['type']}, input={given}]"
        )
    return Error(
        code=ErrorCode.VALIDATION_FAILED,
        message=f"{subject} does not match {model.__name__}: {summary}",
        detail="\n".join(lines),
    )


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(root)"


def json_type_name(value: Any) -> str:
    """What a decoded JSON value is, in words: ``"an array"``, ``"a number"``, ``"null"``..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def describe_type(value: Any) -> str:
    """A class by its name, anything else by its (shortened) repr and its type."""
    if isinstance(value, type):
        return f"the class {value.__qualname__}"
    text = repr(value)
    return f"{trim(text, 80)} ({type(value).__name__})"


def trim(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying how many were left out."""
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more chars]"
