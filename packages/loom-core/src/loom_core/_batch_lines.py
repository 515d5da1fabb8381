"""The requests of provider batches: built as online, named, and split to the provider's limits.

A request in a provider batch is exactly the request an online call would send: the same
:class:`~._request.RequestBuilder` renders it, and a re-ask carries the earlier answers and
their feedback as :meth:`~._reask.AnswerReader.feedback` builds them online. Each request is
named by a ``custom_id`` that embeds its batch's submission token (``lb<16 hex>-<6 digits>``),
so an answer always tells which submission it belongs to.

Requests are split into provider batches by what the provider counts: the encoded bytes of
each line (:meth:`ProviderBatchBackend.encode_line`) and the number of requests, one model per
batch, filling each batch before starting the next.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loom_protocol import (
    ChatRequest,
    ChatResponse,
    Error,
    ProviderBatchBackend,
    ProviderBatchLine,
)
from loom_store import NewProviderBatch, ProviderItem

from ._task import TaskRunner

__all__ = [
    "TOKEN_KEY",
    "Entry",
    "Split",
    "build_request",
    "custom_id",
    "history_of",
    "new_token",
    "split_entries",
    "token_of",
]

#: The metadata key that carries a batch's submission token (providers that keep metadata).
TOKEN_KEY = "loom_token"


def new_token() -> str:
    """A new submission token: unique, and short enough for a custom_id."""
    return "lb" + secrets.token_hex(8)


def custom_id(token: str, n: int) -> str:
    """The ``custom_id`` of request ``n`` of the batch ``token`` (fixed width: the size of a
    line does not depend on its position)."""
    return f"{token}-{n:06d}"


def token_of(cid: str) -> str:
    """The submission token embedded in a ``custom_id`` (``""`` when there is none)."""
    token, sep, _ = cid.rpartition("-")
    return token if sep else ""


def history_of(item: ProviderItem) -> list[tuple[str, Error]]:
    """The earlier unusable answers of ``item`` and their errors, oldest first."""
    return [(answer, Error.model_validate(error)) for answer, error in json.loads(item.history)]


async def build_request(runner: TaskRunner, item: ProviderItem) -> ChatRequest:
    """The request of ``item``: its input rendered as online, then each earlier answer and
    its feedback (a re-ask), as the online path builds them.

    Raises:
        TemplateRenderError: A template fails for the input.
        ImageError: An image of the input cannot be used.
    """
    data: dict[str, Any] = json.loads(item.input)
    messages, images = runner.requests.messages(data)
    if images:
        messages = await runner.requests.add_images(messages, images)
    for answer, error in history_of(item):
        messages = runner.reader.feedback(messages, ChatResponse(content=answer), error)
    return runner.requests.request(messages)


@dataclass(frozen=True, slots=True)
class Entry:
    """A request to place in a provider batch (its ``custom_id`` is given by the split)."""

    item: ProviderItem
    request: ChatRequest


@dataclass(slots=True)
class Split:
    """Requests split into provider batches.

    Attributes:
        batches: The batches to write as ``pending``.
        encoded: Each batch's encoded lines by token, in item order (what is submitted).
        too_large: Entries whose one line exceeds the provider's bytes per batch, with the size.
    """

    batches: list[NewProviderBatch] = dataclasses.field(default_factory=list)
    encoded: dict[str, list[bytes]] = dataclasses.field(default_factory=dict)
    too_large: list[tuple[Entry, int]] = dataclasses.field(default_factory=list)


def split_entries(backend: ProviderBatchBackend, entries: Sequence[Entry], round_: int) -> Split:
    """Split ``entries`` into provider batches within ``backend.batch_limits``: one model per
    batch, at most ``max_requests`` lines and ``max_bytes`` encoded bytes each."""
    limits = backend.batch_limits
    split = Split()
    by_model: dict[str, list[Entry]] = {}
    for entry in entries:
        by_model.setdefault(entry.request.model, []).append(entry)
    for model, group in by_model.items():
        token, size = new_token(), 0
        items: list[ProviderItem] = []
        lines: list[bytes] = []
        for entry in group:
            line = _encode(backend, token, len(items), entry)
            if len(line) > limits.max_bytes:
                split.too_large.append((entry, len(line)))
                continue
            if items and (len(items) >= limits.max_requests or size + len(line) > limits.max_bytes):
                _close(split, token, round_, model, items, lines)
                token, items, lines, size = new_token(), [], [], 0
                line = _encode(backend, token, 0, entry)
            items.append(dataclasses.replace(entry.item, custom_id=custom_id(token, len(items))))
            lines.append(line)
            size += len(line)
        if items:
            _close(split, token, round_, model, items, lines)
    return split


def _encode(backend: ProviderBatchBackend, token: str, n: int, entry: Entry) -> bytes:
    line = ProviderBatchLine(custom_id=custom_id(token, n), request=entry.request)
    return backend.encode_line(line)


def _close(
    split: Split,
    token: str,
    round_: int,
    model: str,
    items: list[ProviderItem],
    lines: list[bytes],
) -> None:
    split.batches.append(NewProviderBatch(token, round_, model, items))
    split.encoded[token] = lines
