"""Provider batch results and answers no honest provider sends, through an injected transport.

The fake server writes well-formed files; these tests hand the backends broken ones (a line
that is not JSON, a custom_id nobody sent, a huge line, an answer without choices, an unknown
result type), and answers that echo the API key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from loom_backends import AnthropicBackend, OpenAIChatBackend
from loom_protocol import BackendError, ErrorCode

KEY = "sk-hostile-secret-987654"

Route = Callable[[httpx.Request], httpx.Response]


def _transport(routes: dict[str, Route]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        for suffix, route in routes.items():
            if request.url.path.endswith(suffix):
                return route(request)
        return httpx.Response(404, json={"error": {"message": "no route"}})

    return httpx.MockTransport(handle)


def _json(data: Any, status: int = 200) -> Route:
    return lambda request: httpx.Response(status, json=data)


def _bytes(data: bytes) -> Route:
    return lambda request: httpx.Response(200, content=data)


def _answer(content: str, **message: Any) -> dict[str, Any]:
    return {
        "choices": [
            {
                "message": {"role": "assistant", "content": content, **message},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        "model": "m1",
    }


def _ok(custom_id: str, body: Any) -> bytes:
    line = {
        "id": "r",
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": "q", "body": body},
        "error": None,
    }
    return json.dumps(line, ensure_ascii=False).encode()


_COMPLETED = {
    "id": "batch_1",
    "object": "batch",
    "status": "completed",
    "created_at": 1_700_000_000,
    "request_counts": {"total": 6, "completed": 5, "failed": 1},
    "output_file_id": "file-out",
    "error_file_id": "file-err",
    "metadata": {"k": "v"},
}


async def test_openai_results_survive_a_hostile_output_file(
    caplog: pytest.LogCaptureFixture,
) -> None:
    huge = "x" * 5_000_000
    output = b"\n".join(
        [
            _ok("good", _answer('{"a": 1}')),
            b"this is not json {",
            _ok("", _answer("no id")),
            json.dumps({"response": None}).encode(),
            _ok("nobody-sent-this", _answer("stray")),
            _ok("huge", _answer(huge)),
            _ok("sep", _answer("line\u2028separator\u2029inside")),
            _ok("nochoice", {"object": "chat.completion", "choices": []}),
        ]
    )
    errors = b"\n".join(
        [
            json.dumps(
                {
                    "custom_id": "server",
                    "response": {
                        "status_code": 500,
                        "body": {"error": {"message": f"boom for key {KEY}"}},
                    },
                    "error": None,
                }
            ).encode(),
            json.dumps({"custom_id": "weird", "response": None, "error": {"code": "odd"}}).encode(),
            json.dumps(
                {"custom_id": "late", "response": None, "error": {"code": "batch_expired"}}
            ).encode(),
            b"",
        ]
    )
    transport = _transport(
        {
            "/batches/batch_1": _json(_COMPLETED),
            "/files/file-out/content": _bytes(output),
            "/files/file-err/content": _bytes(errors),
        }
    )
    backend = OpenAIChatBackend(
        base_url="http://127.0.0.1:9/v1", api_key=KEY, async_transport=transport
    )
    with caplog.at_level(logging.WARNING, logger="loom.backends.batch"):
        items = {item.custom_id: item for item in await backend.aresults("batch_1")}
    # Three lines name no request: skipped, each with a warning; the rest are all there.
    assert set(items) == {
        "good",
        "nobody-sent-this",
        "huge",
        "sep",
        "nochoice",
        "server",
        "weird",
        "late",
    }
    assert len([r for r in caplog.records if "skipped" in r.getMessage()]) == 3
    assert items["good"].response is not None and items["good"].response.usage is not None
    assert items["huge"].response is not None and len(items["huge"].response.content) == 5_000_000
    assert items["sep"].response is not None
    assert items["sep"].response.content == "line\u2028separator\u2029inside"
    bad = items["nochoice"].error
    assert bad is not None and bad.code is ErrorCode.PROVIDER_ERROR and not bad.retryable
    server = items["server"].error
    assert server is not None
    assert (server.code, server.retryable, server.status) == (
        ErrorCode.PROVIDER_UNAVAILABLE,
        True,
        500,
    )
    assert KEY not in server.message and KEY not in (server.detail or "")
    weird = items["weird"].error
    assert weird is not None and weird.code is ErrorCode.PROVIDER_ERROR and "odd" in weird.message
    late = items["late"].error
    assert late is not None and late.retryable and late.detail == "expired"


async def test_openai_failed_batch_reports_why_and_quota_failures_are_retryable() -> None:
    failed = {
        "id": "batch_2",
        "status": "failed",
        "errors": {
            "object": "list",
            "data": [{"code": "token_limit_exceeded", "message": "Enqueued token limit reached"}],
        },
    }
    transport = _transport({"/batches/batch_2": _json(failed)})
    backend = OpenAIChatBackend(base_url="http://127.0.0.1:9/v1", async_transport=transport)
    info = await backend.aget_batch("batch_2")
    assert info.error is not None
    assert (info.error.code, info.error.retryable) == (ErrorCode.PROVIDER_RATE_LIMITED, True)
    assert "Enqueued token limit" in info.error.message
    assert await backend.aresults("batch_2") == []


async def test_a_server_without_a_batch_api_is_named() -> None:
    transport = _transport({})  # everything 404, as a vLLM server answers /v1/files
    backend = OpenAIChatBackend(base_url="http://127.0.0.1:9/v1", async_transport=transport)
    line = b'{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{}}\n'
    with pytest.raises(BackendError, match="no OpenAI Batch API") as caught:
        await backend.asubmit_batch([line], metadata={})
    assert caught.value.error.code is ErrorCode.PROVIDER_BAD_REQUEST
    # The message names the URL, with a secret query value masked.
    keyed = OpenAIChatBackend(
        base_url=f"http://127.0.0.1:9/v1?api-version=1&api-key={KEY}", async_transport=transport
    )
    with pytest.raises(BackendError, match="no OpenAI Batch API") as caught:
        await keyed.asubmit_batch([line], metadata={})
    assert "api-version=1" in caught.value.error.message
    assert KEY not in str(caught.value.error) and KEY not in repr(keyed)


async def test_answers_that_are_not_batch_objects_are_provider_errors() -> None:
    transport = _transport(
        {
            "/batches/nobody": _json({"object": "batch"}),
            "/batches": _json(
                {"data": [{"id": "b", "status": "completed"}], "has_more": True, "last_id": None}
            ),
            "/messages/batches/x": _json(["not", "an", "object"]),
        }
    )
    openai = OpenAIChatBackend(base_url="http://127.0.0.1:9/v1", async_transport=transport)
    with pytest.raises(BackendError, match="has no id") as caught:
        await openai.aget_batch("nobody")
    assert caught.value.error.code is ErrorCode.PROVIDER_ERROR
    with pytest.raises(BackendError, match="repeats its cursor"):
        await openai.alist_batches(created_after=datetime(2020, 1, 1, tzinfo=UTC))
    claude = AnthropicBackend(base_url="http://127.0.0.1:9", async_transport=transport)
    with pytest.raises(BackendError, match="not a JSON object"):
        await claude.aget_batch("x")


async def test_anthropic_results_survive_hostile_lines(caplog: pytest.LogCaptureFixture) -> None:
    ended = {
        "id": "msgbatch_1",
        "type": "message_batch",
        "processing_status": "ended",
        "request_counts": {
            "processing": 0,
            "succeeded": 2,
            "errored": 3,
            "canceled": 1,
            "expired": 1,
        },
        "created_at": "2026-01-02T03:04:05.123456Z",
        "cancel_initiated_at": None,
    }

    def result(custom_id: str, value: dict[str, Any]) -> bytes:
        return json.dumps({"custom_id": custom_id, "result": value}).encode()

    message = {
        "content": [
            {"type": "thinking", "thinking": "hmm"},
            {"type": "text", "text": '{"ok": true}'},
        ],
        "stop_reason": "max_tokens",
        "usage": {"input_tokens": 4, "output_tokens": 2, "cache_read_input_tokens": 10},
    }

    def errored(kind: str) -> dict[str, Any]:
        return {
            "type": "errored",
            "error": {"type": "error", "error": {"type": kind, "message": f"{kind} {KEY}"}},
        }

    lines = [
        result("ok", {"type": "succeeded", "message": message}),
        result("bad", errored("invalid_request_error")),
        result("busy", errored("overloaded_error")),
        result("alien", errored("martian_error")),
        result("gone", {"type": "expired"}),
        result("stop", {"type": "canceled"}),
        result("what", {"type": "teleported"}),
        result("nomsg", {"type": "succeeded"}),
        b"{broken",
        json.dumps({"custom_id": 7, "result": {"type": "expired"}}).encode(),
    ]
    transport = _transport(
        {
            "/v1/messages/batches/msgbatch_1": _json(ended),
            "/v1/messages/batches/msgbatch_1/results": _bytes(b"\n".join(lines) + b"\n"),
        }
    )
    backend = AnthropicBackend(
        base_url="http://127.0.0.1:9", api_key=KEY, async_transport=transport
    )
    info = await backend.aget_batch("msgbatch_1")
    assert info.state.value == "expired" and info.results_ready
    assert info.counts.total == 7 and info.created_at is not None
    with caplog.at_level(logging.WARNING, logger="loom.backends.batch"):
        items = {item.custom_id: item for item in await backend.aresults("msgbatch_1")}
    assert len([r for r in caplog.records if "skipped" in r.getMessage()]) == 2
    ok = items["ok"].response
    assert ok is not None
    assert (ok.content, ok.reasoning, ok.finish_reason) == ('{"ok": true}', "hmm", "length")
    assert ok.usage is not None and ok.usage.prompt_tokens == 14
    codes = {k: (v.error.code, v.error.retryable) for k, v in items.items() if v.error is not None}
    assert codes["bad"] == (ErrorCode.PROVIDER_BAD_REQUEST, False)
    assert codes["busy"] == (ErrorCode.PROVIDER_UNAVAILABLE, True)
    assert codes["alien"] == (ErrorCode.PROVIDER_ERROR, False)
    assert codes["gone"] == (ErrorCode.PROVIDER_UNAVAILABLE, True)
    assert codes["stop"] == (ErrorCode.CANCELLED, True)
    assert codes["what"] == (ErrorCode.PROVIDER_ERROR, False)
    assert codes["nomsg"] == (ErrorCode.PROVIDER_ERROR, False)
    for item in items.values():
        if item.error is not None:
            assert KEY not in item.error.message and KEY not in (item.error.detail or "")


async def test_transport_failures_go_through_the_one_error_boundary() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"refused, key was {KEY}")

    backend = AnthropicBackend(
        base_url="http://127.0.0.1:9", api_key=KEY, async_transport=httpx.MockTransport(refuse)
    )
    with pytest.raises(BackendError) as caught:
        await backend.aget_batch("b")
    error = caught.value.error
    assert (error.code, error.retryable) == (ErrorCode.PROVIDER_UNAVAILABLE, True)
    assert KEY not in error.message and KEY not in (error.detail or "")
