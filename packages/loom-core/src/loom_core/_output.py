"""Turning a model's answer into the value the user asked for.

:meth:`OutputSpec.from_response_model` picks one spec per loom from ``response_model``:
:class:`TextSpec` (``None``: the text), :class:`DictSpec` (``dict``: a JSON object) or
:class:`ModelSpec` (a pydantic model class: an instance). The spec then parses every answer
(finding and repairing the JSON: :mod:`._extract`), stores and reloads values, and words the
message that asks the model again after an unusable answer. A failure raises
:class:`~._output_errors.OutputError` carrying a structured :class:`~loom_protocol.Error`
(``json_invalid`` or ``validation_failed``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from abc import ABC, abstractmethod
from typing import Any, ClassVar, get_origin

from pydantic import BaseModel, RootModel, ValidationError

from loom_protocol import Error, ErrorCode, LoomUsageError

from ._extract import all_finite, extract_json
from ._output_errors import (
    OutputError,
    describe_type,
    json_type_name,
    not_an_object,
    trim,
    validation_error,
)

__all__ = ["DictSpec", "ModelSpec", "OutputSpec", "TextSpec"]

#: ``json.dumps(value, ensure_ascii=False)``, its encoder built once (per stored result).
_dumps = json.JSONEncoder(ensure_ascii=False).encode

_MAX_FEEDBACK_DETAIL = 2000
_SCHEMA_NAME_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_-]")


class OutputSpec(ABC):
    """What the engine asks the model for and how it reads the answer.

    Build one with :meth:`from_response_model`.

    Attributes:
        name: ``"text"``, ``"dict"`` or ``"model"``: the kind named in ``fingerprint_source``
            and in reprs.
        data_type: What a value of this spec validates as (``str``, ``dict[str, Any]`` or the
            model class): the type of a cached hit's data.
        response_format: The OpenAI-style ``response_format`` to send, or ``None`` for text.
        expects_object: Whether the answer must be one JSON object.
        fingerprint_source: A JSON-able description for the engine's config fingerprint:
            ``{"kind": name, "schema": <JSON schema or None>}``. It must never change for a
            given ``response_model``: stored results are found by it.
    """

    __slots__ = ("fingerprint_source", "response_format")

    name: ClassVar[str]
    data_type: Any
    expects_object: bool
    # The code of an answer cut off at the token limit (finish_reason "length").
    _cut_off_code: ClassVar[ErrorCode] = ErrorCode.JSON_INVALID

    def __init__(
        self, response_format: dict[str, Any] | None, schema: dict[str, Any] | None = None
    ) -> None:
        self.response_format = response_format
        self.fingerprint_source: dict[str, Any] = {"kind": self.name, "schema": schema}

    @staticmethod
    def from_response_model(response_model: Any) -> OutputSpec:
        """Build the spec for a ``response_model`` argument.

        Args:
            response_model: ``None`` for the raw text, ``dict`` for a JSON object, or a pydantic
                ``BaseModel`` subclass for validated instances.

        Returns:
            A :class:`TextSpec`, :class:`DictSpec` or :class:`ModelSpec`.

        Raises:
            LoomUsageError: ``response_model`` is anything else, or its JSON schema cannot be
                generated.
        """
        if response_model is None:
            return TextSpec()
        if response_model is dict:
            return DictSpec()
        if isinstance(response_model, type) and issubclass(response_model, BaseModel):
            return ModelSpec(response_model)
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
            f" subclass, got {describe_type(response_model)}{hint}"
        )

    @abstractmethod
    def parse(self, content: str, *, repair: bool) -> Any:
        """Parse an answer (reasoning already removed) into the requested value.

        Args:
            content: The answer text.
            repair: Whether dirty JSON may be repaired with ``json_repair``.

        Returns:
            The stripped text, a dict or a model instance.

        Raises:
            OutputError: ``json_invalid`` when no JSON value can be read from the answer,
                ``validation_failed`` when it has the wrong shape or fails the model's validation.
        """

    @abstractmethod
    def to_json(self, value: Any) -> str:
        """Serialise a parsed value for the store (the inverse of :meth:`from_json`).

        Raises:
            TypeError: ``value`` is not of the kind this spec produces.
        """

    @abstractmethod
    def from_json(self, text: str) -> Any:
        """Read a value written by :meth:`to_json`.

        Raises:
            OutputError: ``json_invalid`` if ``text`` is not JSON, ``validation_failed`` if the
                stored value no longer fits this spec (for instance, the model changed).
        """

    def cut_off(self) -> OutputError:
        """The error for an answer cut off at the token limit (finish_reason ``length``)."""
        return OutputError(
            Error(
                code=self._cut_off_code,
                message="the answer was cut off at the token limit (finish_reason=length)",
                detail=(
                    "The previous answer was truncated because it reached the maximum "
                    "number of tokens. Answer again, more concisely, so that the whole "
                    "answer fits."
                ),
            )
        )

    def feedback_message(self, error: Error) -> str:
        """The user message that asks the model again after an unusable answer.

        It is appended after the assistant's bad answer. It names the problem, quotes the
        error's detail (trimmed to about 2,000 characters) and says what to answer instead
        (:meth:`_ask_again`).
        """
        parts = [f"Your previous answer could not be used: {error.message}"]
        if error.detail and error.detail != error.message:
            parts.append("Details:\n" + trim(error.detail, _MAX_FEEDBACK_DETAIL))
        parts.append(self._ask_again())
        return "\n\n".join(parts)

    @abstractmethod
    def _ask_again(self) -> str:
        """The last paragraph of :meth:`feedback_message`: what to answer instead."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class _PlainSpec(OutputSpec):
    """A spec whose values are plain JSON (a string or an object), stored with ``json.dumps``."""

    __slots__ = ()

    # What a value is in Python, and the same in words for a stored value of the wrong kind.
    _plain_type: ClassVar[type]
    _plain_described: ClassVar[str]

    def to_json(self, value: Any) -> str:
        if not isinstance(value, self._plain_type):
            raise TypeError(f"expected a {self._plain_type.__name__}, got {type(value).__name__}")
        return _dumps(value)

    def from_json(self, text: str) -> Any:
        try:
            value = json.loads(text)
        except (json.JSONDecodeError, TypeError) as exc:
            raise OutputError(
                Error(code=ErrorCode.JSON_INVALID, message=f"stored result is not JSON: {exc}")
            ) from None
        if not isinstance(value, self._plain_type):
            raise OutputError(
                Error(
                    code=ErrorCode.VALIDATION_FAILED,
                    message=f"stored result is {json_type_name(value)},"
                    f" expected {self._plain_described}",
                )
            )
        return value


