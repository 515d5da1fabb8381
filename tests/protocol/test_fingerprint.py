"""fingerprint(): SHA-256 of canonical JSON (sorted keys, compact separators, UTF-8)."""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any

import pytest

from loom_protocol import (
    MAX_INPUT_DEPTH,
    canonical_fingerprint,
    canonical_json,
    canonicalize,
    fingerprint,
)


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


def reference_json(obj: Any) -> str:
    """The canonical form by the definition: json.dumps with the documented settings."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


@pytest.mark.parametrize(
    "obj",
    [
        {"a": [1, 2.5, {"b": None, "c": True}], "d": (1, "x")},
        {"a": _Text("subclass of str")},
        {_Text("key"): _Count(3)},
        [{"deep": [[[{"x": -0.0}]]]}],
        {"z": {"b": 1, "a": 2}, "a": [{"y": 1, "x": (2,)}]},
        "just text",
        [1, (2, [3])],
    ],
)
def test_canonical_value_and_json_agree_with_the_definition(obj: Any) -> None:
    value, digest = canonical_fingerprint(obj)
    assert canonical_json(obj) == reference_json(obj)
    assert json.loads(reference_json(obj)) == value
    assert reference_json(value) == reference_json(obj)
    assert digest == fingerprint(obj) == fingerprint(value)
    assert canonicalize(obj) == value


def exact_types(value: Any, top: bool = True) -> bool:
    kind = type(value)
    if kind is dict:
        keys = list(value)
        ordered = top or keys == sorted(keys)
        return ordered and all(type(k) is str and exact_types(v, False) for k, v in value.items())
    if kind is list:
        return all(exact_types(v, False) for v in value)
    return kind in (str, int, float, bool, type(None))


def test_the_canonical_value_has_exact_types_and_sorted_nested_keys() -> None:
    obj = {"b": (1, _Count(2)), "a": {"z": _Text("t"), "m": [{"q": 1, "p": 2}]}}
    value = canonicalize(obj)
    assert exact_types(value)
    assert list(value) == ["b", "a"]  # the top level keeps its order: templates read by name
    assert list(value["a"]) == ["m", "z"]
    assert obj["b"] == (1, 2)  # the caller's value is untouched


def test_a_canonical_value_is_returned_as_it_is() -> None:
    obj = {"text": "x", "n": 1, "meta": {"a": [1, 2.5, None], "b": {}}}
    assert canonicalize(obj) is obj
    assert canonical_fingerprint(obj)[0] is obj


@pytest.mark.parametrize(
    "obj",
    [
        {"a": {"b": {2: 3}}},
        {"a": [1, float("nan")]},
        {"a": (float("-inf"),)},
        {"a": {"b": object()}},
        {"a": {"b": b"bytes"}},
    ],
)
def test_invalid_values_are_refused_by_every_entry_point(obj: Any) -> None:
    outcomes = []
    for function in (canonical_json, fingerprint, canonicalize, canonical_fingerprint):
        with pytest.raises((TypeError, ValueError)) as info:
            function(obj)
        outcomes.append((info.type, str(info.value)))
    assert len(set(outcomes)) == 1


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def test_depth_limit() -> None:
    assert MAX_INPUT_DEPTH == 64
    fingerprint(nested(MAX_INPUT_DEPTH))
    with pytest.raises(ValueError, match=r"nests deeper than MAX_INPUT_DEPTH \(64 levels\)"):
        fingerprint(nested(MAX_INPUT_DEPTH + 1))
    # A dict at the top is a level; so is every dict and list below it.
    fingerprint({"a": nested(MAX_INPUT_DEPTH - 1)})
    with pytest.raises(ValueError, match="MAX_INPUT_DEPTH") as info:
        fingerprint({"a": [{"b": nested(MAX_INPUT_DEPTH - 2)}]})
    assert "$.a[0].b" in str(info.value)


def test_far_too_deep_values_never_reach_the_interpreters_limit() -> None:
    import sys

    too_deep = nested(sys.getrecursionlimit() * 2)
    with pytest.raises(ValueError, match="MAX_INPUT_DEPTH") as info:
        fingerprint({"text": too_deep})
    assert len(str(info.value)) < 300  # the path is shortened, not 64 levels long


def test_cycles_are_refused_naming_the_place() -> None:
    looped: dict[str, Any] = {"a": 1}
    looped["again"] = looped
    with pytest.raises(ValueError, match=r"a dict at \$\.again contains itself"):
        fingerprint(looped)
    listed: list[Any] = []
    listed.append(listed)
    with pytest.raises(ValueError, match="circular"):
        fingerprint({"x": listed})
    shared = [1, 2]
    # The same list twice is no cycle.
    assert fingerprint({"a": shared, "b": shared}) == fingerprint({"a": [1, 2], "b": [1, 2]})


class _Raising(dict[str, Any]):
    def items(self) -> Any:
        raise RuntimeError("nope")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_a_value_whose_own_methods_raise_is_refused_naming_the_place() -> None:
    with pytest.raises(TypeError, match=r"a _Raising at \$\.m cannot be read: RuntimeError: nope"):
        fingerprint({"m": _Raising(a=1)})


def test_convert_replaces_foreign_values() -> None:
    class Money:
        def __init__(self, cents: int) -> None:
            self.cents = cents

    def convert(value: Any) -> Any:
        if isinstance(value, Money):
            return {"cents": value.cents}
        if isinstance(value, complex):
            raise ValueError("complex numbers have no JSON form")
        return value

    value, digest = canonical_fingerprint({"p": [Money(5)]}, convert=convert)
    assert value == {"p": [{"cents": 5}]} and digest == fingerprint(value)
    with pytest.raises(ValueError, match=r"value of type complex at \$\.c: complex numbers"):
        canonical_fingerprint({"c": 1j}, convert=convert)
    with pytest.raises(TypeError, match="value of type set at"):
        canonical_fingerprint({"s": {1}}, convert=convert)
    with pytest.raises(TypeError, match="Money"):
        fingerprint({"p": Money(5)})  # fingerprint itself converts nothing
