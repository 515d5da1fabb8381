"""The shared argument checks: one rule for every package."""

from __future__ import annotations

import math

import pytest

from loom_protocol import (
    MAX_TIMEOUT,
    LoomUsageError,
    check_header,
    check_http_url,
    check_int,
    check_number,
    check_positive_number,
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
