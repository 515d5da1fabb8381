"""Backend configuration: checked at construction, keys required where they must be, URLs kept
whole (a query stays on the endpoint), secrets never shown, parameters declared per backend."""

from __future__ import annotations

import math
from typing import Any

import pytest

from loom_backends import (
    AnthropicBackend,
    CallableBackend,
    OpenAIChatBackend,
    OpenAIClientBackend,
    resolve_backend,
)
from loom_backends.testing import CONTRACT_API_KEY as API_KEY
from loom_backends.testing import FakeLLMServer
from loom_backends.testing import contract_request as chat
from loom_protocol import BackendError, LoomUsageError, is_secret_name

HTTP_BACKENDS = (OpenAIChatBackend, AnthropicBackend)
ENV = ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


# -- item 7: bad values fail at construction, naming the argument ------------------------------


@pytest.mark.parametrize("timeout", [math.nan, math.inf, 0, -1, True, "5", None])
def test_a_bad_timeout_is_refused_everywhere(timeout: object) -> None:
    message = "timeout must be a finite number of seconds > 0"
    for cls in HTTP_BACKENDS:
        with pytest.raises(LoomUsageError, match=message):
            cls("http://127.0.0.1:9/v1", timeout=timeout)  # type: ignore[arg-type]
    with pytest.raises(LoomUsageError, match=message):
        resolve_backend("m", base_url="http://127.0.0.1:9/v1", timeout=timeout)  # type: ignore[arg-type]
    # Even when an explicit backend makes it unused: a bad value is a bug either way.
    with pytest.raises(LoomUsageError, match=message):
        resolve_backend("m", backend=CallableBackend(str), timeout=timeout)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("base_url", "problem"),
    [
        (123, "base_url must be an http(s):// URL string, got int"),
        ("http://[::1", "base_url is not a valid URL"),
        ("localhost:8000/v1", "base_url must start with http:// or https://"),
        ("127.0.0.1:8000", "base_url must start with http:// or https://"),
        ("http://", "base_url has no host"),
    ],
)
def test_a_bad_base_url_is_refused(base_url: object, problem: str) -> None:
    for cls in HTTP_BACKENDS:
        with pytest.raises(LoomUsageError, match=problem.replace("(", r"\(").replace(")", r"\)")):
            cls(base_url, api_key=API_KEY)  # type: ignore[arg-type]
    with pytest.raises(LoomUsageError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        resolve_backend("m", backend=CallableBackend(str), base_url=base_url)  # type: ignore[arg-type]


def test_a_bad_base_url_from_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "localhost:11434/v1")
    with pytest.raises(LoomUsageError, match=r"OPENAI_BASE_URL \(from the environment\) must"):
        OpenAIChatBackend()
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://[::1")
    with pytest.raises(LoomUsageError, match=r"ANTHROPIC_BASE_URL \(from the environment\) is"):
        AnthropicBackend()


def test_a_non_string_key_is_refused() -> None:
    with pytest.raises(LoomUsageError, match="api_key must be a string, got int"):
        OpenAIChatBackend("http://127.0.0.1:9/v1", api_key=123)  # type: ignore[arg-type]
    with pytest.raises(LoomUsageError, match="api_key must be a string, got bytes"):
        resolve_backend("m", backend=CallableBackend(str), api_key=b"k")  # type: ignore[arg-type]


# -- item 8: no key for the official endpoints ---------------------------------------------------


@pytest.mark.parametrize(
    ("make", "variable"),
    [
        (lambda: OpenAIChatBackend(), "OPENAI_API_KEY"),
        (lambda: OpenAIChatBackend("https://api.openai.com/v1"), "OPENAI_API_KEY"),
        (lambda: OpenAIChatBackend(api_key=""), "OPENAI_API_KEY"),
        (lambda: AnthropicBackend(), "ANTHROPIC_API_KEY"),
        (lambda: AnthropicBackend("https://api.anthropic.com/v1"), "ANTHROPIC_API_KEY"),
        (lambda: resolve_backend("gpt-4o-mini"), "OPENAI_API_KEY"),
        (lambda: resolve_backend("openai/gpt-4o-mini"), "OPENAI_API_KEY"),
        (lambda: resolve_backend("claude-3-5-haiku-latest"), "ANTHROPIC_API_KEY"),
        (lambda: resolve_backend("anthropic/claude-3-5-haiku-latest"), "ANTHROPIC_API_KEY"),
    ],
)
def test_the_official_endpoint_without_a_key_is_refused(make: Any, variable: str) -> None:
    with pytest.raises(LoomUsageError, match=f"no API key .*set {variable}"):
        make()


