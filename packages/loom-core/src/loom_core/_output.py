"""Turning a model's answer into the value the user asked for.

:class:`OutputSpec` is built once from ``response_model`` (``None`` → text, ``dict`` → a JSON
object, a pydantic model class → an instance) and then parses every answer: code fences and
prose around the JSON are stripped, dirty JSON is repaired with ``json_repair`` when allowed, and
the value is validated. A failure raises :class:`OutputError` carrying a structured
:class:`~loom_protocol.Error` (``json_invalid`` or ``validation_failed``) whose detail can be fed
back to the model when the engine asks again (:meth:`OutputSpec.feedback_message`).

:func:`split_reasoning` separates a leading ``<think>…</think>`` block from the answer.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any, Literal, get_origin

import json_repair
from pydantic import BaseModel, RootModel, ValidationError

from loom_protocol import Error, ErrorCode, LoomUsageError

__all__ = ["OutputError", "OutputSpec", "split_reasoning"]

OutputKind = Literal["text", "dict", "model"]

# How many JSON-looking spans of an answer are tried before giving up: bounds the work spent on
# an answer that is mostly prose with brackets in it.
_MAX_CANDIDATES = 8
_MAX_FEEDBACK_DETAIL = 2000
_MAX_ERRORS_IN_MESSAGE = 3

_FENCE = re.compile(r"```[A-Za-z0-9_+.-]*[ \t]*\n?(.*?)```", re.DOTALL)
_OPEN_FENCE = re.compile(r"```[A-Za-z0-9_+.-]*[ \t]*\n?(.*)\Z", re.DOTALL)
_SCHEMA_NAME_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_THINK_BLOCK = re.compile(r"\A\s*<(think|thinking)>(.*?)</\1>", re.DOTALL | re.IGNORECASE)
_THINK_OPEN = re.compile(r"\A\s*<(?:think|thinking)>(.*)\Z", re.DOTALL | re.IGNORECASE)


class OutputError(Exception):
    """An answer could not be turned into the requested output.

    Attributes:
        error: The structured error: code ``json_invalid`` or ``validation_failed``, a short
            message, and the full report in ``detail``.
    """

    def __init__(self, error: Error) -> None:
        super().__init__(str(error))
        self.error = error


class OutputSpec:
    """What the engine asks the model for and how it reads the answer.

    Build it with :meth:`from_response_model`.

    Attributes:
        kind: ``"text"``, ``"dict"`` or ``"model"``.
        model: The pydantic model class for kind ``"model"``, else ``None``.
        response_format: The OpenAI-style ``response_format`` to send, or ``None`` for text.
        fingerprint_source: A JSON-able description for the engine's config fingerprint:
            ``{"kind": ..., "schema": <JSON schema or None>}``.
    """

    __slots__ = ("_schema", "fingerprint_source", "kind", "model", "response_format")

    def __init__(self, kind: OutputKind, model: type[BaseModel] | None = None) -> None:
        if (kind == "model") != (model is not None):
            raise LoomUsageError("OutputSpec: a model class is required for kind 'model' only")
        self.kind: OutputKind = kind
        self.model = model
        self._schema: dict[str, Any] | None = None
        self.response_format: dict[str, Any] | None = None
        if model is not None:
            self._schema = _json_schema(model)
            self.response_format = {
                "type": "json_schema",
                "json_schema": {
                    "name": _schema_name(model.__name__),
                    "schema": self._schema,
                    "strict": False,
                },
            }
        elif kind == "dict":
            self.response_format = {"type": "json_object"}
        self.fingerprint_source: dict[str, Any] = {"kind": kind, "schema": self._schema}

    @classmethod
    def from_response_model(cls, response_model: Any) -> OutputSpec:
        """Build the spec for a ``response_model`` argument.

        Args:
            response_model: ``None`` for the raw text, ``dict`` for a JSON object, or a pydantic
                ``BaseModel`` subclass for validated instances.

        Returns:
            The spec.

        Raises:
            LoomUsageError: ``response_model`` is anything else, or its JSON schema cannot be
                generated.
        """
        if response_model is None:
            return cls("text")
        if response_model is dict:
            return cls("dict")
        if isinstance(response_model, type) and issubclass(response_model, BaseModel):
            return cls("model", response_model)
        if isinstance(response_model, BaseModel):
            name = type(response_model).__name__
            raise LoomUsageError(
                f"response_model must be a class, got an instance of {name}; pass {name} itself"
            )
        hint = ""
        if get_origin(response_model) is dict:
            hint = " (use plain dict)"
        elif dataclasses.is_dataclass(response_model):
            hint = " (a dataclass; use a pydantic BaseModel instead)"
        raise LoomUsageError(
            "response_model must be None (text), dict (a JSON object) or a pydantic BaseModel"
            f" subclass, got {_describe_type(response_model)}{hint}"
        )

    @property
    def expects_object(self) -> bool:
        """Whether the answer must be a JSON object (true for dict and for non-root models)."""
        if self.kind == "dict":
            return True
        return self.model is not None and not issubclass(self.model, RootModel)

    def parse(self, content: str, *, repair: bool) -> Any:
        """Parse an answer (reasoning already removed) into the requested value.

        Args:
            content: The answer text.
            repair: Whether dirty JSON may be repaired with ``json_repair``.

        Returns:
            The stripped text (kind text), a dict (kind dict) or a model instance (kind model).

        Raises:
            OutputError: ``json_invalid`` when no JSON value can be read from the answer,
                ``validation_failed`` when it has the wrong shape or fails the model's validation.
        """
        if self.kind == "text":
            return content.strip()
        value = _extract_json(content, repair=repair, prefer_object=self.expects_object)
        return self._validate(value)

    def _validate(self, value: Any) -> Any:
        """Check a decoded JSON value against the spec; the model instance for kind model."""
        if self.expects_object and not isinstance(value, dict):
            raise OutputError(
                Error(
                    code=ErrorCode.VALIDATION_FAILED,
                    message=f"expected a JSON object, got {_json_type_name(value)}",
                    detail=f"The answer must be one JSON object; it was {_json_type_name(value)}:"
                    f" {_trim(json.dumps(value, ensure_ascii=False), 300)}",
                )
            )
        if self.model is None:
            return value
        try:
            instance = self.model.model_validate(value)
        except ValidationError as exc:
            raise OutputError(_validation_error(self.model, exc)) from None
        # Lax validation turns the strings "NaN" and "inf" into floats that no strict JSON
        # consumer of the result (an SSE client, the store) accepts: ask again instead.
        if not _all_finite(instance.model_dump()):
            raise OutputError(
                Error(
                    code=ErrorCode.VALIDATION_FAILED,
                    message="the answer holds a number that is NaN or infinite",
                    detail="Every number in the answer must be finite (no NaN or Infinity).",
                )
            )
        return instance

    def to_json(self, value: Any) -> str:
        """Serialise a parsed value for the store (the inverse of :meth:`from_json`).

        Raises:
            TypeError: ``value`` is not of the kind this spec produces.
        """
        if self.model is not None:
            if not isinstance(value, self.model):
                raise TypeError(
                    f"expected a {self.model.__name__} instance, got {type(value).__name__}"
                )
            return value.model_dump_json()
        expected = str if self.kind == "text" else dict
        if not isinstance(value, expected):
            raise TypeError(f"expected a {expected.__name__}, got {type(value).__name__}")
        return json.dumps(value, ensure_ascii=False)

    def from_json(self, text: str) -> Any:
        """Read a value written by :meth:`to_json`.

        Raises:
            OutputError: ``json_invalid`` if ``text`` is not JSON, ``validation_failed`` if the
                stored value no longer fits this spec (for instance, the model changed).
        """
        if self.model is not None:
            try:
                return self.model.model_validate_json(text)
            except ValidationError as exc:
                raise OutputError(_validation_error(self.model, exc, "the stored result")) from None
        try:
            value = json.loads(text)
        except (json.JSONDecodeError, TypeError) as exc:
            raise OutputError(
                Error(code=ErrorCode.JSON_INVALID, message=f"stored result is not JSON: {exc}")
            ) from None
        expected = str if self.kind == "text" else dict
        if not isinstance(value, expected):
            raise OutputError(
                Error(
                    code=ErrorCode.VALIDATION_FAILED,
                    message=f"stored result is {_json_type_name(value)},"
                    f" expected {'a string' if expected is str else 'a JSON object'}",
                )
            )
        return value

    def feedback_message(self, error: Error) -> str:
        """The user message that asks the model again after an unusable answer.

        It is appended after the assistant's bad answer. It names the problem, quotes the
        error's detail (trimmed to about 2,000 characters) and asks for only valid JSON, with the
        JSON schema for kind model.
        """
        parts = [f"Your previous answer could not be used: {error.message}"]
        if error.detail and error.detail != error.message:
            parts.append("Details:\n" + _trim(error.detail, _MAX_FEEDBACK_DETAIL))
        if self._schema is not None:
            parts.append(
                "Reply again with ONLY a valid JSON value matching this JSON schema, without"
                " prose or code fences:\n" + json.dumps(self._schema, ensure_ascii=False)
            )
        elif self.kind == "dict":
            parts.append(
                "Reply again with ONLY one valid JSON object, without prose or code fences."
            )
        else:
            parts.append("Please answer again.")
        return "\n\n".join(parts)

    def __repr__(self) -> str:
        model = f", model={self.model.__name__}" if self.model is not None else ""
        return f"OutputSpec(kind={self.kind!r}{model})"


def split_reasoning(content: str | None, reasoning: str | None = None) -> tuple[str, str | None]:
    """Separate a model's reasoning from its answer.

    A leading ``<think>…</think>`` (or ``<thinking>…</thinking>``) block, possibly after
    whitespace, is removed from ``content`` and its stripped inner text becomes reasoning. An
    unclosed leading ``<think>`` means the answer was cut off while thinking: the answer is empty
    and the rest is reasoning. The backend's own reasoning (``reasoning_content``, thinking
    blocks) comes first when both exist, joined by a blank line.

    Args:
        content: The answer text from the backend; ``None`` counts as ``""``.
        reasoning: Reasoning the backend returned separately, if any.

    Returns:
        ``(answer, reasoning)``; reasoning is ``None`` when there is none.
    """
    text = content or ""
    found: str | None = None
    block = _THINK_BLOCK.match(text)
    if block is not None:
        found = block.group(2).strip()
        text = text[block.end() :].lstrip()
    else:
        unclosed = _THINK_OPEN.match(text)
        if unclosed is not None:
            found = unclosed.group(1).strip()
            text = ""
    pieces = [piece for piece in ((reasoning or "").strip(), found or "") if piece]
    return text, ("\n\n".join(pieces) if pieces else None)


# --- JSON extraction -------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; accepting them would put values into results that break
    # every strict JSON consumer downstream (SSE clients, the store's JSON columns).
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # "1e999" parses to inf without going through parse_constant: refuse it the same way.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of the range of a finite number")
    return value


def _loads(text: str) -> Any:
    return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)


def _extract_json(content: str, *, repair: bool, prefer_object: bool) -> Any:
    """Find the JSON value in an answer: whole, fenced, or embedded in prose; repaired if allowed.

    Raises:
        OutputError: With code ``json_invalid`` when nothing usable is found.
    """
    text = content.strip()
    if not text:
        raise OutputError(Error(code=ErrorCode.JSON_INVALID, message="the answer is empty"))
    try:
        return _loads(text)
    except ValueError as exc:
        first_error = str(exc)

    fenced = [match.group(1).strip() for match in _FENCE.finditer(text)]
    if not fenced and (opened := _OPEN_FENCE.search(text)) is not None:
        # An opening fence that never closes: the answer was cut off inside the code block.
        fenced = [opened.group(1).strip()]
    for block in fenced:
        try:
            return _loads(block)
        except ValueError:
            continue

    # Look for JSON embedded in prose, inside the first fenced block that has any.
    source = next((block for block in fenced if "{" in block or "[" in block), text)
    candidates = _bracket_spans(source)
    if prefer_object:
        # Prose such as "[see below]" must not shadow the object that follows it; a top-level
        # array still gets tried (and reported as the wrong shape) when no object parses.
        candidates.sort(key=lambda span: not span.startswith("{"))
    for candidate in candidates:
        try:
            return _loads(candidate)
        except ValueError as exc:
            if candidate is candidates[0]:
                first_error = str(exc)

    if not candidates:
        message = "the answer contains no JSON object or array"
        detail = f"{message}; it begins: {_trim(text, 200)}"
        raise OutputError(Error(code=ErrorCode.JSON_INVALID, message=message, detail=detail))
    if repair:
        for candidate in candidates:
            repaired = _repair(candidate)
            if repaired is not None:
                return repaired
        detail = f"json.loads: {first_error}; json_repair could not recover a JSON object or array"
    else:
        detail = f"json.loads: {first_error}; JSON repair is disabled"
    raise OutputError(
        Error(
            code=ErrorCode.JSON_INVALID,
            message=f"the answer is not valid JSON ({first_error})",
            detail=detail,
        )
    )


def _repair(candidate: str) -> dict[str, Any] | list[Any] | None:
    """What ``json_repair`` reads in a span; ``None`` unless it is a non-empty container."""
    try:
        value = json_repair.loads(candidate, skip_json_loads=True)
    except Exception:
        # json_repair raises ValueError (and occasionally others) on hopeless input; for us that
        # only means "not repairable", reported as json_invalid by the caller.
        return None
    # A valid empty container was already accepted by json.loads, so an empty one here is what
    # json_repair makes of garbage ("{:::}" → {}): not an answer. json_repair reads "1e999" as
    # an infinite float, which no strict JSON consumer (an SSE client, the store) accepts.
    if isinstance(value, dict | list) and value and _all_finite(value):
        return value
    return None


def _all_finite(value: Any) -> bool:
    """Whether ``value`` holds no NaN or infinite float, at any depth."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_all_finite(item) for item in value.values())
    if isinstance(value, list | tuple | set | frozenset):
        return all(_all_finite(item) for item in value)
    return True


