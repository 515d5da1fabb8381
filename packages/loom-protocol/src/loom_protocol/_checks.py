"""Small argument checks shared by every Loom package, so one rule holds everywhere.

Each ``check_*`` raises :class:`~loom_protocol.LoomUsageError` naming the argument and what it
must be, and returns the value when it is fine. ``bool`` is never accepted as a number (``True``
is an ``int`` to Python, never a timeout or a token count to a user); :func:`is_int` and
:func:`is_number` are the same rule for data that is read rather than refused (a provider's
token counts). :func:`shorten` cuts a text that goes into an error message or a log line.
"""

from __future__ import annotations

import math
from typing import Any, TypeGuard
from urllib.parse import SplitResult, urlsplit

from ._errors import LoomUsageError
from ._redact import redact_url

__all__ = [
    "MAX_TIMEOUT",
    "check_header",
    "check_http_url",
    "check_int",
    "check_non_empty_string",
    "check_non_negative_number",
    "check_number",
    "check_positive_number",
    "is_int",
    "is_number",
    "shorten",
]

#: The longest timeout accepted, in seconds (one day): beyond it, timers overflow.
MAX_TIMEOUT = 86_400.0


#: What :func:`shorten` puts where it cut.
_CUT = "..."


def is_int(value: object) -> TypeGuard[int]:
    """Whether ``value`` is an ``int`` and not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float]:
    """Whether ``value`` is an ``int`` or a ``float`` (NaN and infinities too), not a ``bool``."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_int(name: str, value: Any, minimum: int | None = None) -> int:
    """``value`` when it is an ``int`` (not a ``bool``) of at least ``minimum``.

    Raises:
        LoomUsageError: ``"{name} must be an int >= {minimum}, got …"``.
    """
    if is_int(value) and (minimum is None or value >= minimum):
        return value
    bound = "" if minimum is None else f" >= {minimum}"
    raise LoomUsageError(f"{name} must be an int{bound}, got {value!r}")


def check_positive_number(
    name: str, value: Any, unit: str = "", maximum: float | None = None
) -> float:
    """``value`` as a ``float`` when it is a finite number > 0 (and <= ``maximum``), not a bool.

    Args:
        name: The argument's name, for the message.
        value: The value to check.
        unit: Said after "number" in the message (``" of seconds"``).
        maximum: The largest value allowed, if any.

    Raises:
        LoomUsageError: ``"{name} must be a finite number{unit} > 0, got …"``.
    """
    return _check_from_zero(name, value, unit, maximum, zero_ok=False)


def check_non_negative_number(
    name: str, value: Any, unit: str = "", maximum: float | None = None
) -> float:
    """``value`` as a ``float`` when it is a finite number >= 0 (and <= ``maximum``), not a bool.

    As :func:`check_positive_number`, with 0 allowed (a delay, a wait that may be none).

    Raises:
        LoomUsageError: ``"{name} must be a finite number{unit} >= 0, got …"``.
    """
    return _check_from_zero(name, value, unit, maximum, zero_ok=True)


def _check_from_zero(
    name: str, value: Any, unit: str, maximum: float | None, *, zero_ok: bool
) -> float:
    if (
        is_number(value)
        and math.isfinite(value)
        and (value >= 0 if zero_ok else value > 0)
        and (maximum is None or value <= maximum)
    ):
        return float(value)
    low = ">= 0" if zero_ok else "> 0"
    bound = "" if maximum is None else f" and <= {maximum:g}"
    raise LoomUsageError(f"{name} must be a finite number{unit} {low}{bound}, got {value!r}")


def check_number(name: str, value: Any, low: float, high: float) -> float | int:
    """``value`` when it is a finite number within ``[low, high]`` (not a ``bool``).

    The value is returned as given (an ``int`` stays an ``int``).

    Raises:
        LoomUsageError: ``"{name} must be a finite number in [low, high], got …"``.
    """
    if is_number(value) and math.isfinite(value) and low <= value <= high:
        return value
    raise LoomUsageError(f"{name} must be a finite number in [{low:g}, {high:g}], got {value!r}")


