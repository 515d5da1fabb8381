"""The shared argument checks: one rule for every package."""

from __future__ import annotations

import math
from typing import Any

import pytest

from loom_protocol import (
    MAX_TIMEOUT,
    LoomUsageError,
    check_header,
    check_http_url,
    check_int,
    check_non_empty_string,
    check_non_negative_number,
    check_number,
    check_positive_number,
    is_int,
    is_number,
    shorten,
)


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, 0, -1, 0.0, True, False, "5", None]
)
def test_positive_number_refuses(value: object) -> None:
    with pytest.raises(LoomUsageError, match=r"timeout must be a finite number of seconds > 0"):
        check_positive_number("timeout", value, " of seconds")


@pytest.mark.parametrize("value", [1, 0.001, 60, 1e6])
def test_positive_number_accepts(value: float) -> None:
    assert check_positive_number("timeout", value) == float(value)
    assert type(check_positive_number("timeout", value)) is float


@pytest.mark.parametrize("value", [True, False, 1.0, "1", None, 0, -3])
def test_int_refuses(value: object) -> None:
    with pytest.raises(LoomUsageError, match=r"max_tokens must be an int >= 1, got"):
        check_int("max_tokens", value, 1)


def test_int_accepts() -> None:
    assert check_int("n", 1, 1) == 1
    assert check_int("seed", -5) == -5
    with pytest.raises(LoomUsageError, match=r"seed must be an int, got True"):
        check_int("seed", True)


@pytest.mark.parametrize("value", [math.nan, math.inf, -0.1, 2.01, True, "0.5", None])
def test_number_in_range_refuses(value: object) -> None:
    with pytest.raises(
        LoomUsageError, match=r"temperature must be a finite number in \[0, 2\], got"
    ):
        check_number("temperature", value, 0.0, 2.0)


def test_number_in_range_keeps_the_value_as_given() -> None:
    assert check_number("temperature", 1, 0.0, 2.0) == 1
    assert type(check_number("temperature", 1, 0.0, 2.0)) is int
    assert check_number("temperature", 0.0, 0.0, 2.0) == 0.0


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (123, "must be an http(s):// URL string, got int"),
        (None, "must be an http(s):// URL string, got NoneType"),
        ("http://[::1", "is not a valid URL"),
        ("http://h:99999/v1", "is not a valid URL"),
        ("http://h:port/v1", "is not a valid URL"),
        ("localhost:8000/v1", "must start with http:// or https://"),
        ("api.openai.com/v1", "must start with http:// or https://"),
        ("ftp://h/v1", "must start with http:// or https://"),
        ("http://", "has no host"),
        ("http:///v1", "has no host"),
        ("http://h/v1#x", "must not have a #fragment"),
        ("http://h/v 1", "contains whitespace"),
        ("http://h:0/v1", "has port 0"),
    ],
)
def test_http_url_refuses(value: object, problem: str) -> None:
    with pytest.raises(LoomUsageError) as info:
        check_http_url("base_url", value)
    assert str(info.value).startswith("base_url ")
    assert problem in str(info.value)


@pytest.mark.parametrize(
    "value",
    [
        "https://user:PW-SECRET@h/v1",
        "https://user:PW-SECRET@h/v1?api-key=Q-SECRET",
        "http://T-SECRET@h",
    ],
)
def test_http_url_refuses_userinfo_without_echoing_it(value: str) -> None:
    with pytest.raises(LoomUsageError, match=r"must not contain credentials") as info:
        check_http_url("base_url", value)
    assert "SECRET" not in str(info.value)


def test_a_bad_url_message_never_echoes_a_query_secret() -> None:
    with pytest.raises(LoomUsageError) as info:
        check_http_url("base_url", "ftp://h/v1?api-key=Q-SECRET")
    assert "SECRET" not in str(info.value)


@pytest.mark.parametrize(
    "value",
    [
        "http://127.0.0.1:8000/v1",
        "HTTPS://API.example.com/v1/",
        "https://r.openai.azure.com/openai/deployments/d?api-version=2024-06-01",
        "http://[::1]:8080/v1",
        "  http://h/v1  ",
    ],
)
def test_http_url_accepts(value: str) -> None:
    parts = check_http_url("base_url", value)
    assert parts.hostname


def test_positive_number_with_a_maximum() -> None:
    assert check_positive_number("timeout", MAX_TIMEOUT, maximum=MAX_TIMEOUT) == MAX_TIMEOUT
    with pytest.raises(LoomUsageError, match=r"> 0 and <= 86400, got 1e\+308"):
        check_positive_number("timeout", 1e308, maximum=MAX_TIMEOUT)


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\x00b", "a\x7fb", "k\n"])
def test_header_refuses_control_characters_without_showing_the_value(value: str) -> None:
    with pytest.raises(LoomUsageError, match="api_key contains a line break") as info:
        check_header("api_key", value)
    assert value not in str(info.value)


