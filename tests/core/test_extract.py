"""Reading an answer's JSON (fences, prose, repair, shapes) and its reasoning, through the specs."""

from __future__ import annotations

from typing import Any

import pytest

from loom_core._extract import split_reasoning
from loom_protocol import ErrorCode

from .test_output import DICT, MODEL, UserProfile, error_of

# --- parse: dict --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        '{"a": 1, "b": "x"}',
        '  \n{"a": 1, "b": "x"}\n',
        '```json\n{"a": 1, "b": "x"}\n```',
        '```JSON\n{"a": 1, "b": "x"}```',
        '```\n{"a": 1, "b": "x"}\n```',
        '```{"a": 1, "b": "x"}```',
        'Sure! Here is the result:\n```json\n{"a": 1, "b": "x"}\n```\nAnything else?',
        'Here it is: {"a": 1, "b": "x"} -- hope that helps.',
        '[note] the object is {"a": 1, "b": "x"}',
    ],
)
def test_dict_from_plain_fenced_or_embedded_json(content: str) -> None:
    assert DICT.parse(content, repair=False) == {"a": 1, "b": "x"}


def test_brackets_inside_strings_do_not_end_the_object() -> None:
    content = 'Result: {"a": "x} ] {", "b": "quote \\" }"} done'
    assert DICT.parse(content, repair=False) == {"a": "x} ] {", "b": 'quote " }'}


def test_valid_json_with_backticks_inside_is_not_unfenced() -> None:
    content = '{"code": "```python\\nprint(1)\\n```"}'
    assert DICT.parse(content, repair=False) == {"code": "```python\nprint(1)\n```"}


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"a": 1, "b": [1, 2,],}', {"a": 1, "b": [1, 2]}),  # trailing commas
        ("{'a': 'x', 'b': 'y z'}", {"a": "x", "b": "y z"}),  # single quotes
        ("{a: 1, b: 'x'}", {"a": 1, "b": "x"}),  # unquoted keys
        ('```json\n{"a": 1, "b": [1, 2,],}\n```', {"a": 1, "b": [1, 2]}),
        ('Answer: {"a": 1,} thanks', {"a": 1}),
    ],
)
def test_dirty_json_is_repaired(content: str, expected: dict[str, Any]) -> None:
    assert DICT.parse(content, repair=True) == expected


def test_single_quotes_repaired() -> None:
    assert DICT.parse("{'name': 'Bob', 'skills': ['py']}", repair=True) == {
        "name": "Bob",
        "skills": ["py"],
    }


@pytest.mark.parametrize(
    "content",
    [
        '{"name": "Ann", "skills": ["Python", "SQ',
        '```json\n{"name": "Ann", "skills": ["Python", "SQ',
        'Here you go: {"name": "Ann", "skills": ["Python", "SQ',
    ],
)
def test_truncated_json_is_repaired_when_allowed(content: str) -> None:
    assert MODEL.parse(content, repair=True) == UserProfile(name="Ann", skills=["Python", "SQ"])
    error = error_of(MODEL, content, repair=False)
    assert error.code is ErrorCode.JSON_INVALID
    assert "JSON repair is disabled" in (error.detail or "")


@pytest.mark.parametrize(
    "content",
    [
        '{"a": 1,}',
        "{'a': 1}",
        "{a: 1}",
        '{"a": 1',
    ],
)
def test_repair_false_rejects_dirty_json(content: str) -> None:
    error = error_of(DICT, content, repair=False)
    assert error.code is ErrorCode.JSON_INVALID
    assert error.message.startswith("the answer is not valid JSON (")
    assert error.detail is not None
    assert error.detail.startswith("json.loads: ")


@pytest.mark.parametrize(
    "content",
    [
        '[{"a": 1}, {"a": 2}]',
        'The results: [{"a": 1}, {"a": 2}]',
        '```json\n[{"a": 1}]\n```',
    ],
)
def test_top_level_array_is_an_error_not_its_first_element(content: str) -> None:
    for repair in (True, False):
        error = error_of(DICT, content, repair=repair)
        assert error.code is ErrorCode.VALIDATION_FAILED
        assert error.message == "expected a JSON object, got an array"
        error = error_of(MODEL, content, repair=repair)
        assert error.message == "expected a JSON object, got an array"


@pytest.mark.parametrize(
    ("content", "kind"),
    [("null", "null"), ("42", "a number"), ('"hello"', "a string"), ("true", "a boolean")],
)
def test_non_object_json_is_a_validation_error(content: str, kind: str) -> None:
    error = error_of(DICT, content)
    assert error.code is ErrorCode.VALIDATION_FAILED
    assert error.message == f"expected a JSON object, got {kind}"


@pytest.mark.parametrize("content", ["", "   \n "])
def test_empty_answer_is_json_invalid(content: str) -> None:
    error = error_of(DICT, content)
    assert error.code is ErrorCode.JSON_INVALID
    assert error.message == "the answer is empty"


def test_prose_without_json_is_json_invalid_even_with_repair() -> None:
    error = error_of(DICT, "I am sorry, I cannot help with that.", repair=True)
    assert error.code is ErrorCode.JSON_INVALID
    assert error.message == "the answer contains no JSON object or array"
    assert "I am sorry" in (error.detail or "")


def test_repair_that_yields_nothing_is_json_invalid() -> None:
    # json_repair reads this garbage as an empty object, which is not an answer.
    error = error_of(DICT, "Result: {:::}", repair=True)
    assert error.code is ErrorCode.JSON_INVALID
    assert "json_repair could not recover a JSON object or array" in (error.detail or "")


def test_nan_is_not_json() -> None:
    error = error_of(DICT, '{"a": NaN}', repair=False)
    assert error.code is ErrorCode.JSON_INVALID
    assert "NaN" in error.message


# --- split_reasoning ----------------------------------------------------------------------------


def test_no_think_block() -> None:
    assert split_reasoning('{"a": 1}') == ('{"a": 1}', None)
    assert split_reasoning(None) == ("", None)
    assert split_reasoning(None, "backend thoughts") == ("", "backend thoughts")


def test_closed_think_block_is_removed() -> None:
    content = '\n  <think>\n  Let me think.\n</think>\n\n{"a": 1}'
    assert split_reasoning(content) == ('{"a": 1}', "Let me think.")


def test_thinking_tag_variant() -> None:
    assert split_reasoning("<thinking>hmm</thinking>Answer") == ("Answer", "hmm")


def test_unclosed_think_block_means_no_answer() -> None:
    assert split_reasoning("<think>I was cut off while reas") == ("", "I was cut off while reas")


def test_think_tag_later_in_the_text_is_kept() -> None:
    content = "The tag <think>x</think> is used by some models."
    assert split_reasoning(content) == (content, None)


def test_backend_reasoning_comes_first() -> None:
    content = "<think>from the tag</think>answer"
    assert split_reasoning(content, "from the backend\n") == (
        "answer",
        "from the backend\n\nfrom the tag",
    )


def test_empty_think_block_gives_no_reasoning() -> None:
    assert split_reasoning("<think>\n\n</think>\nanswer") == ("answer", None)
    assert split_reasoning("answer", "   ") == ("answer", None)


@pytest.mark.parametrize("text", ['{"a": 1e999}', '{"a": [1, -1e999],}', "{'a': 1e400}"])
def test_numbers_out_of_range_are_not_repaired_into_infinities(text: str) -> None:
    # json.loads refuses them (our parse_float hook); json_repair would read them as inf,
    # which would break every strict JSON consumer of the result (SSE, the store).
    error = error_of(DICT, text, repair=True)
    assert error.code is ErrorCode.JSON_INVALID
