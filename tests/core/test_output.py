"""The output specs: response_model handling, parsing per kind, storage, cut-off and feedback."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import pytest
from pydantic import BaseModel, RootModel, create_model

from loom_core._output import DictSpec, ModelSpec, OutputSpec, TextSpec
from loom_core._output_errors import OutputError
from loom_protocol import Error, ErrorCode, LoomUsageError


class UserProfile(BaseModel):
    name: str
    skills: list[str]


class Box(BaseModel):
    a: int
    b: int
    c: int
    d: int


TEXT = OutputSpec.from_response_model(None)
DICT = OutputSpec.from_response_model(dict)
MODEL = OutputSpec.from_response_model(UserProfile)


def error_of(spec: OutputSpec, content: str, *, repair: bool = True) -> Error:
    with pytest.raises(OutputError) as caught:
        spec.parse(content, repair=repair)
    assert str(caught.value) == str(caught.value.error)
    return caught.value.error


# --- from_response_model ------------------------------------------------------------------------


def test_text_kind() -> None:
    assert isinstance(TEXT, TextSpec)
    assert TEXT.name == "text"
    assert TEXT.data_type is str
    assert not TEXT.expects_object
    assert TEXT.response_format is None
    assert TEXT.fingerprint_source == {"kind": "text", "schema": None}


def test_dict_kind() -> None:
    assert isinstance(DICT, DictSpec)
    assert DICT.name == "dict"
    assert DICT.data_type == dict[str, Any]
    assert DICT.expects_object
    assert DICT.response_format == {"type": "json_object"}
    assert DICT.fingerprint_source == {"kind": "dict", "schema": None}


def test_model_kind() -> None:
    schema = UserProfile.model_json_schema()
    assert isinstance(MODEL, ModelSpec)
    assert MODEL.name == "model"
    assert MODEL.model is UserProfile
    assert MODEL.data_type is UserProfile
    assert MODEL.expects_object
    assert MODEL.response_format == {
        "type": "json_schema",
        "json_schema": {"name": "UserProfile", "schema": schema, "strict": False},
    }
    assert MODEL.fingerprint_source == {"kind": "model", "schema": schema}
    json.dumps(MODEL.fingerprint_source)  # must be JSON-able for the config fingerprint


def test_fingerprint_source_follows_the_schema() -> None:
    changed = create_model("UserProfile", name=(str, ...), skills=(list[str], ...), age=(int, 0))
    assert OutputSpec.from_response_model(changed).fingerprint_source != MODEL.fingerprint_source
    same = create_model("UserProfile", name=(str, ...), skills=(list[str], ...))
    assert OutputSpec.from_response_model(same).fingerprint_source == MODEL.fingerprint_source


def test_schema_name_is_sanitised() -> None:
    T = TypeVar("T")

    class Wrapper(BaseModel, Generic[T]):
        value: T

    spec = OutputSpec.from_response_model(Wrapper[int])
    assert spec.response_format is not None
    assert spec.response_format["json_schema"]["name"] == "Wrapper_int_"
    long_model = create_model("M" * 100 + "é", value=(int, ...))
    spec = OutputSpec.from_response_model(long_model)
    assert spec.response_format is not None
    assert spec.response_format["json_schema"]["name"] == "M" * 64


@dataclasses.dataclass
class Point:
    x: int


class NoSchema(BaseModel):
    callback: Callable[[], int]


@pytest.mark.parametrize(
    ("response_model", "expected"),
    [
        (int, "got the class int"),
        (list[str], r"got list\[str\]"),
        (dict[str, int], r"use plain dict"),
        (Point, "a dataclass; use a pydantic BaseModel"),
        ("dict", "got 'dict' \\(str\\)"),
        (UserProfile(name="a", skills=[]), "got an instance of UserProfile; pass UserProfile"),
        (NoSchema, "response_model NoSchema has no JSON schema: PydanticInvalidForJsonSchema"),
    ],
)
def test_unusable_response_model_is_a_usage_error(response_model: Any, expected: str) -> None:
    with pytest.raises(LoomUsageError, match=expected):
        OutputSpec.from_response_model(response_model)


def test_reprs_name_the_spec() -> None:
    assert repr(TEXT) == "TextSpec()"
    assert repr(DICT) == "DictSpec()"
    assert repr(MODEL) == "ModelSpec(UserProfile)"


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        (TEXT, ErrorCode.VALIDATION_FAILED),
        (DICT, ErrorCode.JSON_INVALID),
        (MODEL, ErrorCode.JSON_INVALID),
    ],
)
def test_a_cut_off_answer(spec: OutputSpec, code: ErrorCode) -> None:
    error = spec.cut_off().error
    assert error.code is code
    assert error.message == "the answer was cut off at the token limit (finish_reason=length)"
    assert "more concisely" in (error.detail or "")


# --- parse: text --------------------------------------------------------------------------------


def test_text_is_stripped_and_never_parsed() -> None:
    assert TEXT.parse("  Hello {not json\n", repair=False) == "Hello {not json"
    assert TEXT.parse("", repair=True) == ""


# --- parse: model -------------------------------------------------------------------------------


def test_model_instance_is_returned() -> None:
    value = MODEL.parse('```json\n{"name": "Zhang San", "skills": ["Python"]}\n```', repair=True)
    assert value == UserProfile(name="Zhang San", skills=["Python"])


def test_validation_failure_summarises_pydantic_errors() -> None:
    error = error_of(MODEL, '{"name": 3}')
    assert error.code is ErrorCode.VALIDATION_FAILED
    assert error.message == (
        "the answer does not match UserProfile: name: Input should be a valid string;"
        " skills: Field required"
    )
    assert error.detail is not None
    assert "2 validation error(s) for UserProfile" in error.detail
    assert "type=missing" in error.detail


def test_many_validation_errors_are_counted_in_the_message() -> None:
    spec = OutputSpec.from_response_model(Box)
    error = error_of(spec, '{"a": "x", "b": "y", "c": "z", "d": "w"}')
    assert error.message.endswith("(and 1 more)")
    assert error.detail is not None
    assert all(f"- {field}: " in error.detail for field in "abcd")


def test_root_model_accepts_an_array() -> None:
    spec = OutputSpec.from_response_model(RootModel[list[int]])
    assert not spec.expects_object
    assert spec.parse("Numbers: [1, 2, 3]", repair=False).root == [1, 2, 3]
    assert spec.parse("[1, 2,", repair=True).root == [1, 2]


# --- storage ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "value"),
    [
        (TEXT, 'héllo "world"'),
        (DICT, {"a": [1, 2], "b": {"c": None}, "é": "ü"}),
        (MODEL, UserProfile(name="Ann", skills=["SQL"])),
    ],
)
def test_to_json_from_json_round_trip(spec: OutputSpec, value: Any) -> None:
    stored = spec.to_json(value)
    json.loads(stored)
    assert spec.from_json(stored) == value


def test_text_to_json_is_a_json_string() -> None:
    assert TEXT.to_json("a") == '"a"'


def test_from_json_when_the_model_changed() -> None:
    stored = MODEL.to_json(UserProfile(name="Ann", skills=[]))
    changed = create_model("UserProfile", name=(str, ...), age=(int, ...))
    with pytest.raises(OutputError) as caught:
        OutputSpec.from_response_model(changed).from_json(stored)
    assert caught.value.error.code is ErrorCode.VALIDATION_FAILED
    assert caught.value.error.message == (
        "the stored result does not match UserProfile: age: Field required"
    )


def test_from_json_wrong_kind_or_not_json() -> None:
    with pytest.raises(OutputError) as caught:
        DICT.from_json("[1, 2]")
    assert caught.value.error.code is ErrorCode.VALIDATION_FAILED
    assert caught.value.error.message == "stored result is an array, expected a JSON object"
    with pytest.raises(OutputError) as caught:
        TEXT.from_json("{}")
    assert caught.value.error.message == "stored result is an object, expected a string"
    with pytest.raises(OutputError) as caught:
        DICT.from_json("{oops")
    assert caught.value.error.code is ErrorCode.JSON_INVALID


@pytest.mark.parametrize(
    ("spec", "value", "expected"),
    [
        (TEXT, 3, "expected a str, got int"),
        (DICT, [1], "expected a dict, got list"),
        (MODEL, {"name": "x", "skills": []}, "expected a UserProfile instance, got dict"),
    ],
)
def test_to_json_rejects_the_wrong_type(spec: OutputSpec, value: Any, expected: str) -> None:
    with pytest.raises(TypeError, match=expected):
        spec.to_json(value)


# --- feedback -----------------------------------------------------------------------------------


def test_feedback_for_a_model_quotes_the_error_and_the_schema() -> None:
    error = error_of(MODEL, '{"name": 3}')
    text = MODEL.feedback_message(error)
    assert text.startswith("Your previous answer could not be used: the answer does not match")
    assert "skills: Field required" in text
    assert "type=missing" in text  # the detail, not only the message
    assert "ONLY a valid JSON value" in text
    assert json.dumps(UserProfile.model_json_schema(), ensure_ascii=False) in text


def test_feedback_for_a_dict_asks_for_one_object() -> None:
    error = error_of(DICT, "[1]")
    text = DICT.feedback_message(error)
    assert "expected a JSON object, got an array" in text
    assert "ONLY one valid JSON object" in text


def test_feedback_for_a_text_asks_again() -> None:
    error = Error(code=ErrorCode.VALIDATION_FAILED, message="cut off", detail="too long")
    assert TEXT.feedback_message(error) == (
        "Your previous answer could not be used: cut off\n\nDetails:\ntoo long\n\n"
        "Please answer again."
    )


def test_feedback_detail_is_trimmed() -> None:
    error = Error(code=ErrorCode.JSON_INVALID, message="bad", detail="x" * 10_000)
    text = DICT.feedback_message(error)
    assert "x" * 2000 in text
    assert "x" * 2001 not in text
    assert "[8000 more chars]" in text
    assert len(text) < 2300


def test_a_model_float_given_the_string_nan_is_refused() -> None:
    class Score(BaseModel):
        label: str
        score: float

    spec = OutputSpec.from_response_model(Score)
    for text in ('{"label": "x", "score": "NaN"}', '{"label": "x", "score": "inf"}'):
        with pytest.raises(OutputError) as info:
            spec.parse(text, repair=True)
        assert info.value.error.code is ErrorCode.VALIDATION_FAILED
    assert spec.parse('{"label": "x", "score": 0.5}', repair=True) == Score(label="x", score=0.5)