class TextSpec(_PlainSpec):
    """``response_model=None``: the answer's text, stripped, never parsed."""

    __slots__ = ()

    name = "text"
    data_type = str
    expects_object = False
    # Nothing to repair in a text: a cut-off one is simply not the whole answer.
    _cut_off_code = ErrorCode.VALIDATION_FAILED
    _plain_type = str
    _plain_described = "a string"

    def __init__(self) -> None:
        super().__init__(None)

    def parse(self, content: str, *, repair: bool) -> str:
        return content.strip()

    def _ask_again(self) -> str:
        return "Please answer again."


class DictSpec(_PlainSpec):
    """``response_model=dict``: one JSON object, as a dict."""

    __slots__ = ()

    name = "dict"
    data_type = dict[str, Any]
    expects_object = True
    _plain_type = dict
    _plain_described = "a JSON object"

    def __init__(self) -> None:
        super().__init__({"type": "json_object"})

    def parse(self, content: str, *, repair: bool) -> dict[str, Any]:
        return self.validate(extract_json(content, repair=repair, prefer_object=True))

    def validate(self, value: Any) -> dict[str, Any]:
        """``value`` (a decoded answer) if it is a JSON object.

        Raises:
            OutputError: ``validation_failed``: it is another JSON type.
        """
        if not isinstance(value, dict):
            raise not_an_object(value)
        return value

    def _ask_again(self) -> str:
        return "Reply again with ONLY one valid JSON object, without prose or code fences."


class ModelSpec(OutputSpec):
    """A pydantic model class: a validated instance of it.

    Attributes:
        model: The model class.
    """

    __slots__ = ("_schema", "data_type", "expects_object", "model")

    name = "model"

    def __init__(self, model: type[BaseModel]) -> None:
        self.model = model
        self.data_type = model
        # A RootModel may hold any JSON value (a list, a number...); others are JSON objects.
        self.expects_object = not issubclass(model, RootModel)
        self._schema = _json_schema(model)
        super().__init__(
            {
                "type": "json_schema",
                "json_schema": {
                    "name": _schema_name(model.__name__),
                    "schema": self._schema,
                    "strict": False,
                },
            },
            self._schema,
        )

    def parse(self, content: str, *, repair: bool) -> BaseModel:
        value = extract_json(content, repair=repair, prefer_object=self.expects_object)
        return self.validate(value)

    def validate(self, value: Any) -> BaseModel:
        """The model instance for ``value`` (a decoded answer).

        Raises:
            OutputError: ``validation_failed``: not an object where one is expected, the
                model's validation fails, or a number of the instance is NaN or infinite.
        """
        if self.expects_object and not isinstance(value, dict):
            raise not_an_object(value)
        try:
            instance = self.model.model_validate(value)
        except ValidationError as exc:
            raise OutputError(validation_error(self.model, exc)) from None
        # Lax validation turns the strings "NaN" and "inf" into floats that no strict JSON
        # consumer of the result (an SSE client, the store) accepts: ask again instead.
        if not all_finite(instance.model_dump()):
            raise OutputError(
                Error(
                    code=ErrorCode.VALIDATION_FAILED,
                    message="the answer holds a number that is NaN or infinite",
                    detail="Every number in the answer must be finite (no NaN or Infinity).",
                )
            )
        return instance

    def to_json(self, value: Any) -> str:
        if not isinstance(value, self.model):
            raise TypeError(
                f"expected a {self.model.__name__} instance, got {type(value).__name__}"
            )
        # The serializer model_dump_json calls, called directly: per stored result, and most
        # of model_dump_json's ~0.9 µs is the passing on of its keyword arguments.
        return value.__pydantic_serializer__.to_json(value).decode()

    def from_json(self, text: str) -> BaseModel:
        try:
            return self.model.model_validate_json(text)
        except ValidationError as exc:
            raise OutputError(validation_error(self.model, exc, "the stored result")) from None

    def _ask_again(self) -> str:
        return (
            "Reply again with ONLY a valid JSON value matching this JSON schema, without"
            " prose or code fences:\n" + json.dumps(self._schema, ensure_ascii=False)
        )

    def __repr__(self) -> str:
        return f"ModelSpec({self.model.__name__})"


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