def _bracket_spans(text: str) -> list[str]:
    """Top-level spans that open with ``{`` or ``[`` and end at their matching bracket.

    A span whose bracket never closes (a truncated answer) runs to the end of the text and is
    the last one. Brackets inside double-quoted strings are ignored.
    """
    spans: list[str] = []
    position = 0
    while len(spans) < _MAX_CANDIDATES:
        starts = [i for i in (text.find("{", position), text.find("[", position)) if i >= 0]
        if not starts:
            break
        start = min(starts)
        end = _matching_end(text, start)
        if end is None:
            spans.append(text[start:])
            break
        spans.append(text[start : end + 1])
        position = end + 1
    return spans


def _matching_end(text: str, start: int) -> int | None:
    """Index of the bracket closing the one at ``start``, or ``None`` if it never closes."""
    depth = 0
    in_string = False
    escaped = False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return index
    return None


# --- helpers -----------------------------------------------------------------------------------


def _json_schema(model: type[BaseModel]) -> dict[str, Any]:
    try:
        return model.model_json_schema()
    except Exception as exc:
        # Pydantic raises several error types here (PydanticInvalidForJsonSchema,
        # PydanticUserError, SchemaError); all mean the same thing to the user.
        raise LoomUsageError(
            f"response_model {model.__name__} has no JSON schema: {type(exc).__name__}:"
            f" {str(exc).strip().splitlines()[0] if str(exc).strip() else 'no detail'}"
        ) from None


def _schema_name(name: str) -> str:
    """A class name made safe for OpenAI's ``json_schema.name`` (``[a-zA-Z0-9_-]{1,64}``)."""
    return _SCHEMA_NAME_BAD_CHARS.sub("_", name)[:64] or "response"


def _validation_error(
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
        given = _trim(repr(error.get("input")), 200)
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


def _json_type_name(value: Any) -> str:
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


def _describe_type(value: Any) -> str:
    if isinstance(value, type):
        return f"the class {value.__qualname__}"
    text = repr(value)
    return f"{_trim(text, 80)} ({type(value).__name__})"


def _trim(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more chars]"
