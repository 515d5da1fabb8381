"""fingerprint(): SHA-256 of canonical JSON (sorted keys, compact separators, UTF-8)."""

from __future__ import annotations

import hashlib
import itertools
from typing import Any

import pytest

from loom_protocol import canonical_json, fingerprint


def test_fixed_vector() -> None:
    # The canonical bytes, written out by hand: keys sorted, no spaces, "é" as UTF-8 (not \u00e9).
    canonical = b'{"a":"\xc3\xa9","b":1}'
    assert fingerprint({"b": 1, "a": "é"}) == hashlib.sha256(canonical).hexdigest()
    # The same digest spelled out, so a service in another language can check itself against it.
    assert (
        fingerprint({"b": 1, "a": "é"})
        == "aa58fba8483623bed37c1b02edfccbdd9a53123837c20bfa4cb4049993a2872e"
    )


def test_fixed_vector_nested() -> None:
    obj = {"text": "Great film", "meta": {"z": [1, 2.5, None, True], "a": {}}, "images": []}
    canonical = b'{"images":[],"meta":{"a":{},"z":[1,2.5,null,true]},"text":"Great film"}'
    assert canonical_json(obj).encode("utf-8") == canonical
    assert fingerprint(obj) == hashlib.sha256(canonical).hexdigest()


def test_is_a_sha256_hex_digest() -> None:
    digest = fingerprint({"text": "x"})
    assert len(digest) == 64
    assert set(digest) <= set("0123456789abcdef")


def test_ignores_dict_key_order_at_every_depth() -> None:
    a = {"x": 1, "y": {"p": [1, {"k": "v", "j": "w"}], "q": None}}
    b = {"y": {"q": None, "p": [1, {"j": "w", "k": "v"}]}, "x": 1}
    assert fingerprint(a) == fingerprint(b)


def test_list_order_matters() -> None:
    assert fingerprint({"a": [1, 2]}) != fingerprint({"a": [2, 1]})


@pytest.mark.parametrize(
    "values",
    [
        [1, "1", 1.0, True],
        [0, "0", 0.0, False, None, "", [], {}],
        ["null", None],
        ["true", True],
    ],
    ids=["one", "falsy", "null", "true"],
)
def test_distinguishes_values_of_different_json_types(values: list[Any]) -> None:
    for left, right in itertools.combinations(values, 2):
        assert fingerprint({"v": left}) != fingerprint({"v": right}), (left, right)
        assert fingerprint(left) != fingerprint(right), (left, right)


def test_tuple_encodes_as_list() -> None:
    assert fingerprint({"a": (1, 2)}) == fingerprint({"a": [1, 2]})


def test_non_ascii_is_kept_as_utf8() -> None:
    assert canonical_json({"t": "日本"}) == '{"t":"日本"}'
    assert fingerprint("日本") == hashlib.sha256('"日本"'.encode()).hexdigest()


@pytest.mark.parametrize(
    ("obj", "path", "kind"),
    [
        ({1: "a"}, "$", "int"),
        ({"outer": {None: 1}}, "$.outer", "NoneType"),
        ({"outer": [{"ok": 1}, {(1, 2): 1}]}, "$.outer[1]", "tuple"),
    ],
)
def test_rejects_non_string_keys_naming_the_path(obj: Any, path: str, kind: str) -> None:
    with pytest.raises(TypeError, match="key") as info:
        fingerprint(obj)
    assert f"at {path} " in str(info.value)
    assert kind in str(info.value)


@pytest.mark.parametrize(
    ("value", "kind"),
    [({1, 2}, "set"), (b"bytes", "bytes"), (object(), "object"), (1j, "complex")],
)
def test_rejects_non_json_values_naming_the_path(value: Any, kind: str) -> None:
    with pytest.raises(TypeError, match=kind) as info:
        fingerprint({"a": [1, {"b": value}]})
    assert "$.a[1].b" in str(info.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_rejects_nan_and_infinities(value: float) -> None:
    with pytest.raises(ValueError, match="NaN and infinities are not JSON"):
        fingerprint({"a": [1, {"b": value}]})


def test_nan_error_names_the_path() -> None:
    with pytest.raises(ValueError, match=r"\$\.a\[1\]\.b"):
        fingerprint({"a": [1, {"b": float("nan")}]})


def test_canonical_json_is_compact_and_sorted() -> None:
    assert canonical_json({"b": [1, 2], "a": {"d": 1, "c": None}}) == (
        '{"a":{"c":null,"d":1},"b":[1,2]}'
    )


class _Text(str):
    pass


class _Count(int):
    pass


@pytest.mark.parametrize(
    "obj",
    [
        {"a": [1, 2.5, {"b": None, "c": True}], "d": (1, "x")},
        {"a": _Text("subclass of str")},
        {_Text("key"): _Count(3)},
        [{"deep": [[[{"x": -0.0}]]]}],
        {"a": {"b": {2: 3}}},
        {"a": [1, float("nan")]},
        {"a": (float("-inf"),)},
        {"a": {"b": object()}},
        {"a": {"b": b"bytes"}},
    ],
)
def test_fast_check_and_full_check_agree(obj: Any) -> None:
    # canonical_json first tries a check of exact JSON types without path strings; whatever
    # it cannot vouch for goes through the full check, so the outcome is the full check's.
    from loom_protocol._fingerprint import _check, _encode

    try:
        _check(obj, "$")
        expected: Any = _encode(obj)
    except (TypeError, ValueError) as exc:
        expected = (type(exc), str(exc))
    try:
        got: Any = canonical_json(obj)
    except (TypeError, ValueError) as exc:
        got = (type(exc), str(exc))
    assert got == expected
