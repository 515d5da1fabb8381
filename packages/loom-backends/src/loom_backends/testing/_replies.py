"""What FakeLLMServer receives and answers: recorded requests, scripted replies, fault plans."""

from __future__ import annotations

import inspect
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from loom_protocol import (
    LoomUsageError,
    check_non_negative_number,
    check_number,
    is_int,
    redact_url,
)

__all__ = [
    "FakeReply",
    "FaultPlan",
    "RecordedRequest",
    "handler_reply",
    "render_answer",
    "reply_payload",
]

_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "proxy-authorization"})


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        ]
    return []


@dataclass(frozen=True)
class RecordedRequest:
    """One request FakeLLMServer received.

    Attributes:
        path: The URL path, e.g. ``/v1/chat/completions`` or ``/v1/messages``.
        headers: The request headers, keys in lower case.
        body: The decoded JSON body (``{}`` when it was not a JSON object).
        received_at: ``time.time()`` when it arrived.
        status: The HTTP status the server answered; 0 while the answer is pending.
        retry_after: The wait, in seconds, that the answer asked for (``Retry-After`` or
            ``retry-after-ms``), when it asked for one: lets a test check that a client
            never came back before that.
        query: The URL's query string as sent (not decoded), without the ``?`` (``""`` when
            there was none).
        method: The HTTP method (``GET`` for the Batch APIs' reads; chat requests are POSTs).
    """

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    received_at: float
    status: int = 0
    retry_after: float | None = None
    query: str = ""
    method: str = "POST"

    @property
    def messages(self) -> list[dict[str, Any]]:
        """``body["messages"]`` (an empty list when absent)."""
        messages = self.body.get("messages")
        return messages if isinstance(messages, list) else []

    @property
    def last_user_text(self) -> str:
        """The text of the last user message, its text parts joined with ``"\\n"``."""
        for message in reversed(self.messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return "\n".join(_texts(message.get("content")))
        return ""

    @property
    def system_text(self) -> str | None:
        """The system prompt: Anthropic's ``system`` field or the OpenAI system messages."""
        system = self.body.get("system")
        if system is not None:
            return "\n".join(_texts(system))
        parts = [
            "\n".join(_texts(m.get("content")))
            for m in self.messages
            if isinstance(m, dict) and m.get("role") == "system"
        ]
        return "\n".join(parts) if parts else None

    def __repr__(self) -> str:
        # Credentials sent by the client under test stay out of reprs and logs.
        headers = {k: ("***" if k in _SECRET_HEADERS else v) for k, v in self.headers.items()}
        path = redact_url(f"{self.path}?{self.query}") if self.query else self.path
        return (
            f"RecordedRequest(path={path!r}, status={self.status}, headers={headers!r}, "
            f"body={self.body!r})"
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (used by the admin endpoint in process mode)."""
        return {
            "path": self.path,
            "headers": self.headers,
            "body": self.body,
            "received_at": self.received_at,
            "status": self.status,
            "retry_after": self.retry_after,
            "query": self.query,
            "method": self.method,
        }


@dataclass(frozen=True)
class FakeReply:
    """A scripted answer, returned by a FakeLLMServer handler.

    A handler may also return a plain ``str``, which means ``FakeReply(content=that_str)``.

    Attributes:
        content: The answer text; ``None`` answers ``"content": null``.
        status: The HTTP status; a non-200 status without ``body`` answers the provider's
            error shape with ``content`` as the message.
        body: Replaces the whole response body: a dict is sent as JSON, a str as it is.
        headers: Extra response headers (e.g. ``Retry-After``).
        delay: Seconds to wait before answering, on top of the server's latency.
        reasoning_content: Sent as ``reasoning_content`` (OpenAI) or a thinking block (Anthropic).
        finish_reason: ``"stop"`` or ``"length"`` (Anthropic: ``end_turn`` / ``max_tokens``).
        usage: Token counts; by default about a quarter of the prompt and answer lengths.
    """

    content: str | None = ""
    status: int = 200
    body: dict[str, Any] | str | None = None
    headers: Mapping[str, str] | None = field(default=None)
    delay: float = 0.0
    reasoning_content: str | None = None
    finish_reason: str = "stop"
    usage: dict[str, int] | None = None

    def __post_init__(self) -> None:
        if not is_int(self.status) or not 100 <= self.status <= 599:
            raise LoomUsageError(f"FakeReply.status must be an HTTP status, got {self.status!r}")
        check_non_negative_number("FakeReply.delay", self.delay, " of seconds")
        if self.content is not None and not isinstance(self.content, str):
            raise LoomUsageError(
                f"FakeReply.content must be a str or None, got {type(self.content).__name__}"
            )


@dataclass(frozen=True)
class FaultPlan:
    """Faults FakeLLMServer injects, decided per request by a seeded random generator.

    Attributes:
        rate_429: Share of requests answered 429 with a ``Retry-After`` (and ``retry-after-ms``)
            drawn uniformly from ``retry_after``.
        retry_after: The (low, high) range of that wait, in seconds.
        rate_500: Share answered 500.
        rate_503: Share answered 503.
        rate_broken_json: Share of answers whose text has a closing bracket or quote cut.
        rate_truncated: Share of answers cut in half with ``finish_reason="length"``.
        think_prefix: Prefix every answer with ``<think>…</think>``.
        reasoning_content: Send this as ``reasoning_content`` with every answer.
    """

    rate_429: float = 0.0
    retry_after: tuple[float, float] = (1.0, 3.0)
    rate_500: float = 0.0
    rate_503: float = 0.0
    rate_broken_json: float = 0.0
    rate_truncated: float = 0.0
    think_prefix: bool = False
    reasoning_content: str | None = None

    def __post_init__(self) -> None:
        for name in ("rate_429", "rate_500", "rate_503", "rate_broken_json", "rate_truncated"):
            check_number(f"FaultPlan.{name}", getattr(self, name), 0.0, 1.0)
        if self.rate_429 + self.rate_500 + self.rate_503 > 1.0 + 1e-9:
            raise LoomUsageError("FaultPlan: rate_429 + rate_500 + rate_503 must not exceed 1")
        low, high = self.retry_after
        for bound in (low, high):
            check_non_negative_number("FaultPlan.retry_after", bound, " of seconds")
        if low > high:
            raise LoomUsageError(
                f"FaultPlan.retry_after must be (low, high) with 0 <= low <= high, got "
                f"{self.retry_after!r}"
            )


def break_json(text: str) -> str:
    """``text`` with its last closing bracket or quote removed (so it no longer parses)."""
    for index in range(len(text) - 1, -1, -1):
        if text[index] in '}]"':
            return text[:index] + text[index + 1 :]
    return "{" + text


def _tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def _prompt_chars(body: dict[str, Any]) -> int:
    total = sum(len(t) for t in _texts(body.get("system")))
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            total += sum(len(t) for t in _texts(message.get("content")))
    return total


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
}


def render_error(anthropic: bool, status: int, message: str) -> dict[str, Any]:
    """The provider's error body shape for ``status``."""
    kind = _ERROR_TYPES.get(status, "fake_error")
    if anthropic:
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"message": message, "type": kind, "code": status}}