def check_http_url(name: str, value: Any) -> SplitResult:
    """``value`` split into its parts when it is a usable ``http(s)://`` URL.

    A usable URL is a string with the ``http`` or ``https`` scheme, a host, a valid port, no
    userinfo (``user:password@``: credentials go in ``api_key`` or a header, where they are
    never shown) and no fragment. A query string is allowed (Azure's ``?api-version=``).
    Messages never show a password or a secret query value.

    Raises:
        LoomUsageError: What is wrong, naming ``name``.
    """
    if not isinstance(value, str):
        raise LoomUsageError(f"{name} must be an http(s):// URL string, got {type(value).__name__}")
    shown = redact_url(value)
    stripped = value.strip()
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in stripped):
        raise LoomUsageError(f"{name} contains whitespace or a control character: {shown!r}")
    if "\\" in stripped:
        raise LoomUsageError(f"{name} contains a backslash: {shown!r}")
    try:
        parts = urlsplit(stripped)
        port = parts.port
    except ValueError as exc:
        raise LoomUsageError(f"{name} is not a valid URL ({exc}): {shown!r}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise LoomUsageError(f"{name} must start with http:// or https://, got {shown!r}")
    if parts.username is not None or parts.password is not None:
        raise LoomUsageError(
            f"{name} must not contain credentials (user:password@), got {shown!r}; pass the key "
            "as api_key=, or an Authorization header through the backend's headers="
        )
    if not parts.hostname:
        raise LoomUsageError(f"{name} has no host: {shown!r}")
    if parts.fragment or stripped.endswith("#"):
        raise LoomUsageError(f"{name} must not have a #fragment, got {shown!r}")
    if port is not None and port == 0:
        raise LoomUsageError(f"{name} has port 0: {shown!r}")
    return parts


def check_header(name: str, value: Any) -> str:
    """``value`` when it is a string that can go into an HTTP header (a key, a header value).

    A line break or another control character would make every request fail ("header
    injection"); a key read from a file often keeps its newline. The message never shows
    the value.

    Raises:
        LoomUsageError: ``"{name} must be a string …"`` or ``"{name} contains a line break or
            another control character …"``.
    """
    if not isinstance(value, str):
        raise LoomUsageError(f"{name} must be a string, got {type(value).__name__}")
    if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
        raise LoomUsageError(
            f"{name} contains a line break or another control character (a value read from a "
            "file keeps its newline: strip it)"
        )
    return value


def check_non_empty_string(name: str, value: Any, *, allow_blank: bool = True) -> str:
    """``value`` when it is a ``str`` (a subclass too) with at least one character.

    Args:
        name: The argument's name, for the message.
        value: The value to check.
        allow_blank: With ``False``, a string of whitespace only is refused too (a model
            name); the store's keys keep any non-empty string.

    Raises:
        LoomUsageError: ``"{name} must be a non-empty string, got …"``.
    """
    if isinstance(value, str) and (value.strip() if not allow_blank else value):
        return value
    raise LoomUsageError(f"{name} must be a non-empty string, got {value!r}")


def shorten(text: str, limit: int, *, keep_end: bool = False) -> str:
    """``text`` cut to at most ``limit`` characters for a message, ``"..."`` marking the cut.

    A text within the limit comes back unchanged. Only the length changes: a caller that
    wants one line joins the words itself (``" ".join(text.split())``).

    Args:
        text: The text to show.
        limit: The longest result, at least 4 (room for the mark and one character).
        keep_end: Keep the end instead of the start (a path, whose file name tells most;
            a traceback, whose last lines tell most).

    Raises:
        LoomUsageError: ``limit`` is not an int >= 4.
    """
    check_int("limit", limit, len(_CUT) + 1)
    if len(text) <= limit:
        return text
    keep = limit - len(_CUT)
    return _CUT + text[-keep:] if keep_end else text[:keep] + _CUT
