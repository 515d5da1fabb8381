"""The one error table every backend uses.

HTTP statuses, transport failures and malformed answers all become a
:class:`~loom_protocol.BackendError` here, so every backend classifies failures the same way:

=====================  ========================  =========
what happened          ErrorCode                 retryable
=====================  ========================  =========
401, 403               provider_auth             no
400, 404, 413, 422     provider_bad_request      no
408, 409, 429          provider_rate_limited     yes (``retry_after`` from the headers)
5xx, reset, refused    provider_unavailable      yes
timeout                provider_timeout          yes
non-JSON 200 body      provider_error            yes (a proxy hiccup)
anything else          provider_error            no
=====================  ========================  =========
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping
from email.utils import parsedate_to_datetime

import aiohttp
import httpx

from loom_protocol import BackendError, Error, ErrorCode, redact_text, shorten

from ._limits import parse_rate_limit_headers

__all__ = [
    "DETAIL_LIMIT",
    "bad_answer_error",
    "error_for_status",
    "error_for_transport",
    "one_line",
    "parse_retry_after",
    "redact",
    "redacted",
    "transport_error",
]

#: Provider bodies kept in ``Error.detail`` are cut to this many characters.
DETAIL_LIMIT = 4096
_MESSAGE_LIMIT = 300

_REASONS: dict[ErrorCode, str] = {
    ErrorCode.PROVIDER_AUTH: "the provider rejected the credentials",
    ErrorCode.PROVIDER_BAD_REQUEST: "the provider rejected the request",
    ErrorCode.PROVIDER_RATE_LIMITED: "the provider is rate limiting or asked to try again",
    ErrorCode.PROVIDER_UNAVAILABLE: "the provider is unavailable",
}


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Mask each secret, and any URL credential, in ``text`` (``***``).

    Providers sometimes echo (part of) a rejected key in their error body; nothing that came
    back from the wire may carry a credential into an error message, a log line or the store.
    The rules are :func:`loom_protocol.redact_text`'s, shared by every package.
    """
    return redact_text(text, secrets)


def one_line(text: str, limit: int = _MESSAGE_LIMIT) -> str:
    """``text`` on one line (whitespace runs become one space), shortened for a message."""
    return shorten(" ".join(text.split()), limit)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # httpx.Headers is case-insensitive, a plain dict is not: look both ways.
    value = headers.get(name)
    if value is not None:
        return value
    for key, item in headers.items():
        if key.lower() == name:
            return item
    return None


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Read how long the provider asked us to wait, in seconds.

    ``retry-after-ms`` (OpenAI, milliseconds) takes precedence over ``Retry-After``, which may
    hold seconds (``"2"``, ``"1.5"``) or an HTTP date. A negative wait (a date in the past)
    becomes ``0.0``; a number too large for a float (``"1e999"``, ``"inf"``) is ``math.inf``
    (the caller decides how long it is willing to wait); ``"nan"`` and a date that cannot be
    read are ignored.

    Args:
        headers: The response headers (any case).

    Returns:
        The wait in seconds, or ``None`` when no usable header is present.
    """
    millis = _header(headers, "retry-after-ms")
    if millis is not None:
        value = _number(millis)
        if value is not None:
            return max(0.0, value / 1000.0)
    raw = _header(headers, "retry-after")
    if raw is None:
        return None
    value = _number(raw)
    if value is not None:
        return max(0.0, value)
    try:
        when = parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError, OverflowError):  # absurd years or offsets
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive parse means GMT too.
        return None
    return max(0.0, when.timestamp() - time.time())


def _number(text: str) -> float | None:
    """``text`` as a number of seconds: ``None`` if it is not one (or NaN), inf if too large."""
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return None if math.isnan(value) else value


def provider_message(body: str) -> str | None:
    """The provider's own error message, when ``body`` is JSON in a known shape."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    # OpenAI / Anthropic: {"error": {"message": ...}}; vLLM: {"message": ...};
    # FastAPI-based servers: {"detail": ...}; some proxies: {"error": "..."}.
    error = data.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    for candidate in (error, data.get("message"), data.get("detail")):
        if isinstance(candidate, str) and candidate:
            return candidate
    return None


def _classify_status(status: int) -> tuple[ErrorCode, bool]:
    if status in (401, 403):
        return ErrorCode.PROVIDER_AUTH, False
    if status in (400, 404, 413, 422):
        return ErrorCode.PROVIDER_BAD_REQUEST, False
    if status in (408, 409, 429):
        return ErrorCode.PROVIDER_RATE_LIMITED, True
    if 500 <= status <= 599:
        return ErrorCode.PROVIDER_UNAVAILABLE, True
    return ErrorCode.PROVIDER_ERROR, False


