"""The conformance suite every HTTP-speaking backend passes.

A subclass says how to build its backend against a local port (``make_backend``), whether
it is driven sync or async (``mode``) and which wire format the server sees
(``anthropic``). Every test runs against a real :class:`FakeLLMServer` on 127.0.0.1.
"""

from __future__ import annotations

import base64
import email.utils
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import pytest

from loom_backends.testing import FakeLLMServer, FakeReply, RecordedRequest
from loom_protocol import (
    Backend,
    BackendError,
    ChatRequest,
    ChatResponse,
    ErrorCode,
    ImagePart,
    Message,
    TextPart,
)

#: A recognisable fake key: no test may find it in an error, a repr or a log record.
API_KEY = "sk-loom-test-SECRET-0123456789abcdef"

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode()


def chat(text: str = "hello", **kwargs: Any) -> ChatRequest:
    return ChatRequest(
        model="test-model",
        messages=[Message(role="system", content="be brief"), Message(role="user", content=text)],
        **kwargs,
    )


ERROR_ROWS = [
    (401, ErrorCode.PROVIDER_AUTH, False),
    (403, ErrorCode.PROVIDER_AUTH, False),
    (400, ErrorCode.PROVIDER_BAD_REQUEST, False),
    (404, ErrorCode.PROVIDER_BAD_REQUEST, False),
    (422, ErrorCode.PROVIDER_BAD_REQUEST, False),
    (408, ErrorCode.PROVIDER_RATE_LIMITED, True),
    (409, ErrorCode.PROVIDER_RATE_LIMITED, True),
    (429, ErrorCode.PROVIDER_RATE_LIMITED, True),
    (500, ErrorCode.PROVIDER_UNAVAILABLE, True),
    (502, ErrorCode.PROVIDER_UNAVAILABLE, True),
    (503, ErrorCode.PROVIDER_UNAVAILABLE, True),
    (402, ErrorCode.PROVIDER_ERROR, False),
]


