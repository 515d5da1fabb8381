"""The shipped conformance suite, run on OpenAIChatBackend and AnthropicBackend."""

from __future__ import annotations

from typing import ClassVar

import httpx
import pytest

from loom_backends import AnthropicBackend, OpenAIChatBackend
from loom_backends.testing import CONTRACT_API_KEY as API_KEY
from loom_backends.testing import BackendContract, FakeLLMServer
from loom_backends.testing import contract_request as chat
from loom_protocol import Backend, BackendError, ErrorCode, LoomUsageError


class TestOpenAI(BackendContract):
    def make_backend(self, port: int, *, api_key: str | None, timeout: float) -> Backend:
        return OpenAIChatBackend(f"http://127.0.0.1:{port}/v1", api_key, timeout=timeout)


class TestAnthropic(BackendContract):
    wire_format: ClassVar[str] = "anthropic"

    def make_backend(self, port: int, *, api_key: str | None, timeout: float) -> Backend:
        return AnthropicBackend(f"http://127.0.0.1:{port}", api_key, timeout=timeout)


# -- behaviour specific to one backend ---------------------------------------------------------


async def test_openai_without_a_key_sends_no_authorization(
    server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    async with OpenAIChatBackend(server.base_url) as backend:
        await backend.acomplete(chat())
    assert "authorization" not in server.requests[0].headers


async def test_openai_reads_its_environment(
    server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url + "/")
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    async with OpenAIChatBackend() as backend:
        assert backend.url == f"{server.base_url}/chat/completions"
        assert (await backend.acomplete(chat())).content == '{"echo": "hello"}'
    assert server.requests[0].headers["authorization"] == f"Bearer {API_KEY}"


def test_openai_defaults_to_the_openai_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    assert OpenAIChatBackend().url == "https://api.openai.com/v1/chat/completions"


async def test_anthropic_reads_its_environment(
    server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.anthropic_base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    async with AnthropicBackend(default_max_tokens=99) as backend:
        await backend.acomplete(chat())
    seen = server.requests[0]
    assert seen.headers["x-api-key"] == API_KEY
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.body["max_tokens"] == 99
    assert seen.body["system"] == "be brief"
    assert [m["role"] for m in seen.messages] == ["user"]


def test_anthropic_accepts_a_base_url_ending_in_v1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    assert AnthropicBackend().url == "https://api.anthropic.com/v1/messages"
    assert AnthropicBackend("http://h/v1").url == "http://h/v1/messages"


async def test_anthropic_json_object_format_becomes_an_instruction(
    server: FakeLLMServer,
) -> None:
    async with AnthropicBackend(server.anthropic_base_url) as backend:
        await backend.acomplete(chat(response_format={"type": "json_object"}))
    system = server.requests[0].system_text
    assert system is not None
    assert system.startswith("be brief\n\n")
    assert "JSON object" in system


async def test_anthropic_percent_encoded_data_url_is_sent_as_base64(server: FakeLLMServer) -> None:
    from loom_protocol import ChatRequest, ImagePart, Message

    request = ChatRequest(
        model="m",
        messages=[Message(role="user", content=[ImagePart(url="data:image/svg+xml,%3Csvg%2F%3E")])],
    )
    async with AnthropicBackend(server.anthropic_base_url) as backend:
        await backend.acomplete(request)
    source = server.requests[0].messages[0]["content"][0]["source"]
    assert source == {"type": "base64", "media_type": "image/svg+xml", "data": "PHN2Zy8+"}


async def test_anthropic_malformed_data_url_is_a_bad_request(server: FakeLLMServer) -> None:
    from loom_protocol import ChatRequest, ImagePart, Message

    request = ChatRequest(
        model="m", messages=[Message(role="user", content=[ImagePart(url="data:image/png")])]
    )
    backend = AnthropicBackend(server.anthropic_base_url)
    async with backend:
        with pytest.raises(BackendError) as e:
            await backend.acomplete(request)
    assert e.value.code is ErrorCode.PROVIDER_BAD_REQUEST
    assert "separating" in e.value.error.message
    assert server.request_count == 0


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"base_url": "ftp://x"}, "base_url must start with http"),
        ({"timeout": 0}, "timeout must be a finite number of seconds > 0"),
        ({"timeout": "5"}, "timeout must be a finite number of seconds > 0"),
        ({"max_connections": 0}, "max_connections must be an int >= 1"),
        ({"max_connections": 2.5}, "max_connections must be an int"),
    ],
)
def test_bad_configuration_is_refused_at_once(kwargs: dict[str, object], problem: str) -> None:
    for cls in (OpenAIChatBackend, AnthropicBackend):
        with pytest.raises(LoomUsageError, match=problem):
            cls(api_key=API_KEY, **kwargs)  # type: ignore[arg-type]


def test_anthropic_default_max_tokens_must_be_positive() -> None:
    with pytest.raises(LoomUsageError, match="default_max_tokens must be an int >= 1"):
        AnthropicBackend(api_key=API_KEY, default_max_tokens=0)


async def test_a_non_request_is_a_usage_error(server: FakeLLMServer) -> None:
    async with OpenAIChatBackend(server.base_url) as backend:
        with pytest.raises(LoomUsageError, match="dict"):
            await backend.acomplete({"model": "m"})  # type: ignore[arg-type]


async def test_injected_async_transport_is_used() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            429, headers={"retry-after": "2"}, json={"error": {"message": "slow down"}}
        )

    backend = OpenAIChatBackend(
        "http://mock.invalid/v1", async_transport=httpx.MockTransport(handler)
    )
    async with backend:
        with pytest.raises(BackendError) as caught:
            await backend.acomplete(chat())
    assert caught.value.code is ErrorCode.PROVIDER_RATE_LIMITED
    assert caught.value.retry_after == 2.0
    assert "slow down" in caught.value.error.message


async def test_custom_headers_are_sent_and_secret_ones_redacted(server: FakeLLMServer) -> None:
    from loom_backends.testing import FakeReply

    server.handler = lambda req: FakeReply(f"bad {req.headers['api-key']}", status=401)
    backend = OpenAIChatBackend(server.base_url, headers={"api-key": "azure-secret-value"})
    async with backend:
        with pytest.raises(BackendError) as caught:
            await backend.acomplete(chat())
    assert server.requests[0].headers["api-key"] == "azure-secret-value"
    assert "azure-secret-value" not in str(caught.value.error.model_dump())


async def test_the_backend_reopens_after_aclose(server: FakeLLMServer) -> None:
    backend = OpenAIChatBackend(server.base_url)
    await backend.acomplete(chat())
    await backend.aclose()
    await backend.aclose()
    assert (await backend.acomplete(chat())).content == '{"echo": "hello"}'
    await backend.aclose()


def test_the_backends_are_async_only() -> None:
    # Protocol 2.0: no synchronous half, and no second (sync) HTTP client to configure.
    for cls in (OpenAIChatBackend, AnthropicBackend):
        assert not hasattr(cls, "complete")
        assert not hasattr(cls, "close")
        with pytest.raises(TypeError, match="transport"):
            cls("http://h/v1", transport=httpx.MockTransport(lambda r: httpx.Response(200)))  # type: ignore[call-arg]
