"""The HTTP backends' JSON codec: the json module's answers, faster."""

from __future__ import annotations

import json
from typing import Any

import pytest

from loom_backends._json import encode_json, loads_json, parse_json_answer
from loom_protocol import BackendError, ErrorCode

TEXTS = [
    b'{"choices": [{"message": {"content": "\\u00e9 \\ud83d\\ude00 \xe2\x82\xac"}}]}',
    b' \n{"a": [1, -0, -0.0, 1.5e3, 1E400, 4.9e-324, 12345678901234567890123]}\n ',
    b'{"a": 1, "b": 2, "a": 3}',
    b"[NaN, Infinity, -Infinity]",
    b'"text"',
    b'\xef\xbb\xbf{"bom": true}',
    b'{"lone": "\\ud800"}',
    b'["\xed\xa0\x80"]',
    '{"utf16": 1}'.encode("utf-16"),
    b"[" * 500 + b"]" * 500,
]
BROKEN = [b"", b" ", b"{", b'{"a": 1,}', b"{'a': 1}", b'{"a": 01}', b'{"a": "x\ty"}', b"\xff{}"]


def _same(a: Any, b: Any) -> bool:
    return repr(a) == repr(b)  # NaN != NaN, and -0.0 == 0: compare the texts Python shows


@pytest.mark.parametrize("text", TEXTS)
def test_loads_json_answers_what_json_loads_answers(text: bytes) -> None:
    assert _same(loads_json(text), json.loads(text))


@pytest.mark.parametrize("text", BROKEN)
def test_loads_json_refuses_what_json_loads_refuses(text: bytes) -> None:
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        loads_json(text)


def test_a_body_that_failed_to_encode_leaves_nothing_behind() -> None:
    # The C encoder keeps the ids of the containers it is inside of (to catch cycles) and
    # left them there when a value could not be encoded: encoding the same dict again after
    # fixing it then failed as "circular".
    inner: dict[str, Any] = {"bad": object()}
    body = {"model": "m", "messages": [inner]}
    with pytest.raises(TypeError, match="not JSON serializable"):
        encode_json(body)
    inner["bad"] = "fixed"
    assert encode_json(body) == '{"model":"m","messages":[{"bad":"fixed"}]}'


def test_encode_json_is_compact_and_keeps_non_ascii() -> None:
    body = {"text": "é 漢字", "n": [1, 2.5, None, True]}
    assert encode_json(body) == json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    with pytest.raises(ValueError, match="Circular"):
        encode_json(cyclic)


def test_an_answer_that_is_not_a_json_object_is_the_tables_error() -> None:
    for content in (b"<html>bad gateway</html>", b"[1, 2]"):
        with pytest.raises(BackendError) as caught:
            parse_json_answer(200, content, {}, ())
        assert caught.value.code is ErrorCode.PROVIDER_ERROR
    assert parse_json_answer(200, b"\xef\xbb\xbf{}", {}, ()) == {}
