"""Anthropic's Message Batches: ``/v1/messages/batches`` beside ``/v1/messages``.

A batch is one ``POST`` of ``{"requests": [{"custom_id", "params"}, ...]}``, ``params`` being
the body a ``/v1/messages`` call would send. Results come back as one JSONL download once the
batch has ended, one line per request (``succeeded``, ``errored``, ``canceled``, ``expired``),
in any order. Anthropic keeps no metadata on a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from loom_protocol import (
    BackendError,
    Error,
    ErrorCode,
    LoomUsageError,
    ProviderBatchCounts,
    ProviderBatchInfo,
    ProviderBatchItem,
    ProviderBatchLimits,
    ProviderBatchLine,
    ProviderBatchState,
    shorten,
)

from ._batch_http import BatchHTTPBackend, count, timestamp, unfinished_item
from ._errors import DETAIL_LIMIT, error_for_status, redact
from ._json import encode_json, loads_json

__all__ = ["ANTHROPIC_BATCH_LIMITS", "AnthropicBatchBackend"]

_MAX_REQUESTS = 100_000
#: 100,000 requests and 256 MB per create body (10^6 bytes, the safe reading), less what
#: wraps the lines (``{"requests":[``, ``]}`` and one comma between two lines), so lines
#: whose lengths add up to ``max_bytes`` always make a body within the limit.
ANTHROPIC_BATCH_LIMITS = ProviderBatchLimits(
    max_requests=_MAX_REQUESTS, max_bytes=256_000_000 - _MAX_REQUESTS - 64
)
_PAGE = 100
# The error types of the Messages API, as the HTTP status an online call would have got.
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class AnthropicBatchBackend(BatchHTTPBackend):
    """The Message Batches half of :class:`~loom_backends.AnthropicBackend`."""

    _BATCH_LIMITS = ANTHROPIC_BATCH_LIMITS

    def _batches_url(self, suffix: str = "", params: dict[str, Any] | None = None) -> str:
        # The base URL may end in /v1 (OpenAI-style users) or not, as for /v1/messages.
        v1 = urlsplit(self.base_url).path.endswith("/v1")
        root = "/messages/batches" if v1 else "/v1/messages/batches"
        return self._api_url(root + suffix, params)

    def encode_line(self, line: ProviderBatchLine) -> bytes:
        """One element of ``requests``: the custom_id and the online body as ``params``."""
        if not isinstance(line, ProviderBatchLine):
            raise LoomUsageError(
                f"{type(self).__name__}.encode_line expects a ProviderBatchLine, got "
                f"{type(line).__name__}"
            )
        item = {"custom_id": line.custom_id, "params": self._build_body(line.request)}
        return encode_json(item).encode()

    async def asubmit_batch(
        self, encoded: Sequence[bytes], *, metadata: dict[str, str]
    ) -> ProviderBatchInfo:
        """One ``POST /v1/messages/batches`` (``metadata`` is not kept: Anthropic has none)."""
        if not isinstance(metadata, dict):
            raise LoomUsageError(f"{type(self).__name__}.asubmit_batch: metadata must be a dict")
        lines = self._check_lines(encoded)
        for index, line in enumerate(lines):
            if not line.lstrip().startswith(b"{"):
                raise LoomUsageError(
                    f"{type(self).__name__}.asubmit_batch: line {index} is not a JSON object "
                    "made by encode_line"
                )
        body = b'{"requests":[' + b",".join(lines) + b"]}"
        return self._info(await self._json("POST", self._batches_url(), body))

    async def aget_batch(self, batch_id: str) -> ProviderBatchInfo:
        """The batch now (``GET /v1/messages/batches/{id}``)."""
        return self._info(
            await self._json("GET", self._batches_url(f"/{self._batch_id(batch_id)}"))
        )

    def _list_url(self, after: str | None) -> str:
        return self._batches_url(params={"limit": _PAGE, "after_id": after})

    def _cancel_url(self, batch_id: str) -> str:
        return self._batches_url(f"/{self._batch_id(batch_id)}/cancel")

    async def aresults(self, batch_id: str) -> list[ProviderBatchItem]:
        """Every outcome, once the batch has ended (``[]`` before: Anthropic has none yet)."""
        info = await self.aget_batch(batch_id)
        if not info.results_ready:
            return []
        # The results are read from this backend's base URL, not from the answer's
        # results_url: the key goes only where the user pointed the backend.
        url = self._batches_url(f"/{self._batch_id(batch_id)}/results")
        return self._items(await self._download(url))

    # -- reading the provider's objects -------------------------------------------------------

    def _info(self, data: dict[str, Any]) -> ProviderBatchInfo:
        batch_id = self._batch_ident(data)
        status = data.get("processing_status")
        if not isinstance(status, str):
            raise self._bad("the provider's batch object has no processing_status", data)
        counts = data.get("request_counts")
        numbers = {
            k: count(counts, k)
            for k in ("processing", "succeeded", "errored", "canceled", "expired")
        }
        if status == "ended":
            if data.get("cancel_initiated_at"):
                state = ProviderBatchState.CANCELLED
            elif numbers["expired"]:
                state = ProviderBatchState.EXPIRED
            else:
                state = ProviderBatchState.COMPLETED
        elif status == "canceling":
            state = ProviderBatchState.CANCELLING
        else:  # in_progress, or a word this version does not know: keep polling
            state = ProviderBatchState.IN_PROGRESS
        return ProviderBatchInfo(
            batch_id=batch_id,
            state=state,
            provider_status=status,
            counts=ProviderBatchCounts(
                total=sum(numbers.values()),
                processing=numbers["processing"],
                succeeded=numbers["succeeded"],
                failed=numbers["errored"],
                expired=numbers["expired"],
                cancelled=numbers["canceled"],
            ),
            created_at=timestamp(data.get("created_at")),
            expires_at=timestamp(data.get("expires_at")),
            results_ready=status == "ended",
        )

    def _item(self, number: int, raw: bytes) -> ProviderBatchItem | None:
        try:
            data = loads_json(raw)
        except ValueError:
            self._skip_line(number, "not JSON", raw)
            return None
        custom_id = data.get("custom_id") if isinstance(data, dict) else None
        if not isinstance(custom_id, str) or not custom_id:
            self._skip_line(number, "no custom_id", raw)
            return None
        result = data.get("result")
        kind = result.get("type") if isinstance(result, dict) else None
        if kind == "succeeded" and isinstance(result, dict):
            message = result.get("message")
            try:
                if not isinstance(message, dict):
                    raise self._bad("a succeeded result has no message", result)
                return ProviderBatchItem(
                    custom_id=custom_id, response=self._parse_answer(message, raw, 200)
                )
            except BackendError as exc:
                return ProviderBatchItem(custom_id=custom_id, error=exc.error)
        if kind == "expired":
            return unfinished_item(custom_id, "expired")
        if kind == "canceled":
            return unfinished_item(custom_id, "cancelled")
        if kind == "errored" and isinstance(result, dict):
            return ProviderBatchItem(custom_id=custom_id, error=self._errored(result.get("error")))
        return ProviderBatchItem(
            custom_id=custom_id,
            error=Error(
                code=ErrorCode.PROVIDER_ERROR,
                message=f"the provider's result has an unknown type {shorten(str(kind), 60)!r}",
                detail=redact(shorten(raw.decode("utf-8", "replace"), DETAIL_LIMIT), self._secrets),
            ),
        )

    def _errored(self, error: Any) -> Error:
        """An ``errored`` result, classified as the same error online would be."""
        inner = error.get("error") if isinstance(error, dict) else None
        kind = inner.get("type") if isinstance(inner, dict) else None
        text = encode_json(error) if isinstance(error, dict) else str(error)
        status = _ERROR_STATUS.get(kind) if isinstance(kind, str) else None
        if status is None:
            return Error(
                code=ErrorCode.PROVIDER_ERROR,
                message=redact(
                    f"the provider could not run the request ({shorten(str(kind), 60)})",
                    self._secrets,
                ),
                detail=redact(shorten(text, DETAIL_LIMIT), self._secrets),
            )
        return error_for_status(status, text, {}, secrets=self._secrets).error
