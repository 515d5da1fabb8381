"""Content fingerprints: the task id of an input.

The canonical form is JSON with sorted keys, compact separators (``,`` and ``:``), non-ASCII
characters kept as they are (``ensure_ascii=False``), UTF-8 encoded; the fingerprint is the
SHA-256 hex digest of those bytes. Python's JSON encoding keeps ``1``, ``1.0`` and ``"1"`` apart,
so they fingerprint differently. Tuples encode as lists. Only JSON values are accepted: dict keys
must be strings, floats must be finite; anything else raises ``TypeError``/``ValueError`` naming
where the offending value sits, instead of being silently coerced into a colliding id.
"""

from __future__ import annotations

import hashlib
import json
import json.encoder
import math
from collections.abc import Callable
from typing import Any

__all__ = ["canonical_json", "fingerprint"]

_encoder = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def _make_fast_encode() -> Callable[[Any], str]:
    # json.JSONEncoder.encode builds a new C encoder on every call, which costs more than the
    # encoding of a small input; build it once. Same settings as _encoder, so the same text.
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - pure-Python json build
        return _encoder.encode

    def _refuse(obj: Any) -> Any:
        raise TypeError(f"value of type {type(obj).__name__} is not JSON-serializable")

    # Arguments: markers, default, encoder, indent, key_separator, item_separator,
    # sort_keys, skipkeys, allow_nan. No circular-reference markers: _check walked it first.
    c_encode = make(
        None, _refuse, json.encoder.encode_basestring, None, ":", ",", True, False, False
    )

    def encode(obj: Any) -> str:
        if isinstance(obj, str):
            return json.encoder.encode_basestring(obj)
        return "".join(c_encode(obj, 0))

    return encode


_encode = _make_fast_encode()
_SCALARS = (str, int, float, bool, type(None))


_EXACT_SCALARS = frozenset({str, int, bool, type(None)})


def _plain(obj: Any) -> bool:
    """Whether ``obj`` is plain JSON: exact JSON types, string keys, finite floats.

    The common case, checked without building the path strings :func:`_check` needs for its
    messages (they cost more than the encoding of a small input). ``False`` does not mean
    invalid (a ``str`` subclass is fine): :func:`_check` then decides, and names the place.
    """
    kind = type(obj)
    if kind is dict:
        values: Any = obj.values()
        for key in obj:
            if type(key) is not str:
                return False
    elif kind is list or kind is tuple:
        values = obj
    elif kind in _EXACT_SCALARS:
        return True
    else:
        return kind is float and math.isfinite(obj)
    for value in values:
        kind = type(value)
        if kind in _EXACT_SCALARS:
            continue
        if kind is float:
            if not math.isfinite(value):
                return False
        elif not _plain(value):
            return False
    return True


def _check(obj: Any, path: str) -> None:
    # json.dumps silently turns int/float/bool/None keys into strings, which would make
    # {1: "a"} and {"1": "a"} share an id; refuse them instead.
    if isinstance(obj, _SCALARS):
        if isinstance(obj, float) and not math.isfinite(obj):
            raise ValueError(f"fingerprint: {obj!r} at {path}: NaN and infinities are not JSON")
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"fingerprint: dict key {key!r} at {path} is a {type(key).__name__}; "
                    "only string keys are JSON"
                )
            _check(value, f"{path}.{key}")
        return
    if isinstance(obj, list | tuple):
        for i, value in enumerate(obj):
            _check(value, f"{path}[{i}]")
        return
    raise TypeError(
        f"fingerprint: value of type {type(obj).__name__} at {path} is not JSON-serializable"
    )


def canonical_json(obj: Any) -> str:
    """Return the canonical JSON text of ``obj`` (see the module docstring).

    Raises:
        TypeError: ``obj`` holds a non-JSON value or a non-string dict key.
        ValueError: ``obj`` holds NaN or an infinity (the message names where).
    """
    if not _plain(obj):
        _check(obj, "$")
    return _encode(obj)


def fingerprint(obj: Any) -> str:
    """SHA-256 hex digest of the canonical JSON of ``obj``.

    >>> fingerprint({"b": 1, "a": "x"}) == fingerprint({"a": "x", "b": 1})
    True
    """
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()
