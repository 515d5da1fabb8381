"""OpenAI's Batch API: ``/files`` and ``/batches`` under the ``/chat/completions`` base URL.

A batch is one uploaded JSONL file (one request per line: ``custom_id``, ``method``, ``url``,
``body``) and one ``POST /batches`` naming it. Results come back as two files, successes in
``output_file_id`` and failures in ``error_file_id``, one line per request, in any order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

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
    is_int,
    shorten,
)

from ._batch_http import BatchHTTPBackend, count, timestamp, unfinished_item
from ._errors import DETAIL_LIMIT, error_for_status, redact
from ._json import encode_json, loads_json, parse_json_answer

__all__ = ["OPENAI_BATCH_LIMITS", "OpenAIBatchBackend"]

#: 50,000 requests and 200 MB per input file (counted in 10^6 bytes, the safe reading).
OPENAI_BATCH_LIMITS = ProviderBatchLimits(max_requests=50_000, max_bytes=200_000_000)

_ENDPOINT = "/v1/chat/completions"
_STATES = {
    "validating": ProviderBatchState.IN_PROGRESS,
    "in_progress": ProviderBatchState.IN_PROGRESS,
    "finalizing": ProviderBatchState.IN_PROGRESS,
    "cancelling": ProviderBatchState.CANCELLING,
    "completed": ProviderBatchState.COMPLETED,
    "expired": ProviderBatchState.EXPIRED,
    "cancelled": ProviderBatchState.CANCELLED,
    "failed": ProviderBatchState.FAILED,
}
_UNFINISHED = {"batch_expired": "expired", "batch_cancelled": "cancelled"}
_PAGE = 100


def _check_metadata(name: str, metadata: Any) -> dict[str, str]:
    """OpenAI's metadata rule (at most 16 pairs, keys 64 and values 512 characters)."""
    if not isinstance(metadata, dict) or len(metadata) > 16:
        raise LoomUsageError(f"{name}: metadata must be a dict of at most 16 str pairs")
    for key, value in metadata.items():
        if not (isinstance(key, str) and isinstance(value, str)):
            raise LoomUsageError(f"{name}: metadata keys and values must be str, got {key!r}")
        if len(key) > 64 or len(value) > 512:
            raise LoomUsageError(
                f"{name}: metadata key {key!r} is longer than 64 or its value than 512 characters"
            )
    return dict(metadata)


