"""Content fingerprints: the task id of an input, and the canonical value it is computed from.

The canonical form is JSON with sorted keys, compact separators (``,`` and ``:``), non-ASCII
characters kept as they are (``ensure_ascii=False``), UTF-8 encoded; the fingerprint is the
SHA-256 hex digest of those bytes. Python's JSON encoding keeps ``1``, ``1.0`` and ``"1"`` apart,
so they fingerprint differently. Tuples encode as lists. Only JSON values are accepted: dict keys
must be strings, floats must be finite, containers nest at most :data:`MAX_INPUT_DEPTH` levels and
never contain themselves; anything else raises ``TypeError``/``ValueError`` naming where the
offending value sits, instead of being silently coerced into a colliding id.

The *canonical value* (:func:`canonicalize`) is that JSON as plain Python values: what the text
decodes to, so two values with the same fingerprint are the same canonical value. The engine
renders prompts from it, which is why equal task ids always mean equal prompts.
"""

from __future__ import annotations

import hashlib
import json
import json.encoder
import math
from collections.abc import Callable
from typing import Any

from ._checks import shorten

__all__ = [
    "MAX_INPUT_DEPTH",
    "canonical_fingerprint",
    "canonical_json",
    "canonicalize",
    "fingerprint",
]

#: How deep containers (dicts, lists) may nest in a fingerprinted value; a top-level dict is
#: level 1, so ``{"a": [1]}`` is 2 levels deep. Every later step handles far more: pydantic
#: dumps ~250 levels of a TaskResult's input_data and parses ~195 back (a stream event adds two
#: levels), Jinja and the json module ~990; 64 leaves room under each of them and under the
#: stack a caller may already use, and no real input comes near it.
MAX_INPUT_DEPTH = 64

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
    # sort_keys, skipkeys, allow_nan. No circular-reference markers: only canonical values,
    # checked for cycles and depth first, are encoded.
    c_encode = make(
        None, _refuse, json.encoder.encode_basestring, None, ":", ",", True, False, False
    )

    def encode(obj: Any) -> str:
        if isinstance(obj, str):
            return json.encoder.encode_basestring(obj)
        return "".join(c_encode(obj, 0))

    return encode


_encode = _make_fast_encode()
_EXACT_SCALARS = frozenset({str, int, bool, type(None)})


def _plain(obj: Any, depth: int) -> bool:
    """Whether ``obj`` is already canonical: exact JSON types, finite floats, no tuples, string
    keys, nested dict keys in sorted order, at most :data:`MAX_INPUT_DEPTH` levels.

    The common case, checked without copying and without the path strings of the full walk
    (they cost more than the encoding of a small input). ``depth`` is the level of ``obj`` when
    it is a container; level 1 (the top) may keep its keys in any order. ``False`` does not
    mean invalid (a tuple is fine): :func:`_copy` then decides, and names the place.
    """
    kind = type(obj)
    if kind is dict:
        if depth > MAX_INPUT_DEPTH:
            return False
        if depth == 1:
            for key in obj:
                if type(key) is not str:
                    return False
        else:
            previous = None
            for key in obj:
                if type(key) is not str or (previous is not None and not previous < key):
                    return False
                previous = key
        values: Any = obj.values()
    elif kind is list:
        if depth > MAX_INPUT_DEPTH:
            return False
        values = obj
    elif kind in _EXACT_SCALARS:
        return True
    else:
        return kind is float and math.isfinite(obj)
    depth += 1
    for value in values:
        kind = type(value)
        if kind in _EXACT_SCALARS:
            continue
        if kind is float:
            if not math.isfinite(value):
                return False
        elif not _plain(value, depth):
            return False
    return True


class _Refused(Exception):
    """A value that has no canonical form; ``path`` grows (innermost first) as it propagates.

    The message reads ``fingerprint: <subject> at <path><rest>``.
    """

    def __init__(self, subject: str, rest: str, kind: type[Exception] = TypeError) -> None:
        super().__init__(subject + rest)
        self.subject = subject
        self.rest = rest
        self.kind = kind
        self.path: list[str | int] = []

    def error(self) -> Exception:
        return self.kind(f"fingerprint: {self.subject} at {_path(self.path)}{self.rest}")


_TYPE_NAME = vars(type)["__name__"]


def _type_name(obj: Any) -> str:
    """The name of ``obj``'s class, read from the type itself: no code of the object (not even
    a metaclass property) runs."""
    name: str = _TYPE_NAME.__get__(type(obj), type)
    return name