def test_header_accepts_ordinary_values() -> None:
    assert check_header("api_key", "sk-abc DEF\tghi") == "sk-abc DEF\tghi"
    with pytest.raises(LoomUsageError, match="api_key must be a string, got bytes"):
        check_header("api_key", b"sk")


# --- bool is never a number -----------------------------------------------------------------


class _Count(int):
    """An int subclass (an IntEnum, numpy's ints are not): still an int."""


@pytest.mark.parametrize(
    ("value", "an_int", "a_number"),
    [
        (0, True, True),
        (-7, True, True),
        (_Count(3), True, True),
        (1.5, False, True),
        (math.nan, False, True),
        (math.inf, False, True),
        (True, False, False),
        (False, False, False),
        ("1", False, False),
        (None, False, False),
    ],
)
def test_is_int_and_is_number(value: object, an_int: bool, a_number: bool) -> None:
    assert is_int(value) is an_int
    assert is_number(value) is a_number


@pytest.mark.parametrize(
    "check",
    [
        lambda v: check_int("n", v),
        lambda v: check_int("n", v, 0),
        lambda v: check_positive_number("n", v),
        lambda v: check_non_negative_number("n", v),
        lambda v: check_number("n", v, 0.0, 2.0),
    ],
)
@pytest.mark.parametrize("value", [True, False])
def test_no_check_takes_a_bool_for_a_number(check: Any, value: bool) -> None:
    with pytest.raises(LoomUsageError, match=rf"n must be .*, got {value}$"):
        check(value)


# --- non-negative numbers -------------------------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -1, -0.001, True, "0", None])
def test_non_negative_number_refuses(value: object) -> None:
    with pytest.raises(
        LoomUsageError, match=r"^delay must be a finite number of seconds >= 0, got "
    ):
        check_non_negative_number("delay", value, " of seconds")


@pytest.mark.parametrize("value", [0, 0.0, 0.001, 7, 1e6])
def test_non_negative_number_accepts(value: float) -> None:
    assert check_non_negative_number("delay", value) == float(value)
    assert type(check_non_negative_number("delay", value)) is float


def test_non_negative_number_with_a_maximum() -> None:
    assert check_non_negative_number("wait", MAX_TIMEOUT, maximum=MAX_TIMEOUT) == MAX_TIMEOUT
    with pytest.raises(LoomUsageError, match=r"wait must be a finite number >= 0 and <= 86400"):
        check_non_negative_number("wait", MAX_TIMEOUT + 1, maximum=MAX_TIMEOUT)


# --- non-empty strings ----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", None, 3, b"x", ["x"]])
def test_non_empty_string_refuses(value: object) -> None:
    with pytest.raises(LoomUsageError, match=r"^task_name must be a non-empty string, got "):
        check_non_empty_string("task_name", value)


def test_non_empty_string_and_blank_strings() -> None:
    assert check_non_empty_string("task_name", " ") == " "  # a store key: any non-empty text
    assert check_non_empty_string("model", " m ", allow_blank=False) == " m "
    for blank in (" ", "\t\n"):
        with pytest.raises(LoomUsageError, match="model must be a non-empty string, got"):
            check_non_empty_string("model", blank, allow_blank=False)


# --- shorten --------------------------------------------------------------------------------


def test_shorten_keeps_a_short_text_as_it_is() -> None:
    assert shorten("", 4) == ""
    assert shorten("x" * 60, 60) == "x" * 60
    assert shorten("a\nb", 10) == "a\nb"  # only the length changes


def test_shorten_cuts_to_the_limit_and_marks_the_cut() -> None:
    text = "abcdefghij" * 10
    assert shorten(text, 60) == text[:57] + "..."
    assert len(shorten(text, 60)) == 60
    assert shorten(text, 4) == "a..."


def test_shorten_can_keep_the_end() -> None:
    path = "/very/long/folder/" * 10 + "cat.png"
    shown = shorten(path, 30, keep_end=True)
    assert shown == "..." + path[-27:]
    assert shown.endswith("cat.png")
    assert len(shown) == 30


@pytest.mark.parametrize("limit", [3, 0, -1, True, 10.0, None])
def test_shorten_needs_room_for_the_mark(limit: Any) -> None:
    with pytest.raises(LoomUsageError, match="limit must be an int >= 4, got"):
        shorten("some text", limit)
