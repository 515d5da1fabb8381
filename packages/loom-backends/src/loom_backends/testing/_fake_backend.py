"""FakeBackend: FakeLLMServer's answers in process, for engine tests that need no sockets."""

from __future__ import annotations

import asyncio
import threading
import time
import traceback
from dataclasses import replace
from typing import ClassVar

from loom_backends._defaults import DEFAULT_TIMEOUT
from loom_backends._errors import error_for_transport, parse_retry_after
from loom_backends._json import parse_json_answer
from loom_backends._openai import build_openai_body, parse_openai_answer
from loom_backends._params import OPENAI_CHAT_PARAMS
from loom_protocol import (
    MAX_TIMEOUT,
    ChatRequest,
    ChatResponse,
    LoomUsageError,
    check_positive_number,
)

from ._replies import (
    FakeReply,
    RecordedRequest,
    default_handler,
    handler_reply,
    reply_payload,
)
from ._server import Handler

__all__ = ["FakeBackend"]

_PATH = "/v1/chat/completions"


class FakeBackend:
    """A :class:`~loom_protocol.Backend` that answers in process, from a FakeLLMServer handler.

    It takes the same handler as :class:`FakeLLMServer` (a :class:`RecordedRequest` in, a
    ``str`` or :class:`FakeReply` out, sync or async) and goes through the same steps as
    :class:`~loom_backends.OpenAIChatBackend` talking to that server, minus the socket: the
    request becomes the OpenAI body the server would record, the reply becomes the JSON the
    server would send, and that is decoded and classified by the backends' one error table
    (so ``FakeReply(status=429, headers={"Retry-After": "2"})`` raises the same
    ``BackendError``). ``FakeReply.delay`` waits with ``asyncio.sleep``; a call slower than
    ``timeout`` fails with provider_timeout. A sync handler runs on the caller's event loop, so
    keep it quick (``time.sleep`` in it would stall the loop: return ``FakeReply(delay=...)``
    or write an async handler). Use it where the engine is under test and sockets
    are not the point; use :class:`FakeLLMServer` to test the HTTP path itself.

    It passes :class:`BackendContract` (minus the tests of what goes on the wire).

    Args:
        handler: The handler; ``None`` answers ``{"echo": <last user text>}``.
        api_key: Recorded as an ``authorization: Bearer ...`` header and, as with the real
            backends, masked out of every error and repr.
        model: The model name the answers report.
        timeout: Seconds allowed for one call.

    Attributes:
        api_key: As given; may be changed between calls.
        timeout: As given, as a float; may be changed between calls (checked again).
    """

    #: The generation parameters it accepts: those of the OpenAI-compatible backend.
    generation_params: ClassVar[frozenset[str]] = OPENAI_CHAT_PARAMS

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        api_key: str | None = None,
        model: str = "fake-model",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.handler = handler
        self.api_key = api_key
        self._model = model
        self.timeout = timeout
        self._lock = threading.Lock()
        self._records: list[RecordedRequest] = []
        self._serial = 0

    @property
    def timeout(self) -> float:
        """Seconds allowed for one call; settable at any time, checked as at construction."""
        return self._timeout

    @timeout.setter
    def timeout(self, timeout: float) -> None:
        self._timeout = check_positive_number(
            "FakeBackend: timeout", timeout, " of seconds", MAX_TIMEOUT
        )

    @property
    def handler(self) -> Handler:
        """The handler in use; settable at any time."""
        return self._handler

    @handler.setter
    def handler(self, handler: Handler | None) -> None:
        if handler is not None and not callable(handler):
            raise LoomUsageError(
                f"FakeBackend: handler must be callable, got {type(handler).__name__}"
            )
        self._handler: Handler = handler or default_handler

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received, in arrival order (errors included)."""
        with self._lock:
            return list(self._records)

    @property
    def request_count(self) -> int:
        """How many requests were received."""
        with self._lock:
            return len(self._records)

    def clear(self) -> None:
        """Forget every recorded request."""
        with self._lock:
            self._records = []

    def _record(self, record: RecordedRequest) -> list[RecordedRequest]:
        with self._lock:
            self._records.append(record)
            return self._records

    def _answered(
        self,
        records: list[RecordedRequest],
        record: RecordedRequest,
        status: int,
        headers: dict[str, str],
    ) -> None:
        with self._lock:
            # A clear() in between started a new list: the old record is gone, leave it so.
            for index in range(len(records) - 1, -1, -1):
                if records[index] is record:
                    retry_after = parse_retry_after(headers) if headers else None
                    records[index] = replace(record, status=status, retry_after=retry_after)
                    return

    async def acomplete(self, request: ChatRequest) -> ChatResponse:
        """Answer ``request`` from the handler.

        Raises:
            BackendError: As :class:`~loom_backends.OpenAIChatBackend` would for the same reply.
        """
        if not isinstance(request, ChatRequest):
            raise LoomUsageError(f"FakeBackend expects a ChatRequest, got {type(request).__name__}")
        body = build_openai_body(request)
        key = self.api_key
        headers = {"authorization": f"Bearer {key}"} if key else {}
        record = RecordedRequest(path=_PATH, headers=headers, body=body, received_at=time.time())
        records = self._record(record)
        try:
            async with asyncio.timeout(self.timeout):
                status, answer_headers, text = await self._answer(body, record)
        except TimeoutError as exc:
            raise error_for_transport(exc, secrets=(key,)) from None
        self._answered(records, record, status, answer_headers)
        content = text.encode()
        data = parse_json_answer(status, content, answer_headers, (key,))
        return parse_openai_answer(data, content, status, (key,))

    async def _answer(
        self, body: dict[str, object], record: RecordedRequest
    ) -> tuple[int, dict[str, str], str]:
        try:
            reply = await handler_reply(self._handler, record)
        except Exception as exc:
            detail = "".join(traceback.format_exception(exc))
            reply = FakeReply(f"the FakeBackend handler raised:\n{detail}", status=500)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        serial = 0
        if reply.status == 200 and reply.body is None:
            with self._lock:
                self._serial += 1
                serial = self._serial
        status, headers, text, _ = reply_payload(False, dict(body), reply, self._model, serial)
        return status, headers, text

    async def aclose(self) -> None:
        """Nothing to release (the backend stays usable)."""

    def __repr__(self) -> str:
        # Never the key: a repr ends up in logs and tracebacks.
        name = getattr(self._handler, "__qualname__", None) or type(self._handler).__name__
        key = ", api_key='***'" if self.api_key else ""
        return f"FakeBackend({name}{key})"