def _key_text(key: Any) -> str:
    """A dict key for a message, without calling a ``__repr__`` that might raise."""
    if type(key) in _KEY_REPR:
        try:
            text = repr(key)  # an int of over 4,300 digits refuses even this
        except ValueError:
            text = "(too long to show)"
        return shorten(text, 60)
    return "(not shown)"


_KEY_REPR = frozenset({int, bool, float, type(None), tuple, bytes})


def _copy(
    obj: Any,
    depth: int,
    convert: Callable[[Any], Any] | None,
    active: set[int],
) -> Any:
    """The canonical value of ``obj`` (a new container where one is needed)."""
    kind = type(obj)
    if kind in _EXACT_SCALARS:
        return obj
    if kind is float or isinstance(obj, float):
        value = float.__float__(obj)  # an exact float, whatever the subclass's __float__ does
        if not math.isfinite(value):
            raise _Refused(repr(value), ": NaN and infinities are not JSON", ValueError)
        return value
    if isinstance(obj, str):
        return str.__str__(obj)  # exact str of the same characters
    if isinstance(obj, int):  # bool is exact, above; this is an int subclass (IntEnum...)
        return int.__int__(obj)
    if isinstance(obj, dict | list | tuple):
        if depth > MAX_INPUT_DEPTH:
            raise _Refused(
                f"a {_type_name(obj)}",
                f" nests deeper than MAX_INPUT_DEPTH ({MAX_INPUT_DEPTH} levels)",
                ValueError,
            )
        ident = id(obj)
        if ident in active:
            raise _Refused(
                f"a {_type_name(obj)}", " contains itself (a circular reference)", ValueError
            )
        active.add(ident)
        try:
            if isinstance(obj, dict):
                return _copy_dict(obj, depth, convert, active)
            out: list[Any] = []
            for index, value in enumerate(obj):
                if type(value) in _EXACT_SCALARS:  # most values: no call, no checks
                    out.append(value)
                    continue
                try:
                    out.append(_copy(value, depth + 1, convert, active))
                except _Refused as exc:
                    exc.path.append(index)
                    raise
                except Exception as exc:
                    raise _unreadable(value, exc, index) from None
            return out
        except _Refused:
            raise
        except Exception as exc:
            # A subclass whose items() or __iter__ raises: the value cannot be read.
            raise _Refused(
                f"a {_type_name(obj)}", f" cannot be read: {_type_name(exc)}: {_message(exc)}"
            ) from None
        finally:
            active.discard(ident)
    if convert is not None:
        try:
            replacement = convert(obj)
        except (TypeError, ValueError) as exc:
            subject = f"value of type {_type_name(obj)}"
            raise _Refused(subject, f": {_message(exc)}", type(exc)) from None
        except Exception as exc:  # the converter ran the value's own code, which raised
            subject = f"value of type {_type_name(obj)}"
            raise _Refused(
                subject, f" cannot be read: {_type_name(exc)}: {_message(exc)}"
            ) from None
        if type(replacement) is not kind:
            return _copy(replacement, depth, convert, active)
    raise _Refused(f"value of type {_type_name(obj)}", " is not JSON-serializable")


def _unreadable(value: Any, exc: Exception, place: str | int) -> _Refused:
    """The refusal of a value at ``place`` whose own code raised while it was examined."""
    refused = _Refused(
        f"a {_type_name(value)}", f" cannot be read: {_type_name(exc)}: {_message(exc)}"
    )
    refused.path.append(place)
    return refused


def _message(exc: BaseException) -> str:
    """``str(exc)``, shortened, or only its type when even that raises."""
    try:
        text = str(exc)
    except Exception:
        return _type_name(exc)
    return shorten(text, 200)