def test_a_key_from_the_environment_or_a_credential_header_is_enough(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    assert OpenAIChatBackend().url == "https://api.openai.com/v1/chat/completions"
    assert AnthropicBackend().url == "https://api.anthropic.com/v1/messages"
    monkeypatch.delenv("OPENAI_API_KEY")
    headers = {"Authorization": f"Bearer {API_KEY}"}
    assert OpenAIChatBackend(headers=headers).url.startswith("https://api.openai.com/")


async def test_a_custom_base_url_needs_no_key(server: FakeLLMServer) -> None:
    async with OpenAIChatBackend(server.base_url) as backend:
        assert (await backend.acomplete(chat())).content
    async with AnthropicBackend(server.anthropic_base_url) as anthropic:
        assert (await anthropic.acomplete(chat())).content
    assert "authorization" not in server.requests[0].headers
    assert "x-api-key" not in server.requests[1].headers
    # An SDK client or an explicit backend brings its own credentials: not our business.
    assert resolve_backend("gpt-4o", backend=CallableBackend(str)).model == "gpt-4o"


async def test_a_custom_base_url_from_the_environment_needs_no_key(
    server: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    resolved = resolve_backend("gpt-4o-mini")
    assert (await resolved.backend.acomplete(chat())).content
    await resolved.backend.aclose()


# -- item 10: userinfo refused, a query kept on the endpoint -------------------------------------


@pytest.mark.parametrize("cls", HTTP_BACKENDS)
def test_userinfo_is_refused_without_echoing_the_password(cls: type[Any]) -> None:
    with pytest.raises(LoomUsageError, match="must not contain credentials") as info:
        cls("https://bob:PW-SECRET-1@gateway.example.com/v1", api_key=API_KEY)
    assert "PW-SECRET-1" not in str(info.value)
    assert "***" in str(info.value)


@pytest.mark.parametrize(
    ("suffix", "expected_path"),
    [("", "/v1/chat/completions"), ("/", "/v1/chat/completions")],
)
async def test_openai_keeps_the_query_on_the_endpoint(
    server: FakeLLMServer, suffix: str, expected_path: str
) -> None:
    base = f"{server.base_url}{suffix}?api-version=2024-06-01"
    backend = OpenAIChatBackend(base, api_key=API_KEY)
    assert backend.url == f"{server.base_url}/chat/completions?api-version=2024-06-01"
    assert backend.base_url == f"{server.base_url}?api-version=2024-06-01"
    await backend.acomplete(chat())
    await backend.aclose()
    seen = server.requests[0]
    assert (seen.path, seen.query) == (expected_path, "api-version=2024-06-01")
    assert seen.status == 200


@pytest.mark.parametrize("root", ["", "/v1"])
async def test_anthropic_keeps_the_query_on_the_endpoint(server: FakeLLMServer, root: str) -> None:
    backend = AnthropicBackend(f"{server.anthropic_base_url}{root}?beta=true", api_key=API_KEY)
    assert backend.url == f"{server.anthropic_base_url}/v1/messages?beta=true"
    await backend.acomplete(chat())
    await backend.aclose()
    seen = server.requests[0]
    assert (seen.path, seen.query, seen.status) == ("/v1/messages", "beta=true", 200)


async def test_the_fake_server_records_no_query_as_empty(server: FakeLLMServer) -> None:
    async with OpenAIChatBackend(server.base_url) as backend:
        await backend.acomplete(chat())
    assert server.requests[0].query == ""


# -- item 11: reprs and errors never show a secret -------------------------------------------------


def test_repr_masks_query_secrets_and_credential_headers() -> None:
    backend = OpenAIChatBackend(
        "https://r.openai.azure.com/openai/deployments/d?api-version=2024-06-01&api-key=Q-SECRET",
        api_key="K-SECRET",
        headers={"Ocp-Apim-Subscription-Key": "H-SECRET", "x-trace": "visible"},
    )
    shown = repr(backend)
    assert "SECRET" not in shown
    assert "api-version=2024-06-01" in shown
    assert "api-key=***" in shown
    assert "'x-trace': 'visible'" in shown
    anthropic = AnthropicBackend("http://127.0.0.1:9?sig=S-SECRET", api_key="K-SECRET")
    assert "SECRET" not in repr(anthropic)


async def test_query_secrets_never_reach_an_error(server: FakeLLMServer) -> None:
    # The provider echoes the whole URL it was called with, as some gateways do.
    from loom_backends.testing import FakeReply

    server.handler = lambda req: FakeReply(
        status=401, content=f"bad key for {req.path}?{req.query} (sig={req.query})"
    )
    base = f"{server.base_url}?api-version=1&api-key=QUERY-SECRET-77"
    async with OpenAIChatBackend(base, api_key="KEY-SECRET-77") as backend:
        with pytest.raises(BackendError) as info:
            await backend.acomplete(chat())
    error = info.value.error
    assert "QUERY-SECRET-77" not in error.message + (error.detail or "")
    assert "api-version=1" in error.message


# -- item 9: each backend declares its generation parameters; extra_body is merged ---------------


def test_every_built_in_backend_declares_its_parameters() -> None:
    for cls in (OpenAIChatBackend, AnthropicBackend, OpenAIClientBackend):
        known = cls.generation_params
        assert {"temperature", "max_tokens", "extra_body"} <= known
        # What Loom builds itself or cannot read is never accepted.
        assert not known & {"model", "messages", "stream", "n", "system"}
    assert {"top_k", "stop_sequences", "thinking"} <= AnthropicBackend.generation_params
    assert {"seed", "stop", "reasoning_effort"} <= OpenAIChatBackend.generation_params
    assert "response_format" not in AnthropicBackend.generation_params
    assert not hasattr(CallableBackend, "generation_params")  # the documented default rule


def test_no_declared_parameter_looks_like_a_secret() -> None:
    # The config fingerprint is computed from the masked configuration: a parameter that the
    # redaction rules took for a secret would stop changing the fingerprint.
    for cls in (OpenAIChatBackend, AnthropicBackend):
        assert [name for name in cls.generation_params if is_secret_name(name)] == []


@pytest.mark.parametrize("cls", HTTP_BACKENDS)
async def test_extra_body_is_merged_into_the_body_last(
    server: FakeLLMServer, cls: type[Any]
) -> None:
    base = server.base_url if cls is OpenAIChatBackend else server.anthropic_base_url
    params = {"top_p": 0.5, "extra_body": {"min_p": 0.1, "top_p": 0.9, "guided": {"a": [1]}}}
    async with cls(base) as backend:
        await backend.acomplete(chat(params=params))
    body = server.requests[0].body
    assert body["min_p"] == 0.1
    assert body["guided"] == {"a": [1]}
    assert body["top_p"] == 0.9
    assert "extra_body" not in body


async def test_an_sdk_client_gets_extra_body_as_its_own_argument() -> None:
    calls: list[dict[str, Any]] = []

    class SDK:
        class chat:
            class completions:
                @staticmethod
                def create(**kwargs: Any) -> Any:
                    calls.append(kwargs)
                    return {"choices": [{"message": {"content": "ok"}}]}

    backend = OpenAIClientBackend(SDK())
    await backend.acomplete(chat(params={"seed": 1, "extra_body": {"min_p": 0.1}}))
    await backend.aclose()
    assert calls[0]["extra_body"] == {"min_p": 0.1}
    assert calls[0]["seed"] == 1
    assert "min_p" not in calls[0]


@pytest.mark.parametrize("timeout", [86_400.5, 1e308])
def test_a_timeout_beyond_a_day_is_refused(timeout: float) -> None:
    # 1e308 used to overflow the timers and fail every task at its first call.
    for cls in HTTP_BACKENDS:
        with pytest.raises(LoomUsageError, match=r"timeout must be .* <= 86400"):
            cls("http://127.0.0.1:9/v1", timeout=timeout)
    assert OpenAIChatBackend("http://127.0.0.1:9/v1", timeout=86_400).url


@pytest.mark.parametrize("key", ["sk-KEY-SECRET\n", "sk-KEY\r\nX-Evil: 1", "sk\x00KEY"])
def test_a_key_with_a_line_break_is_refused_without_echoing_it(
    key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for cls in HTTP_BACKENDS:
        with pytest.raises(LoomUsageError, match="api_key contains a line break") as info:
            cls("http://127.0.0.1:9/v1", api_key=key)
        assert "KEY" not in str(info.value)
    if "\x00" not in key:  # the environment itself cannot hold a NUL
        monkeypatch.setenv("OPENAI_API_KEY", key)
        with pytest.raises(LoomUsageError, match=r"OPENAI_API_KEY \(from the environment\)"):
            OpenAIChatBackend()
    with pytest.raises(LoomUsageError, match="the value of header 'x-token' contains"):
        OpenAIChatBackend("http://127.0.0.1:9/v1", headers={"X-Token": key})


@pytest.mark.parametrize(
    ("base_url", "problem"),
    [
        ("http://h/\x00v1", "contains whitespace or a control character"),
        ("http://h\x7f/v1", "contains whitespace or a control character"),
        ("http://h\\evil/v1", "contains a backslash"),
        ("http://[::1]x/v1", "is not a valid URL"),
        ("http://h:99999/v1", "is not a valid URL"),
    ],
)
def test_urls_that_httpx_would_refuse_are_usage_errors(base_url: str, problem: str) -> None:
    # Never an httpx exception out of a constructor.
    for cls in HTTP_BACKENDS:
        with pytest.raises(LoomUsageError, match=problem):
            cls(base_url)


async def test_a_percent_encoded_query_secret_never_reaches_an_error(
    server: FakeLLMServer,
) -> None:
    from loom_backends.testing import FakeReply

    server.handler = lambda req: FakeReply(status=400, content=f"bad: {req.query}")
    base = f"{server.base_url}?api-key=Q%2BSECRET%2F77"
    async with OpenAIChatBackend(base) as backend:
        with pytest.raises(BackendError) as info:
            await backend.acomplete(chat())
    error = info.value.error
    assert "SECRET" not in error.message + (error.detail or "")
    assert "SECRET" not in repr(server.requests[0])
