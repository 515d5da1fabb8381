"""What FakeLLMServer's Batch APIs read: request bodies, input files, cursors, checked as the
real APIs check them (an OpenAI file that fails validation fails its batch; an Anthropic create
that does not validate is a 400)."""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from ._batch_jobs import BatchPlan, FakeBatch

__all__ = [
    "after_cursor",
    "anthropic_lines",
    "good_metadata",
    "json_body",
    "loads",
    "openai_lines",
    "origin",
]

_CUSTOM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def loads(raw: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


async def json_body(request: web.Request) -> dict[str, Any] | None:
    return loads(await request.read())


def origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def after_cursor(batches: list[FakeBatch], cursor: str | None) -> list[FakeBatch]:
    if not cursor:
        return batches
    for index, batch in enumerate(batches):
        if batch.id == cursor:
            return batches[index + 1 :]
    return []


def good_metadata(metadata: Any) -> bool:
    return (
        isinstance(metadata, dict)
        and len(metadata) <= 16
        and all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512
            for k, v in metadata.items()
        )
    )


def openai_lines(
    data: bytes, endpoint: str, plan: BatchPlan
) -> tuple[list[tuple[str, dict[str, Any]]], list[dict[str, Any]]]:
    """The requests of an input file, or the validation errors that fail the batch."""
    lines: list[tuple[str, dict[str, Any]]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    models: set[Any] = set()

    def error(code: str, message: str, line: int | None) -> None:
        errors.append({"code": code, "message": message, "param": None, "line": line})

    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        item = loads(raw)
        if item is None:
            error("invalid_json_line", "This line is not parseable as valid JSON.", number)
            continue
        custom_id, body = item.get("custom_id"), item.get("body")
        if not isinstance(custom_id, str) or not custom_id:
            error("missing_custom_id", "The custom_id field is missing.", number)
        elif custom_id in seen:
            error("duplicate_custom_id", f"The custom_id {custom_id!r} is not unique.", number)
        elif item.get("method") != "POST" or item.get("url") != endpoint:
            error("invalid_url", f"The url must be {endpoint!r} and the method POST.", number)
        elif not isinstance(body, dict):
            error("invalid_request", "The body field must be a JSON object.", number)
        else:
            seen.add(custom_id)
            models.add(body.get("model"))
            lines.append((custom_id, body))
    most, _ = plan.limits("openai")
    if not lines and not errors:
        error("empty_file", "The input file has no requests.", None)
    if len(lines) > most:
        error("too_many_requests", f"The file has {len(lines)} requests; at most {most}.", None)
    if len(models) > 1:
        error("mixed_models", "Every request of a batch must use the same model.", None)
    return lines, errors


def anthropic_lines(
    requests: Any, most: int
) -> tuple[list[tuple[str, dict[str, Any]]], str | None]:
    if not isinstance(requests, list) or not requests:
        return [], "requests: must be a non-empty list"
    if len(requests) > most:
        return [], f"requests: {len(requests)} requests, at most {most} per batch"
    lines: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for index, item in enumerate(requests):
        custom_id = item.get("custom_id") if isinstance(item, dict) else None
        params = item.get("params") if isinstance(item, dict) else None
        if not isinstance(custom_id, str) or not _CUSTOM_ID.match(custom_id):
            return [], f"requests.{index}.custom_id: must match ^[a-zA-Z0-9_-]{{1,64}}$"
        if custom_id in seen:
            return [], f"requests.{index}.custom_id: {custom_id!r} is not unique"
        if not isinstance(params, dict):
            return [], f"requests.{index}.params: must be an object"
        seen.add(custom_id)
        lines.append((custom_id, params))
    return lines, None
