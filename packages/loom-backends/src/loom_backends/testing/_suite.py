"""BackendContract: the conformance suite every Loom backend passes, shipped for third parties.

A backend registered under the ``loom.backends`` entry-point group subclasses it in its own
tests, as langchain's partner packages do with its standard tests (see docs/testing.md). The
suite needs pytest (``loom-backends[testing]``) and pytest-asyncio (``asyncio_mode = "auto"``,
or mark the class) and brings its own fixtures: a :class:`FakeLLMServer` per test class and a
closed local port.
"""

from __future__ import annotations

import base64
import email.utils
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import ClassVar

import pytest

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

from ._batch_suite import ProviderBatchContract
from ._contract import CONTRACT_API_KEY, contract_request
from ._replies import FakeReply, RecordedRequest
from ._server import FakeLLMServer

__all__ = ["CONTRACT_API_KEY", "ERROR_ROWS", "BackendContract", "contract_request"]

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 16).decode()


#: The error table every backend follows: (status, code, retryable).
ERROR_ROWS = [
    (401, ErrorCode.PROVIDER_AUTH, False),
    (403, ErrorCode.PROVIDER_AUTH, False),
    (400, ErrorCode.PROVIDER_BAD_REQUEST, False),
    (404, ErrorCode.PROVIDER_BAD_REQUEST, False),
    (413, ErrorCode.PROVIDER_BAD_REQUEST, False),
    (422, ErrorCode.PROVIDER_BAD_REQUEST, False),
    (408, ErrorCode.PROVIDER_RATE_LIMITED, True),
    (409, ErrorCode.PROVIDER_RATE_LIMITED, True),
    (429, ErrorCode.PROVIDER_RATE_LIMITED, True),
    (500, ErrorCode.PROVIDER_UNAVAILABLE, True),
    (502, ErrorCode.PROVIDER_UNAVAILABLE, True),
    (503, ErrorCode.PROVIDER_UNAVAILABLE, True),
    (402, ErrorCode.PROVIDER_ERROR, False),
]


class BackendContract(ProviderBatchContract):
    """Subclass per backend, name the subclass ``Test...`` and implement :meth:`make_backend`.

    Every test builds the backend against a :class:`FakeLLMServer` (or a closed port), drives
    ``acomplete`` and closes it with ``aclose``: answers, generation parameters, images,
    JSON formats, a 5 MB answer, the whole error table, ``Retry-After``, timeouts, refused
    connections and the rule that a credential never shows in an error, a repr or a log.
    A backend that implements :class:`~loom_protocol.ProviderBatchBackend` also goes through
    the Batch API checks of :class:`ProviderBatchContract` (skipped for the others).
    """

    #: The wire format the server sees: ``"openai"`` (``/v1/chat/completions``) or
    #: ``"anthropic"`` (``/v1/messages``).
    wire_format: ClassVar[str] = "openai"
    #: ``False`` for a backend that answers without a socket (:class:`FakeBackend`): the test
    #: of a refused connection is skipped.
    sends_http: ClassVar[bool] = True

    def make_backend(self, port: int, *, api_key: str | None, timeout: float) -> Backend:
        """Build the backend under test, talking to ``http://127.0.0.1:<port>``.

        Args:
            port: The server's port (or a closed one).
            api_key: The key to send (``CONTRACT_API_KEY``, which must never show anywhere).
            timeout: Seconds allowed per call.
        """
        raise NotImplementedError

    # -- fixtures -----------------------------------------------------------------------------

    @pytest.fixture(scope="class")
    @classmethod
    def contract_server(cls) -> Iterator[FakeLLMServer]:
        """One server per test class (starting one per test adds up over the error table)."""
        with FakeLLMServer() as server:
            yield server

    @pytest.fixture
    def server(self, contract_server: FakeLLMServer) -> Iterator[FakeLLMServer]:
        """The class's server with the echo handler and an empty record."""
        contract_server.handler = None
        contract_server.clear()
        yield contract_server
        contract_server.handler = None

    @pytest.fixture
    def closed_port(self) -> Iterator[int]:
        """A local port nothing listens on: bound, never listening, for the test's length, so
        that no other process (a parallel test run) can take it meanwhile."""
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            yield int(sock.getsockname()[1])

    # -- helpers ------------------------------------------------------------------------------

    @property
    def anthropic(self) -> bool:
        """Whether the server sees Anthropic's Messages format."""
        return self.wire_format == "anthropic"

    def needs_http(self) -> None:
        """Skip the running test for a backend without a socket."""
        if not self.sends_http:
            pytest.skip("the backend sends no HTTP request")

    @asynccontextmanager
    async def built(
        self,
        port: int,
        *,
        api_key: str | None = CONTRACT_API_KEY,
        timeout: float = 10.0,  # noqa: ASYNC109 - the backend's own
    ) -> AsyncIterator[Backend]:
        """The backend from :meth:`make_backend`, closed with ``aclose`` afterwards."""
        backend = self.make_backend(port, api_key=api_key, timeout=timeout)
        try:
            yield backend
        finally:
            await backend.aclose()

    async def ask(self, server: FakeLLMServer, request: ChatRequest | None = None) -> ChatResponse:
        """One call through a fresh backend; its answer."""
        async with self.built(server.port) as backend:
            return await backend.acomplete(request or contract_request())

    async def fail(
        self,
        port: int,
        request: ChatRequest | None = None,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - the backend's own
    ) -> BackendError:
        """One call that must raise BackendError; the error."""
        async with self.built(port, timeout=timeout) as backend:
            with pytest.raises(BackendError) as caught:
                await backend.acomplete(request or contract_request())
        return caught.value

    def only_request(self, server: FakeLLMServer) -> RecordedRequest:
        """The one request the server received."""
        requests = server.requests
        assert len(requests) == 1, requests
        return requests[0]

    # -- answers ------------------------------------------------------------------------------

    async def test_text_answer(self, server: FakeLLMServer) -> None:
        server.handler = lambda req: f"answer to {req.last_user_text}"
        response = await self.ask(server, contract_request("what?"))
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
            assert headers["x-api-key"] == CONTRACT_API_KEY
        else:
            assert headers["authorization"] == f"Bearer {CONTRACT_API_KEY}"

    async def test_generation_parameters_reach_the_server(self, server: FakeLLMServer) -> None:
        await self.ask(
            server, contract_request(temperature=0.25, max_tokens=77, params={"top_p": 0.5})
        )
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
        await self.ask(server, contract_request(response_format=response_format))
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
        self.needs_http()
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
        server.handler = lambda req: FakeReply(f"invalid key {CONTRACT_API_KEY}", status=401)
        errors = [await self.fail(server.port)]
        if self.sends_http:
            errors.append(await self.fail(closed_port))
        server.handler = lambda req: FakeReply(body=f"<p>{CONTRACT_API_KEY}</p>")
        errors.append(await self.fail(server.port))
        server.handler = lambda req: FakeReply("late", delay=3.0)
        errors.append(await self.fail(server.port, timeout=0.3))
        for error in errors:
            for text in (str(error), repr(error), str(error.error), error.error.model_dump_json()):
                assert CONTRACT_API_KEY not in text
        async with self.built(server.port) as backend:
            assert CONTRACT_API_KEY not in repr(backend)
            assert CONTRACT_API_KEY not in str(backend)
        for record in caplog.records:
            assert CONTRACT_API_KEY not in record.getMessage()
