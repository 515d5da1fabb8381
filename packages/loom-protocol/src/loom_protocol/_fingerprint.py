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
from typing import Any

__all__ = ["canonical_json", "fingerprint"]

_encoder = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)
_SCALARS = (str, int, float, bool, type(None))


def _check(obj: Any, path: str) -> None:
    # json.dumps silently turns int/float/bool/None keys into strings, which would make
    # {1: "a"} and {"1": "a"} share an id; refuse them instead.
    if isinstance(obj, _SCALARS):
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
        ValueError: ``obj`` holds NaN or an infinity.
    """
    _check(obj, "$")
    try:
        return _encoder.encode(obj)
    except ValueError as exc:
        raise ValueError(f"fingerprint: {exc} (NaN and infinities are not JSON)") from None


def fingerprint(obj: Any) -> str:
    """SHA-256 hex digest of the canonical JSON of ``obj``.

    >>> fingerprint({"b": 1, "a": "x"}) == fingerprint({"a": "x", "b": 1})
    True
    """
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()
