"""The error table's plain functions: error_for_status and parse_retry_after."""

from __future__ import annotations

import email.utils
import json
import time

import aiohttp
import httpx
import pytest

from loom_backends import error_for_status, error_for_transport, parse_retry_after
from loom_protocol import ErrorCode


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": "1.25"}, 1.25),
        ({"RETRY-AFTER": " 4 "}, 4.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"Retry-After": "10", "retry-after-ms": "2500"}, 2.5),
        ({"Retry-After": "-5"}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "nan"}, None),
        ({"retry-after-ms": "x", "Retry-After": "2"}, 2.0),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers) == expected


def test_parse_retry_after_http_dates() -> None:
    future = email.utils.formatdate(time.time() + 60, usegmt=True)
    past = email.utils.formatdate(time.time() - 60, usegmt=True)
    wait = parse_retry_after({"Retry-After": future})
    assert wait is not None
    assert 50 <= wait <= 61
    assert parse_retry_after({"Retry-After": past}) == 0.0


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (json.dumps({"error": {"message": "openai style"}}), "openai style"),
        (json.dumps({"type": "error", "error": {"message": "anthropic style"}}), "anthropic style"),
        (json.dumps({"object": "error", "message": "vllm style"}), "vllm style"),
        (json.dumps({"detail": "fastapi style"}), "fastapi style"),
        (json.dumps({"error": "proxy style"}), "proxy style"),
    ],
)
def test_the_message_quotes_the_provider(body: str, said: str) -> None:
    error = error_for_status(400, body, {})
    assert error.error.message == f"the provider rejected the request: {said}"
    assert error.error.detail == body


def test_a_non_json_body_keeps_a_generic_message_and_a_truncated_detail() -> None:
    body = "<html>" + "x" * 10_000 + "</html>"
    error = error_for_status(502, body, {"Retry-After": "5"})
    assert error.error.message == "the provider is unavailable"
    assert error.error.detail is not None
    assert len(error.error.detail) == 4096
    assert error.error.detail.endswith("x...")
    assert error.retry_after == 5.0
    assert error.status == 502


def test_an_unknown_status_is_a_plain_provider_error() -> None:
    error = error_for_status(418, "", {"Retry-After": "5"})
    assert error.code is ErrorCode.PROVIDER_ERROR
    assert not error.retryable
    assert error.retry_after is None
    assert error.error.message == "the provider answered HTTP 418"
    assert error.error.detail is None


def test_secrets_are_blanked_out() -> None:
    body = json.dumps({"error": {"message": "Incorrect API key provided: sk-abc123456"}})
    error = error_for_status(401, body, {}, secrets=["sk-abc123456"])
    assert "sk-abc123456" not in error.error.model_dump_json()
    assert "***" in error.error.message


# -- the one transport boundary ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (aiohttp.ServerTimeoutError("read"), ErrorCode.PROVIDER_TIMEOUT),
        (TimeoutError(), ErrorCode.PROVIDER_TIMEOUT),
        (httpx.ReadTimeout("slow"), ErrorCode.PROVIDER_TIMEOUT),
        (aiohttp.ServerDisconnectedError(), ErrorCode.PROVIDER_UNAVAILABLE),
        (aiohttp.ClientPayloadError("cut"), ErrorCode.PROVIDER_UNAVAILABLE),
        (httpx.ConnectError("refused"), ErrorCode.PROVIDER_UNAVAILABLE),
        (ConnectionResetError("reset"), ErrorCode.PROVIDER_UNAVAILABLE),
        (ValueError("a bug"), ErrorCode.PROVIDER_ERROR),
    ],
)
def test_a_transport_exception_is_classified_by_its_own_type(
    exc: BaseException, code: ErrorCode
) -> None:
    # No cause chain to walk: whoever raised it (aiohttp's pool, an injected httpx transport,
    # the socket), the exception itself says what happened.
    error = error_for_transport(exc)
    assert error.code is code
    assert error.retryable is (code is not ErrorCode.PROVIDER_ERROR)
    assert error.error.detail is not None
    assert error.error.detail.startswith(f"{type(exc).__module__}.{type(exc).__qualname__}")


async def test_the_pool_raises_aiohttps_own_exception_with_no_httpx_hop(closed_port: int) -> None:
    from loom_backends._transport import BufferedAiohttpTransport

    transport = BufferedAiohttpTransport(limits=httpx.Limits(max_connections=1))
    try:
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            await transport.send_bytes(
                "POST", httpx.URL(f"http://127.0.0.1:{closed_port}/v1"), [], b"{}", {}
            )
    finally:
        await transport.aclose()
    assert error_for_transport(caught.value).code is ErrorCode.PROVIDER_UNAVAILABLE


def test_a_secret_in_a_transport_error_is_masked() -> None:
    error = error_for_transport(OSError("proxy said KEY-123456 is wrong"), secrets=["KEY-123456"])
    assert "KEY-123456" not in error.error.model_dump_json()