def _copy_dict(
    obj: dict[Any, Any],
    depth: int,
    convert: Callable[[Any], Any] | None,
    active: set[int],
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in obj.items():
        # json.dumps silently turns int/float/bool/None keys into strings, which would make
        # {1: "a"} and {"1": "a"} share an id; refuse them instead.
        if not isinstance(key, str):
            raise _Refused(
                f"dict key {_key_text(key)}",
                f" is a {_type_name(key)}; only string keys are JSON",
            )
        text = key if type(key) is str else str.__str__(key)
        if type(value) in _EXACT_SCALARS:  # most values: no call, no checks
            out[text] = value
            continue
        try:
            out[text] = _copy(value, depth + 1, convert, active)
        except _Refused as exc:
            exc.path.append(text)
            raise
        except Exception as exc:
            raise _unreadable(value, exc, text) from None
    if depth > 1:
        return dict(sorted(out.items()))
    return out


def _path(parts: list[str | int]) -> str:
    """``$.a[1].b`` from the parts (innermost first); a very deep one keeps its two ends."""
    names = [
        f"[{part}]" if isinstance(part, int) else "." + shorten(part, 60)
        for part in reversed(parts)
    ]
    if len(names) > 12:
        names[6:-4] = [f"...({len(names) - 10} more)..."]
    return "$" + "".join(names)


def _write(value: Any) -> str:
    """The canonical JSON of a canonical value."""
    try:
        return _encode(value)
    except ValueError as exc:
        # The one refusal left after the walk: an int longer than Python converts to text
        # (sys.get_int_max_str_digits, 4,300 digits by default). Only now is its place looked for.
        parts = _long_int_path(value)
        if parts is None:
            raise
        raise ValueError(
            f"fingerprint: an int at {_path(parts)} has too many digits to write ({exc})"
        ) from None


def _long_int_path(value: Any) -> list[str | int] | None:
    """The path (innermost first) of the first int whose text Python refuses, if any."""
    if type(value) is int:
        try:
            str(value)
        except ValueError:
            return []
        return None
    if type(value) is dict:
        items: Any = value.items()
    elif type(value) is list:
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _long_int_path(item)
        if found is not None:
            found.append(key)
            return found
    return None


def canonical_fingerprint(
    obj: Any, *, convert: Callable[[Any], Any] | None = None
) -> tuple[Any, str]:
    """The canonical value of ``obj`` and its fingerprint, in one walk.

    Args:
        obj: The value.
        convert: Called with any value that is not a JSON type (a ``datetime``, a numpy
            number...); returns a replacement, which is made canonical in turn, or raises
            ``TypeError``/``ValueError`` saying why not (the message is then prefixed with
            where the value sits). Without it such values are refused.

    Returns:
        ``(canonicalize(obj), fingerprint(...))``; see :func:`canonicalize`.

    Raises:
        TypeError: ``obj`` holds a non-JSON value or a non-string dict key.
        ValueError: ``obj`` holds NaN or an infinity, nests deeper than
            :data:`MAX_INPUT_DEPTH` levels, or contains itself.
    """
    if _plain(obj, 1):
        value = obj
    else:
        try:
            value = _copy(obj, 1, convert, set())
        except _Refused as exc:
            raise exc.error() from None
    try:
        text = _encode(value)  # per input on admission: no extra call on the way
    except ValueError:
        text = _write(value)  # raises, naming the place
    return value, hashlib.sha256(text.encode("utf-8")).hexdigest()


def canonicalize(obj: Any, *, convert: Callable[[Any], Any] | None = None) -> Any:
    """The canonical value of ``obj``: its canonical JSON as plain Python values.

    Tuples become lists; subclasses of ``str``, ``int``, ``float``, ``dict`` and ``list``
    become the base type (an ``IntEnum`` member its number); the keys of every dict nested in
    another are in sorted order. A top-level dict keeps its key order: its keys are read by
    name (a template's variables), so their order shows nowhere, and most inputs then need no
    copy. ``obj`` itself is returned when it is already canonical.

    ``canonical_json(canonicalize(obj)) == canonical_json(obj)``, and two values with the same
    fingerprint have equal canonical values (nested key order included).

    Raises:
        TypeError, ValueError: as :func:`canonical_fingerprint`.
    """
    if _plain(obj, 1):
        return obj
    try:
        return _copy(obj, 1, convert, set())
    except _Refused as exc:
        raise exc.error() from None


def canonical_json(obj: Any) -> str:
    """Return the canonical JSON text of ``obj`` (see the module docstring).

    Raises:
        TypeError: ``obj`` holds a non-JSON value or a non-string dict key.
        ValueError: ``obj`` holds NaN or an infinity, nests deeper than
            :data:`MAX_INPUT_DEPTH` levels, or contains itself (the message names where).
    """
    return _write(canonicalize(obj))


def fingerprint(obj: Any) -> str:
    """SHA-256 hex digest of the canonical JSON of ``obj``.

    >>> fingerprint({"b": 1, "a": "x"}) == fingerprint({"a": "x", "b": 1})
    True
    """
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()
