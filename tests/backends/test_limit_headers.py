"""The providers' rate-limit headers: parsed once, hostile values ignored, carried to the engine."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

import httpx
import pytest

from loom_backends import (
    AnthropicBackend,
    OpenAIChatBackend,
    error_for_status,
    parse_rate_limit_headers,
)
from loom_backends._limits import MAX_COUNT, parse_duration
from loom_backends.testing import FakeLLMServer, ServerLimits
from loom_protocol import (
    BackendError,
    ChatRequest,
    Error,
    ErrorCode,
    Message,
    RateLimitInfo,
    RateLimitWindow,
)

NOW = 1_800_000_000.0


def _request(model: str = "fake-model") -> ChatRequest:
    return ChatRequest(model=model, messages=[Message(role="user", content="hello there")])


def _at(seconds: float) -> str:
    return datetime.fromtimestamp(NOW + seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("12ms", 0.012),
        ("1m30s", 90.0),
        ("6m0s", 360.0),
        ("0s", 0.0),
        ("1.5s", 1.5),
        ("2h", 7200.0),
        ("1h2m3s", 3723.0),
        ("7", 7.0),
        (" 250ms ", 0.25),
        ("1M30S", 90.0),
    ],
)
def test_openai_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "soon",
        "-1s",
        "-5",
        "1m-3s",
        "nan",
        "inf",
        "1e400",
        "3d",
        "99999h",
        "1s" * 40,
        "ms",
        "s1",
    ],
)
def test_hostile_durations_are_ignored(text: str) -> None:
    assert parse_duration(text) is None


def test_openai_headers() -> None:
    info = parse_rate_limit_headers(
        {
            "X-RateLimit-Limit-Requests": "600",
            "x-ratelimit-remaining-requests": "599",
            "x-ratelimit-reset-requests": "100ms",
            "x-ratelimit-limit-tokens": "150000",
            "x-ratelimit-remaining-tokens": "149984",
            "x-ratelimit-reset-tokens": "6m0s",
        }
    )
    assert info == RateLimitInfo(
        requests=RateLimitWindow(limit=600, remaining=599, reset_s=0.1),
        tokens=RateLimitWindow(limit=150000, remaining=149984, reset_s=360.0),
    )


def test_anthropic_headers() -> None:
    headers = {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": _at(1.2),
        "anthropic-ratelimit-tokens-limit": "90000",
        "anthropic-ratelimit-tokens-remaining": "89000",
        "anthropic-ratelimit-tokens-reset": _at(-5),  # in the past: full now
        "anthropic-ratelimit-input-tokens-limit": "80000",
        "anthropic-ratelimit-input-tokens-remaining": "79500",
        "anthropic-ratelimit-input-tokens-reset": "2027-03-01T00:00:00+00:00",
        "anthropic-ratelimit-output-tokens-limit": "16000",
        "anthropic-ratelimit-output-tokens-remaining": "15900",
        "retry-after": "3",
    }
    info = parse_rate_limit_headers(headers, now=NOW)
    assert info is not None
    assert info.requests == RateLimitWindow(limit=50, remaining=49, reset_s=1.0)  # whole seconds
    assert info.tokens == RateLimitWindow(limit=90000, remaining=89000, reset_s=0.0)
    assert info.input_tokens is not None and info.input_tokens.limit == 80000
    assert info.input_tokens.reset_s is None  # more than two days away: not believed
    assert info.output_tokens == RateLimitWindow(limit=16000, remaining=15900, reset_s=None)


def test_no_headers_no_info() -> None:
    assert parse_rate_limit_headers({}) is None
    assert (
        parse_rate_limit_headers({"content-type": "application/json", "retry-after": "2"}) is None
    )
    assert parse_rate_limit_headers(httpx.Headers({"Server": "vllm"})) is None


@pytest.mark.parametrize(
    "value",
    ["", "lots", "-1", "-0.5", "1e30", str(MAX_COUNT + 1), "nan", "inf", "9" * 5000, "\x00"],
)
def test_hostile_counts_are_ignored(value: str) -> None:
    info = parse_rate_limit_headers(
        {"x-ratelimit-limit-requests": value, "x-ratelimit-remaining-requests": value}
    )
    assert info is None  # neither parsed: the dimension is absent, nothing raises
    mixed = parse_rate_limit_headers(
        {"x-ratelimit-limit-requests": "600", "x-ratelimit-remaining-requests": value}
    )
    assert mixed == RateLimitInfo(requests=RateLimitWindow(limit=600))


@pytest.mark.parametrize(
    "reset",
    [
        "yesterday",
        "2026-13-45T99:00:00Z",
        "2026-12-01T10:00:00",
        "9999-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "x" * 200,
    ],
)
def test_hostile_anthropic_resets_are_ignored(reset: str) -> None:
    info = parse_rate_limit_headers(
        {
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "10",
            "anthropic-ratelimit-requests-reset": reset,
        },
        now=NOW,
    )
    assert info is not None and info.requests is not None
    assert info.requests.remaining == 10
    assert info.requests.reset_s is None or info.requests.reset_s == 0.0


def test_remaining_above_limit_is_capped() -> None:
    info = parse_rate_limit_headers(
        {"x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "5000"}
    )
    assert info == RateLimitInfo(requests=RateLimitWindow(limit=10, remaining=10))


def test_odd_header_objects_never_raise() -> None:
    class Broken(dict[str, str]):
        def get(self, key: str, default: object = None) -> str:  # type: ignore[override]
            raise RuntimeError("boom")

    assert parse_rate_limit_headers(Broken()) is None
    assert parse_rate_limit_headers({"x-ratelimit-limit-requests": 600}) is None  # type: ignore[dict-item]


def test_backend_error_keeps_its_rate_limit_through_pickle() -> None:
    info = RateLimitInfo(requests=RateLimitWindow(limit=60, remaining=0, reset_s=1.0))
    error = BackendError(
        Error(code=ErrorCode.PROVIDER_RATE_LIMITED, message="slow down", retryable=True),
        retry_after=1.0,
        rate_limit=info,
    )
    copy = pickle.loads(pickle.dumps(error))
    assert copy.rate_limit == info and copy.retry_after == 1.0


async def test_openai_backend_reads_the_headers_of_answers_and_refusals() -> None:
    limits = ServerLimits(rpm=120, headers="openai")  # a bucket of 2 requests
    with FakeLLMServer(limits=limits) as server:
        backend = OpenAIChatBackend(base_url=server.base_url, api_key="sk-test")
        try:
            first = await backend.acomplete(_request())
            assert first.rate_limit is not None and first.rate_limit.requests is not None
            assert first.rate_limit.requests.limit == 120
            assert first.rate_limit.requests.remaining == 1
            await backend.acomplete(_request())
            with pytest.raises(BackendError) as caught:
                await backend.acomplete(_request())
        finally:
            await backend.aclose()
    assert caught.value.code is ErrorCode.PROVIDER_RATE_LIMITED
    assert caught.value.rate_limit is not None and caught.value.rate_limit.requests is not None
    assert caught.value.rate_limit.requests.remaining == 0
    assert caught.value.retry_after is not None and caught.value.retry_after >= 1


async def test_anthropic_backend_reads_the_headers() -> None:
    limits = ServerLimits(rpm=600, tpm=60_000, headers="anthropic")
    with FakeLLMServer(limits=limits) as server:
        backend = AnthropicBackend(base_url=server.anthropic_base_url, api_key="sk-ant-test")
        try:
            answer = await backend.acomplete(_request("claude-test"))
        finally:
            await backend.aclose()
    info = answer.rate_limit
    assert info is not None and info.requests is not None and info.tokens is not None
    assert (info.requests.limit, info.requests.remaining) == (600, 9)
    assert info.tokens.limit == 60_000 and info.tokens.remaining is not None
    assert info.tokens.remaining < 1000  # a bucket of one second's worth, minus this prompt


async def test_no_headers_no_rate_limit() -> None:
    with FakeLLMServer() as server:
        backend = OpenAIChatBackend(base_url=server.base_url, api_key="sk-test")
        try:
            answer = await backend.acomplete(_request())
        finally:
            await backend.aclose()
    assert answer.rate_limit is None


def test_a_status_error_carries_the_headers_whoever_builds_it() -> None:
    # error_for_status is the one table for HTTP backends and SDK clients' exceptions alike.
    error = error_for_status(
        429,
        '{"error": {"message": "slow down"}}',
        {"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "0"},
        secrets=["sk-secret"],
    )
    assert error.rate_limit == RateLimitInfo(requests=RateLimitWindow(limit=60, remaining=0))
    assert error_for_status(500, "", {}).rate_limit is None