class BackendContract:
    """Subclass per backend and implement :meth:`make_backend`."""

    #: "sync" drives ``complete``, "async" drives ``acomplete``.
    mode: ClassVar[str] = "async"
    #: The server sees Anthropic's Messages format instead of OpenAI's.
    anthropic: ClassVar[bool] = False

    def make_backend(self, port: int, *, api_key: str | None, timeout: float) -> Backend:
        raise NotImplementedError

    # -- helpers ------------------------------------------------------------------------------

    @asynccontextmanager
    async def built(
        self, port: int, *, api_key: str | None = API_KEY, timeout: float = 10.0
    ) -> AsyncIterator[Backend]:
        backend = self.make_backend(port, api_key=api_key, timeout=timeout)
        try:
            yield backend
        finally:
            await backend.aclose()
            backend.close()

    async def call(self, backend: Backend, request: ChatRequest) -> ChatResponse:
        if self.mode == "sync":
            return backend.complete(request)
        return await backend.acomplete(request)

    async def ask(self, server: FakeLLMServer, request: ChatRequest | None = None) -> ChatResponse:
        async with self.built(server.port) as backend:
            return await self.call(backend, request or chat())

    async def fail(
        self, port: int, request: ChatRequest | None = None, *, timeout: float = 10.0
    ) -> BackendError:
        async with self.built(port, timeout=timeout) as backend:
            with pytest.raises(BackendError) as caught:
                await self.call(backend, request or chat())
        return caught.value

    def only_request(self, server: FakeLLMServer) -> RecordedRequest:
        requests = server.requests
        assert len(requests) == 1, requests
        return requests[0]

    # -- answers ------------------------------------------------------------------------------

    async def test_text_answer(self, server: FakeLLMServer) -> None:
        server.handler = lambda req: f"answer to {req.last_user_text}"
        response = await self.ask(server, chat("what?"))
        assert response.content == "answer to what?"
        assert response.finish_reason == "stop"
        assert response.model == "fake-model"
        seen = self.only_request(server)
        assert seen.path == ("/v1/messages" if self.anthropic else "/v1/chat/completions")
        assert seen.body["model"] == "test-model"
        assert seen.system_text == "be brief"
        assert seen.status == 200

    async def test_the_key_is_sent_in_the_provider_header(self, server: FakeLLMServer) -> None:
        await self.ask(server)
        headers = self.only_request(server).headers
        if self.anthropic:
            assert headers["x-api-key"] == API_KEY
        else:
            assert headers["authorization"] == f"Bearer {API_KEY}"

    async def test_generation_parameters_reach_the_server(self, server: FakeLLMServer) -> None:
        await self.ask(server, chat(temperature=0.25, max_tokens=77, params={"top_p": 0.5}))
        body = self.only_request(server).body
        assert body["temperature"] == 0.25
        assert body["max_tokens"] == 77
        assert body["top_p"] == 0.5

    async def test_reasoning(self, server: FakeLLMServer) -> None:
        server.handler = lambda req: FakeReply("42", reasoning_content="six times seven")
        response = await self.ask(server)
        assert response.content == "42"
        assert response.reasoning == "six times seven"

    async def test_usage(self, server: FakeLLMServer) -> None:
        server.handler = lambda req: FakeReply(
            "ok", usage={"prompt_tokens": 11, "completion_tokens": 7}
        )
        response = await self.ask(server)
        assert response.usage is not None
        assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (11, 7)
        assert response.usage.total_tokens == 18

    async def test_length_finish_reason(self, server: FakeLLMServer) -> None:
        server.handler = lambda req: FakeReply("cut", finish_reason="length")
        assert (await self.ask(server)).finish_reason == "length"

    async def test_content_null_is_an_empty_answer(self, server: FakeLLMServer) -> None:
        server.handler = lambda req: FakeReply(None)
        response = await self.ask(server)
        assert response.content == ""

    async def test_image_parts_reach_the_server_in_the_provider_format(
        self, server: FakeLLMServer
    ) -> None:
        data_url = f"data:image/png;base64,{PNG}"
        request = ChatRequest(
            model="test-model",
            messages=[
                Message(
                    role="user",
                    content=[
                        TextPart(text="describe"),
                        ImagePart(url=data_url),
                        ImagePart(url="https://example.com/cat.jpg"),
                    ],
                )
            ],
        )
        await self.ask(server, request)
        seen = self.only_request(server)
        parts = seen.messages[0]["content"]
        assert parts[0] == {"type": "text", "text": "describe"}
        if self.anthropic:
            assert parts[1] == {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": PNG},
            }
            assert parts[2] == {
                "type": "image",
                "source": {"type": "url", "url": "https://example.com/cat.jpg"},
            }
        else:
            assert parts[1] == {"type": "image_url", "image_url": {"url": data_url}}
            assert parts[2] == {
                "type": "image_url",
                "image_url": {"url": "https://example.com/cat.jpg"},
            }
        assert seen.last_user_text == "describe"

    async def test_json_schema_response_format(self, server: FakeLLMServer) -> None:
        schema = {"type": "object", "properties": {"name": {"type": "string"}}}
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": "Person", "schema": schema},
        }
        await self.ask(server, chat(response_format=response_format))
        seen = self.only_request(server)
        if self.anthropic:
            assert "response_format" not in seen.body
            assert seen.system_text is not None
            assert seen.system_text.startswith("be brief")
            assert '"properties": {"name": {"type": "string"}}' in seen.system_text
        else:
            assert seen.body["response_format"] == response_format

    async def test_huge_response(self, server: FakeLLMServer) -> None:
        big = "0123456789abcdef" * (5 * 1024 * 1024 // 16)
        server.handler = lambda req: big
        response = await self.ask(server)
        assert len(response.content) == len(big)
        assert response.content == big

    # -- the error table ----------------------------------------------------------------------

    @pytest.mark.parametrize(("status", "code", "retryable"), ERROR_ROWS)
    async def test_error_table(
        self, server: FakeLLMServer, status: int, code: ErrorCode, retryable: bool
    ) -> None:
        server.handler = lambda req: FakeReply(f"provider says {status}", status=status)
        error = await self.fail(server.port)
        assert error.code is code
        assert error.retryable is retryable
        assert error.status == status
        assert f"provider says {status}" in error.error.message
        assert error.error.detail is not None
        assert f"provider says {status}" in error.error.detail

    async def test_retry_after_seconds(self, server: FakeLLMServer) -> None:
        server.handler = lambda req: FakeReply(status=429, headers={"Retry-After": "7"})
        error = await self.fail(server.port)
        assert error.retry_after == 7.0

    async def test_retry_after_http_date(self, server: FakeLLMServer) -> None:
        when = email.utils.formatdate(time.time() + 30, usegmt=True)
        server.handler = lambda req: FakeReply(status=429, headers={"Retry-After": when})
        error = await self.fail(server.port)
        assert error.retry_after is not None
        assert 20.0 <= error.retry_after <= 31.0

    async def test_retry_after_ms_takes_precedence(self, server: FakeLLMServer) -> None:
        server.handler = lambda req: FakeReply(
            status=429, headers={"Retry-After": "9", "retry-after-ms": "1500"}
        )
        error = await self.fail(server.port)
        assert error.retry_after == 1.5

    async def test_timeout(self, server: FakeLLMServer) -> None:
        server.handler = lambda req: FakeReply("late", delay=5.0)
        started = time.monotonic()
        error = await self.fail(server.port, timeout=0.5)
        assert error.code is ErrorCode.PROVIDER_TIMEOUT
        assert error.retryable
        assert time.monotonic() - started < 4.5

    async def test_refused_connection(self, closed_port: int) -> None:
        error = await self.fail(closed_port)
        assert error.code is ErrorCode.PROVIDER_UNAVAILABLE
        assert error.retryable

    async def test_non_json_200_body(self, server: FakeLLMServer) -> None:
        server.handler = lambda req: FakeReply(body="<html>502 Bad Gateway</html>")
        error = await self.fail(server.port)
        assert error.code is ErrorCode.PROVIDER_ERROR
        assert error.retryable
        assert error.status == 200

    async def test_json_200_without_an_answer(self, server: FakeLLMServer) -> None:
        server.handler = lambda req: FakeReply(body={"unexpected": True})
        error = await self.fail(server.port)
        assert error.code is ErrorCode.PROVIDER_ERROR
        assert not error.retryable

    # -- credentials --------------------------------------------------------------------------

    async def test_the_key_never_shows(
        self, server: FakeLLMServer, closed_port: int, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG)
        # A provider that echoes the rejected key back, in its message and its body.
        server.handler = lambda req: FakeReply(f"invalid key {API_KEY}", status=401)
        errors = [await self.fail(server.port), await self.fail(closed_port)]
        server.handler = lambda req: FakeReply(body=f"<p>{API_KEY}</p>")
        errors.append(await self.fail(server.port))
        server.handler = lambda req: FakeReply("late", delay=3.0)
        errors.append(await self.fail(server.port, timeout=0.3))
        for error in errors:
            for text in (str(error), repr(error), str(error.error), error.error.model_dump_json()):
                assert API_KEY not in text
        async with self.built(server.port) as backend:
            assert API_KEY not in repr(backend)
            assert API_KEY not in str(backend)
        for record in caplog.records:
            assert API_KEY not in record.getMessage()
