"""The JSON FakeLLMServer's Batch APIs answer with: the providers' own object shapes.

OpenAI: the file object, the batch object (``status`` one of validating, in_progress,
finalizing, completed, failed, expired, cancelling, cancelled; ``request_counts`` with total,
completed, failed) and the output/error JSONL files. Anthropic: the message batch object
(``processing_status`` in_progress, canceling or ended; ``request_counts`` with processing,
succeeded, errored, canceled, expired) and the results JSONL.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from ._batch_jobs import DAY, BatchBook, FakeBatch, FakeFile

__all__ = ["anthropic_batch", "anthropic_results", "openai_batch", "openai_file", "write_files"]

_EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
_CANCELLED_MESSAGE = "This request was cancelled before it could be executed."


def openai_file(item: FakeFile) -> dict[str, Any]:
    """An OpenAI file object."""
    return {
        "id": item.id,
        "object": "file",
        "bytes": len(item.data),
        "created_at": item.created_at,
        "filename": item.filename,
        "purpose": item.purpose,
        "status": "processed",
        "status_details": None,
    }


def _seconds(value: float | None) -> int | None:
    return None if value is None else int(value)


def openai_batch(batch: FakeBatch, *, validating: bool = False) -> dict[str, Any]:
    """An OpenAI batch object."""
    counts = batch.counts()
    status = batch.status
    if status == "in_progress" and validating:
        status = "validating"
    ended = _seconds(batch.ended_at)
    return {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.path,
        "errors": {"object": "list", "data": batch.errors} if batch.errors else None,
        "input_file_id": batch.input_file_id,
        "completion_window": "24h",
        "status": status,
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
        "created_at": int(batch.created_at),
        "in_progress_at": None if status in ("validating", "failed") else int(batch.created_at),
        "expires_at": int(batch.created_at) + DAY,
        "finalizing_at": ended if status in ("completed", "expired") else None,
        "completed_at": ended if status == "completed" else None,
        "failed_at": ended if status == "failed" else None,
        "expired_at": ended if status == "expired" else None,
        "cancelling_at": _seconds(batch.cancel_requested_at),
        "cancelled_at": ended if status == "cancelled" else None,
        "request_counts": {
            "total": 0 if status == "failed" else len(batch.lines),
            "completed": counts["ok"],
            "failed": counts["errored"],
        },
        "metadata": batch.metadata or None,
    }


def _line_id() -> str:
    return f"batch_req_{uuid.uuid4().hex[:24]}"


def write_files(book: BatchBook, batch: FakeBatch) -> None:
    """Write the output and error files of an ended OpenAI batch (once)."""
    if batch.output_file_id is not None or batch.error_file_id is not None:
        return
    if batch.status == "failed":
        return
    output: list[str] = []
    errors: list[str] = []
    for custom_id, outcome in batch.results():
        if outcome == "expired" or outcome == "cancelled":
            code = f"batch_{outcome}"
            message = _EXPIRED_MESSAGE if outcome == "expired" else _CANCELLED_MESSAGE
            line: dict[str, Any] = {
                "id": _line_id(),
                "custom_id": custom_id,
                "response": None,
                "error": {"code": code, "message": message},
            }
            errors.append(json.dumps(line))
            continue
        status, body = outcome
        line = {
            "id": _line_id(),
            "custom_id": custom_id,
            "response": {
                "status_code": status,
                "request_id": f"req_{uuid.uuid4().hex[:24]}",
                "body": body,
            },
            "error": None,
        }
        (output if status == 200 else errors).append(json.dumps(line))
    # Stored under the book's lock by add_file; the ids are set once, on the server's loop.
    now = batch.ended_at or 0.0
    if output:
        data = ("\n".join(output) + "\n").encode()
        batch.output_file_id = book.add_file(
            f"{batch.id}_output.jsonl", "batch_output", data, now
        ).id
    if errors:
        data = ("\n".join(errors) + "\n").encode()
        batch.error_file_id = book.add_file(f"{batch.id}_error.jsonl", "batch_output", data, now).id


def _rfc3339(value: float | None) -> str | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value, UTC).isoformat().replace("+00:00", "Z")


def anthropic_batch(batch: FakeBatch, origin: str) -> dict[str, Any]:
    """An Anthropic message batch object; ``results_url`` on this server's ``origin``."""
    counts = batch.counts()
    ended = batch.final
    status = "ended" if ended else ("canceling" if batch.status == "cancelling" else "in_progress")
    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": status,
        "request_counts": {
            "processing": counts["processing"],
            "succeeded": counts["ok"],
            "errored": counts["errored"],
            "canceled": counts["cancelled"],
            "expired": counts["expired"],
        },
        "ended_at": _rfc3339(batch.ended_at),
        "created_at": _rfc3339(batch.created_at),
        "expires_at": _rfc3339(batch.created_at + DAY),
        "archived_at": None,
        "cancel_initiated_at": _rfc3339(batch.cancel_requested_at),
        "results_url": f"{origin}/v1/messages/batches/{batch.id}/results" if ended else None,
    }


def anthropic_results(batch: FakeBatch) -> bytes:
    """The results JSONL of an ended Anthropic batch."""
    lines: list[str] = []
    for custom_id, outcome in batch.results():
        if outcome == "expired":
            result: dict[str, Any] = {"type": "expired"}
        elif outcome == "cancelled":
            result = {"type": "canceled"}
        elif outcome[0] == 200:
            result = {"type": "succeeded", "message": outcome[1]}
        else:
            error = outcome[1]
            if not isinstance(error, dict):
                error = {"type": "error", "error": {"type": "api_error", "message": str(error)}}
            result = {"type": "errored", "error": error}
        lines.append(json.dumps({"custom_id": custom_id, "result": result}))
    return ("\n".join(lines) + "\n").encode() if lines else b""
