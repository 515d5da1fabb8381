"""What the OpenAI and Anthropic Batch API adapters share: their I/O, checks and results.

:class:`BatchHTTPBackend` adds to :class:`~loom_backends._http.HTTPBackend` the calls a Batch
API needs besides the one hot ``POST``: any method, any path under the base URL (its query,
Azure's ``?api-version=...``, kept), any body. Every failure leaves through the one error
boundary (``_errors``), exactly as an online call's does; nothing retries or sleeps.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import httpx

from loom_protocol import (
    BackendError,
    Error,
    ErrorCode,
    LoomUsageError,
    ProviderBatchInfo,
    ProviderBatchItem,
    ProviderBatchLimits,
    is_int,
    shorten,
)

from ._defaults import DEFAULT_MAX_CONNECTIONS, DEFAULT_TIMEOUT
from ._errors import bad_answer_error, error_for_status, error_for_transport
from ._http import HTTPBackend
from ._json import parse_json_answer
from ._transport import BufferedAiohttpTransport

__all__ = ["BatchHTTPBackend", "count", "timestamp", "unfinished_item"]

logger = logging.getLogger("loom.backends.batch")


def unfinished_item(custom_id: str, why: str, said: str | None = None) -> ProviderBatchItem:
    """A request the provider never ran because its batch ``why`` ("expired"/"cancelled").

    Retryable, with ``detail`` exactly ``why``: the engine sends the request again.
    """
    if why == "expired":
        code, message = ErrorCode.PROVIDER_UNAVAILABLE, "the batch expired before this request ran"
    else:
        code, message = ErrorCode.CANCELLED, "the batch was cancelled before this request ran"
    if said:
        message = f"{message} ({shorten(said, 200)})"
    return ProviderBatchItem(
        custom_id=custom_id, error=Error(code=code, message=message, detail=why, retryable=True)
    )


class BatchHTTPBackend(HTTPBackend):
    """An HTTP backend whose provider has a Batch API: shared I/O and argument checks.

    Args:
        batch_limits: Replaces the provider's limits per provider batch (a gateway with
            smaller ones, or tests); by default the provider's documented limits.
        Others: as :class:`~loom_backends._http.HTTPBackend`.
    """

    #: The provider's documented limits per provider batch.
    _BATCH_LIMITS: ProviderBatchLimits

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        headers: Mapping[str, str] | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
        batch_limits: ProviderBatchLimits | None = None,
    ) -> None:
        if batch_limits is not None and not isinstance(batch_limits, ProviderBatchLimits):
            raise LoomUsageError(
                f"{type(self).__name__}: batch_limits must be a ProviderBatchLimits, got "
                f"{type(batch_limits).__name__}"
            )
        self._batch_limits = batch_limits or self._BATCH_LIMITS
        super().__init__(
            base_url,
            api_key,
            timeout=timeout,
            max_connections=max_connections,
            headers=headers,
            async_transport=async_transport,
        )

    @property
    def batch_limits(self) -> ProviderBatchLimits:
        """The most one provider batch may hold: requests, and bytes of encoded lines."""
        return self._batch_limits

    # -- URLs ---------------------------------------------------------------------------------

    def _api_url(self, path: str, params: Mapping[str, Any] | None = None) -> str:
        """``path`` under the base URL's path, the base URL's query kept, ``params`` added."""
        parts = urlsplit(self._base_url)
        query = parts.query
        extra = urlencode({k: v for k, v in (params or {}).items() if v is not None})
        if extra:
            query = f"{query}&{extra}" if query else extra
        return urlunsplit((parts.scheme, parts.netloc, parts.path + path, query, ""))

    def _batch_id(self, batch_id: str) -> str:
        """``batch_id`` checked and quoted as one path segment (never a path of its own)."""
        if not isinstance(batch_id, str) or not batch_id.strip():
            raise LoomUsageError(
                f"{type(self).__name__}: batch_id must be a non-empty str, got {batch_id!r}"
            )
        return quote(batch_id, safe="")

    # -- I/O ----------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        url: str,
        content: bytes | None = None,
        content_type: str | None = None,
        accept: str = "application/json",
    ) -> tuple[int, Mapping[str, str], bytes]:
        """One call; (status, headers, body). Transport failures leave as BackendError."""
        headers = dict(self._headers)
        headers["accept"] = accept
        if content is None:
            headers.pop("content-type", None)
        elif content_type is not None:
            headers["content-type"] = content_type
        transport = self._loop_transport()
        try:
            if isinstance(transport, BufferedAiohttpTransport):
                answer = await transport.send_bytes(
                    method, httpx.URL(url), list(headers.items()), content, self._timeouts
                )
                status, _, answer_headers, body = answer
            else:
                status, answer_headers, body = await self._send_httpx(
                    transport, method, url, headers, content
                )
        except Exception as exc:
            raise error_for_transport(exc, secrets=self._secrets) from None
        return status, answer_headers, body

    def _check_status(
        self, status: int, headers: Mapping[str, str], body: bytes, sent: int | None = None
    ) -> None:
        """Raise the table's BackendError for a non-2xx answer (a 413 names ``sent``)."""
        if 200 <= status <= 299:
            return
        error = error_for_status(
            status, body.decode("utf-8", "replace"), headers, secrets=self._secrets
        )
        if status == 413:
            size = f"{sent:,} bytes were sent" if sent is not None else "the body was too large"
            limit = self._batch_limits.max_bytes
            message = (
                f"the provider rejected the batch as too large (HTTP 413): {size}; this "
                f"backend's limit is {limit:,} bytes per provider batch (batch_limits)"
            )
            raise BackendError(error.error.model_copy(update={"message": message}))
        raise error

    async def _json(
        self,
        method: str,
        url: str,
        content: bytes | None = None,
        content_type: str | None = "application/json",
    ) -> dict[str, Any]:
        """One call answered by a JSON object (else the table's BackendError)."""
        status, headers, body = await self._call(method, url, content, content_type)
        self._check_status(status, headers, body, None if content is None else len(content))
        return parse_json_answer(status, body, headers, self._secrets)

    async def _download(self, url: str) -> bytes:
        """A file's bytes (results JSONL)."""
        status, headers, body = await self._call("GET", url, accept="application/binary")
        self._check_status(status, headers, body)
        return body

    # -- what both providers do alike -----------------------------------------------------------

    def _info(self, data: dict[str, Any]) -> ProviderBatchInfo:
        """The provider's batch object, read."""
        raise NotImplementedError

    def _item(self, number: int, raw: bytes) -> ProviderBatchItem | None:
        """One results line, read; ``None`` for a line that names no request."""
        raise NotImplementedError

    def _cancel_url(self, batch_id: str) -> str:
        raise NotImplementedError

    def _list_url(self, after: str | None) -> str:
        """The URL of the page of batches after the one named ``after`` (newest first)."""
        raise NotImplementedError

    async def aget_batch(self, batch_id: str) -> ProviderBatchInfo:
        """The provider batch ``batch_id`` now."""
        raise NotImplementedError

    async def alist_batches(self, *, created_after: datetime) -> list[ProviderBatchInfo]:
        """Every batch created at or after ``created_after`` (to the second), newest first.

        Follows the provider's pages until one holds an older batch or says there is no more.
        """
        if not isinstance(created_after, datetime) or created_after.tzinfo is None:
            raise LoomUsageError(
                f"{type(self).__name__}.alist_batches: created_after must be an aware datetime"
            )
        # OpenAI counts whole seconds: a batch created in the same second is kept.
        floor = created_after.replace(microsecond=0)
        found: list[ProviderBatchInfo] = []
        after: str | None = None
        seen: set[str] = set()
        while True:
            page = await self._json("GET", self._list_url(after))
            data = page.get("data")
            if not isinstance(data, list):
                raise self._bad("the provider's batch list has no data list", page)
            older = False
            for item in data:
                if not isinstance(item, dict):
                    raise self._bad("the provider's batch list holds a non-object", item)
                info = self._info(item)
                if info.created_at is not None and info.created_at < floor:
                    older = True  # newest first: every later one is older still
                    break
                if info.batch_id not in seen:
                    seen.add(info.batch_id)
                    found.append(info)
            last = page.get("last_id") or (data[-1].get("id") if data else None)
            if older or page.get("has_more") is not True or not isinstance(last, str):
                return found
            if last == after:
                raise self._bad("the provider's batch list repeats its cursor", page)
            after = last

    async def acancel_batch(self, batch_id: str) -> ProviderBatchInfo:
        """Ask to cancel; a batch that already ended is returned as it is."""
        try:
            return self._info(await self._json("POST", self._cancel_url(batch_id), b""))
        except BackendError as exc:
            if exc.error.status not in (400, 409):
                raise
            # Cancelling a batch that ended meanwhile is a race, not a mistake.
            info = await self.aget_batch(batch_id)
            if info.state.is_final:
                return info
            raise

    def _items(self, content: bytes) -> list[ProviderBatchItem]:
        """Every request named in a results file. Split on ``\\n`` bytes only: an answer may
        hold U+2028, which ``str.splitlines`` would take for a line break."""
        items: list[ProviderBatchItem] = []
        for number, line in enumerate(content.split(b"\n"), start=1):
            if line.strip():
                item = self._item(number, line)
                if item is not None:
                    items.append(item)
        return items

    # -- checks and reading -------------------------------------------------------------------

    def _check_lines(self, encoded: object) -> list[bytes]:
        """``encoded`` as a list, or a LoomUsageError for an empty or oversized batch."""
        name = type(self).__name__
        if isinstance(encoded, bytes | str) or not isinstance(encoded, Sequence):
            raise LoomUsageError(
                f"{name}.asubmit_batch: encoded must be a sequence of bytes made by "
                f"encode_line, got {type(encoded).__name__}"
            )
        lines = list(encoded)
        if not lines:
            raise LoomUsageError(
                f"{name}.asubmit_batch: no requests: a provider batch needs at least one line"
            )
        for index, line in enumerate(lines):
            if not isinstance(line, bytes) or not line.strip():
                raise LoomUsageError(
                    f"{name}.asubmit_batch: line {index} is not the non-empty bytes encode_line "
                    f"makes, got {type(line).__name__}"
                )
        limits = self._batch_limits
        size = sum(len(line) for line in lines)
        if len(lines) > limits.max_requests:
            raise LoomUsageError(
                f"{name}.asubmit_batch: {len(lines):,} requests, more than the "
                f"{limits.max_requests:,} one provider batch may hold: split them"
            )
        if size > limits.max_bytes:
            raise LoomUsageError(
                f"{name}.asubmit_batch: {size:,} bytes, more than the {limits.max_bytes:,} one "
                f"provider batch may hold: split them"
            )
        return lines

    def _bad(self, problem: str, data: Any) -> BackendError:
        return bad_answer_error(problem, shorten(repr(data), 2000), secrets=self._secrets)

    def _batch_ident(self, data: dict[str, Any]) -> str:
        batch_id = data.get("id")
        if not isinstance(batch_id, str) or not batch_id:
            raise self._bad("the provider's batch object has no id", data)
        return batch_id

    def _skip_line(self, number: int, why: str, raw: bytes) -> None:
        # A line that names no request cannot be matched to one: it is left out, and the
        # engine treats each request missing from a final batch's results as unfinished.
        logger.warning(
            "%s: results line %d skipped (%s): %s",
            type(self).__name__,
            number,
            why,
            shorten(raw.decode("utf-8", "replace"), 200),
        )


def timestamp(value: Any) -> datetime | None:
    """A provider's time (Unix seconds, or RFC 3339 text) as an aware datetime."""
    if is_int(value) or isinstance(value, float):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and value:
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return None


def count(data: Any, key: str) -> int:
    """``data[key]`` as a count (0 when absent or not a non-negative int)."""
    value = data.get(key) if isinstance(data, dict) else None
    return value if is_int(value) and value >= 0 else 0