def error_for_status(
    status: int,
    body: str,
    headers: Mapping[str, str],
    *,
    secrets: Iterable[str | None] = (),
) -> BackendError:
    """Turn a non-2xx HTTP answer into a :class:`~loom_protocol.BackendError`.

    Args:
        status: The HTTP status.
        body: The response body as text (kept, cut to ~4 KB, in ``error.detail``).
        headers: The response headers, read for ``Retry-After`` / ``retry-after-ms``.
        secrets: Strings (API keys) to blank out of the message and the detail.

    Returns:
        The error to raise; its code and ``retryable`` follow the module's table.
    """
    secrets = tuple(secrets)
    code, retryable = _classify_status(status)
    reason = _REASONS.get(code, f"the provider answered HTTP {status}")
    said = provider_message(body)
    message = f"{reason}: {one_line(said)}" if said else reason
    retry_after = parse_retry_after(headers) if retryable else None
    return BackendError(
        Error(
            code=code,
            message=redact(message, secrets),
            detail=redact(shorten(body, DETAIL_LIMIT), secrets) or None,
            retryable=retryable,
            status=status if 100 <= status <= 599 else None,
        ),
        retry_after=retry_after,
        # The refusal's rate-limit headers too: every path to a status error (HTTP backends,
        # an SDK client's exception) carries them to the engine.
        rate_limit=parse_rate_limit_headers(headers),
    )


def bad_answer_error(
    problem: str,
    body: str,
    *,
    status: int | None = 200,
    retryable: bool = False,
    secrets: Iterable[str | None] = (),
) -> BackendError:
    """A provider_error for a successful status whose body is not a usable answer.

    Args:
        problem: What is wrong, e.g. ``"the answer is not JSON"``.
        body: The body received (kept, cut to ~4 KB, in ``error.detail``).
        status: The HTTP status of the answer, when there was one.
        retryable: ``True`` for a body that is not JSON at all (usually a proxy hiccup).
        secrets: Strings (API keys) to blank out of the detail.
    """
    secrets = tuple(secrets)
    said = provider_message(body)
    message = f"{problem}: {one_line(said)}" if said else problem
    return BackendError(
        Error(
            code=ErrorCode.PROVIDER_ERROR,
            message=redact(message, secrets),
            detail=redact(shorten(body, DETAIL_LIMIT), secrets) or None,
            retryable=retryable,
            status=status,
        )
    )


def _transport_code(exc: BaseException) -> tuple[ErrorCode, str]:
    """The table's row for a call that got no answer: aiohttp's, httpx's or the socket's."""
    # aiohttp's timeouts are TimeoutErrors (its ServerTimeoutError also a connection error):
    # test them first.
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return ErrorCode.PROVIDER_TIMEOUT, "the provider timed out"
    if isinstance(exc, aiohttp.ClientError | httpx.TransportError | ConnectionError):
        return ErrorCode.PROVIDER_UNAVAILABLE, "could not reach the provider"
    return ErrorCode.PROVIDER_ERROR, "the provider call failed"


def transport_error(code: ErrorCode, reason: str, exc: BaseException) -> BackendError:
    """A BackendError for a call that got no answer; retryable unless code is provider_error."""
    text = one_line(str(exc)) or type(exc).__name__
    return BackendError(
        Error(
            code=code,
            message=f"{reason}: {text}",
            detail=f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}",
            retryable=code is not ErrorCode.PROVIDER_ERROR,
        )
    )


def error_for_transport(exc: BaseException, *, secrets: Iterable[str | None] = ()) -> BackendError:
    """Turn the exception of a call that got no answer into a BackendError: the one boundary.

    The exception is classified by its own type, whatever raised it (the aiohttp pool, an
    injected httpx transport, an SDK's httpx client, the socket): timeouts become
    provider_timeout; refused or reset connections and broken bodies become
    provider_unavailable; both are retryable. Anything else is a non-retryable provider_error.
    """
    code, reason = _transport_code(exc)
    return redacted(transport_error(code, reason, exc), secrets)


def redacted(error: BackendError, secrets: Iterable[str | None]) -> BackendError:
    """``error`` with every secret (and URL credential) masked in its message and detail."""
    secrets = tuple(secrets)
    message = redact(error.error.message, secrets)
    detail = redact(error.error.detail or "", secrets) or None
    if message == error.error.message and detail == error.error.detail:
        return error
    clean = error.error.model_copy(update={"message": message, "detail": detail})
    return BackendError(clean, retry_after=error.retry_after, rate_limit=error.rate_limit)