class OpenAIBatchBackend(BatchHTTPBackend):
    """The Batch API half of :class:`~loom_backends.OpenAIChatBackend`."""

    _BATCH_LIMITS = OPENAI_BATCH_LIMITS

    def encode_line(self, line: ProviderBatchLine) -> bytes:
        """One JSONL line (with its newline) of the input file: the online body, as sent."""
        if not isinstance(line, ProviderBatchLine):
            raise LoomUsageError(
                f"{type(self).__name__}.encode_line expects a ProviderBatchLine, got "
                f"{type(line).__name__}"
            )
        item = {
            "custom_id": line.custom_id,
            "method": "POST",
            "url": _ENDPOINT,
            "body": self._build_body(line.request),
        }
        # JSON escapes every control character: the line holds no newline of its own.
        return (encode_json(item) + "\n").encode()

    async def asubmit_batch(
        self, encoded: Sequence[bytes], *, metadata: dict[str, str]
    ) -> ProviderBatchInfo:
        """Upload the JSONL file, then create the batch (``completion_window`` 24h)."""
        name = f"{type(self).__name__}.asubmit_batch"
        tags = _check_metadata(name, metadata)
        lines = self._check_lines(encoded)
        for index, line in enumerate(lines):
            if not line.endswith(b"\n"):
                raise LoomUsageError(f"{name}: line {index} does not end with a newline")
        data = b"".join(lines)
        # httpx writes the multipart body (boundary, headers); it goes out like any call.
        url = self._api_url("/files")
        upload = httpx.Request(
            "POST",
            url,
            data={"purpose": "batch"},
            files={"file": ("loom-batch.jsonl", data, "application/jsonl")},
        )
        form = upload.read()
        status, headers, body = await self._call("POST", url, form, upload.headers["content-type"])
        if status == 404:
            raise self._no_batch_api(status, headers, body)
        self._check_status(status, headers, body, len(data))
        uploaded = parse_json_answer(status, body, headers, self._secrets)
        file_id = uploaded.get("id")
        if not isinstance(file_id, str) or not file_id:
            raise self._bad("the provider's file object has no id", uploaded)
        create: dict[str, Any] = {
            "input_file_id": file_id,
            "endpoint": _ENDPOINT,
            "completion_window": "24h",
        }
        if tags:
            create["metadata"] = tags
        answer = await self._json("POST", self._api_url("/batches"), encode_json(create).encode())
        return self._info(answer)

    def _no_batch_api(self, status: int, headers: Any, body: bytes) -> BackendError:
        error = error_for_status(
            status, body.decode("utf-8", "replace"), headers, secrets=self._secrets
        )
        message = (
            f"{error.error.message} (POST {redact(self._api_url('/files'), self._secrets)} "
            "answered 404: this server has no OpenAI Batch API; vLLM and most local servers "
            "have none)"
        )
        return BackendError(error.error.model_copy(update={"message": message}))

    async def aget_batch(self, batch_id: str) -> ProviderBatchInfo:
        """The batch now (``GET /batches/{id}``)."""
        url = self._api_url(f"/batches/{self._batch_id(batch_id)}")
        return self._info(await self._json("GET", url))

    def _list_url(self, after: str | None) -> str:
        return self._api_url("/batches", {"limit": _PAGE, "after": after})

    def _cancel_url(self, batch_id: str) -> str:
        return self._api_url(f"/batches/{self._batch_id(batch_id)}/cancel")

    async def aresults(self, batch_id: str) -> list[ProviderBatchItem]:
        """Every outcome so far: the output file's and the error file's lines, once final."""
        raw = await self._json("GET", self._api_url(f"/batches/{self._batch_id(batch_id)}"))
        info = self._info(raw)
        if not info.results_ready:
            return []
        items: list[ProviderBatchItem] = []
        for key in ("output_file_id", "error_file_id"):
            file_id = raw.get(key)
            if not isinstance(file_id, str) or not file_id:
                continue
            url = self._api_url(f"/files/{self._batch_id(file_id)}/content")
            items.extend(self._items(await self._download(url)))
        return items

    # -- reading the provider's objects -------------------------------------------------------

    def _info(self, data: dict[str, Any]) -> ProviderBatchInfo:
        batch_id = self._batch_ident(data)
        status = data.get("status")
        if not isinstance(status, str):
            raise self._bad("the provider's batch object has no status", data)
        # An unknown status is read as still running: the engine keeps polling, loses nothing.
        state = _STATES.get(status, ProviderBatchState.IN_PROGRESS)
        counts = data.get("request_counts")
        total, done, failed = (count(counts, k) for k in ("total", "completed", "failed"))
        rest = max(0, total - done - failed)
        metadata = data.get("metadata")
        input_file = data.get("input_file_id")
        return ProviderBatchInfo(
            batch_id=batch_id,
            state=state,
            provider_status=status,
            counts=ProviderBatchCounts(
                total=total,
                processing=0 if state.is_final else rest,
                succeeded=done,
                failed=failed + (rest if state is ProviderBatchState.FAILED else 0),
                expired=rest if state is ProviderBatchState.EXPIRED else 0,
                cancelled=rest if state is ProviderBatchState.CANCELLED else 0,
            ),
            input_file_id=input_file if isinstance(input_file, str) else None,
            created_at=timestamp(data.get("created_at")),
            expires_at=timestamp(data.get("expires_at")),
            metadata={
                k: v
                for k, v in (metadata if isinstance(metadata, dict) else {}).items()
                if isinstance(k, str) and isinstance(v, str)
            },
            results_ready=state.is_final and state is not ProviderBatchState.FAILED,
            error=self._failure(data) if state is ProviderBatchState.FAILED else None,
        )

    def _failure(self, data: dict[str, Any]) -> Error:
        errors = data.get("errors")
        listed = errors.get("data") if isinstance(errors, dict) else None
        said: list[str] = []
        codes: list[str] = []
        for entry in listed if isinstance(listed, list) else []:
            if isinstance(entry, dict):
                code, text, line = entry.get("code"), entry.get("message"), entry.get("line")
                codes.append(str(code))
                where = f"line {line}: " if is_int(line) else ""
                said.append(f"{where}{text or code}")
        # OpenAI fails a whole batch when the organisation's enqueued-token quota is full:
        # the same file goes through later.
        quota = any("limit" in code for code in codes if code != "too_many_requests")
        summary = "; ".join(said[:3]) + (f"; and {len(said) - 3} more" if len(said) > 3 else "")
        return Error(
            code=ErrorCode.PROVIDER_RATE_LIMITED if quota else ErrorCode.PROVIDER_BAD_REQUEST,
            message=redact(
                f"the provider failed the batch: {summary or 'no reason given'}", self._secrets
            ),
            detail=redact(shorten(encode_json(data), DETAIL_LIMIT), self._secrets),
            retryable=quota,
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
        response, error = data.get("response"), data.get("error")
        status = response.get("status_code") if isinstance(response, dict) else None
        if is_int(status) and isinstance(response, dict):
            body = response.get("body")
            if 200 <= status <= 299 and isinstance(body, dict):
                try:
                    return ProviderBatchItem(
                        custom_id=custom_id, response=self._parse_answer(body, raw, status)
                    )
                except BackendError as exc:
                    return ProviderBatchItem(custom_id=custom_id, error=exc.error)
            text = encode_json(body) if isinstance(body, dict) else str(body)
            failed = error_for_status(status, text, {}, secrets=self._secrets)
            return ProviderBatchItem(custom_id=custom_id, error=failed.error)
        code = error.get("code") if isinstance(error, dict) else None
        said = error.get("message") if isinstance(error, dict) else None
        if code in _UNFINISHED:
            return unfinished_item(custom_id, _UNFINISHED[code], None)
        problem = f"{code}: {said}" if code or said else "the line has no response and no error"
        return ProviderBatchItem(
            custom_id=custom_id,
            error=Error(
                code=ErrorCode.PROVIDER_ERROR,
                message=redact(f"the provider did not run the request: {problem}", self._secrets),
                detail=redact(shorten(raw.decode("utf-8", "replace"), DETAIL_LIMIT), self._secrets),
            ),
        )