def render_answer(
    anthropic: bool, request_body: dict[str, Any], reply: FakeReply, model: str, serial: int
) -> dict[str, Any]:
    """The JSON answer for a 200 ``reply``, in OpenAI or Anthropic shape."""
    content = reply.content
    usage = reply.usage or {
        "prompt_tokens": math.ceil(_prompt_chars(request_body) / 4),
        "completion_tokens": _tokens(content or ""),
    }
    prompt = int(usage.get("prompt_tokens", usage.get("input_tokens", 0)))
    completion = int(usage.get("completion_tokens", usage.get("output_tokens", 0)))
    if anthropic:
        blocks: list[dict[str, Any]] = []
        if reply.reasoning_content is not None:
            blocks.append(
                {"type": "thinking", "thinking": reply.reasoning_content, "signature": "fake"}
            )
        if content is not None:
            blocks.append({"type": "text", "text": content})
        stop = {"stop": "end_turn", "length": "max_tokens"}.get(
            reply.finish_reason, reply.finish_reason
        )
        return {
            "id": f"msg_fake_{serial}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": blocks,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": completion},
        }
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reply.reasoning_content is not None:
        message["reasoning_content"] = reply.reasoning_content
    return {
        "id": f"chatcmpl-fake-{serial}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


async def handler_reply(
    handler: Callable[[RecordedRequest], Any], record: RecordedRequest
) -> FakeReply:
    """Call a FakeLLMServer-style handler; its answer as a FakeReply (it may raise)."""
    reply = handler(record)
    if inspect.isawaitable(reply):
        reply = await reply
    if isinstance(reply, str):
        return FakeReply(content=reply)
    if not isinstance(reply, FakeReply):
        raise TypeError(
            f"a FakeLLMServer handler must return str or FakeReply, got {type(reply).__name__}"
        )
    return reply


def reply_payload(
    anthropic: bool, request_body: dict[str, Any], reply: FakeReply, model: str, serial: int
) -> tuple[int, dict[str, str], str, str]:
    """What to send for ``reply``: the status, headers, body text and content type."""
    headers = dict(reply.headers or {})
    if reply.body is not None:
        if isinstance(reply.body, str):
            return reply.status, headers, reply.body, "text/plain"
        return reply.status, headers, json.dumps(reply.body), "application/json"
    if reply.status != 200:
        message = reply.content or f"fake HTTP {reply.status}"
        error = render_error(anthropic, reply.status, message)
        return reply.status, headers, json.dumps(error), "application/json"
    answer = render_answer(anthropic, request_body, reply, model, serial)
    return 200, headers, json.dumps(answer), "application/json"


def default_handler(request: RecordedRequest) -> str:
    """Answer the JSON text ``{"echo": <last user text>}``."""
    return json.dumps({"echo": request.last_user_text}, ensure_ascii=False)
