"""OpenAIChatBackend and AnthropicBackend as ProviderBatchBackends, against the real fake."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from loom_backends import (
    ANTHROPIC_BATCH_LIMITS,
    OPENAI_BATCH_LIMITS,
    AnthropicBackend,
    OpenAIChatBackend,
)
from loom_backends._batch_http import BatchHTTPBackend
from loom_backends.testing import BatchPlan, FakeLLMServer, FakeReply, RecordedRequest
from loom_protocol import (
    BackendError,
    ChatRequest,
    ErrorCode,
    LoomUsageError,
    ProviderBatchBackend,
    ProviderBatchLimits,
    ProviderBatchLine,
    ProviderBatchState,
)

KEY = "sk-batch-secret-123456"


def _handler(request: RecordedRequest) -> str | FakeReply:
    text = request.last_user_text
    if text == "bad":
        return FakeReply(status=400, content="bad input")
    if text == "long":
        return FakeReply(content='{"cut": tr', finish_reason="length")
    if text == "think":
        return FakeReply(content='{"a": 1}', reasoning_content="pondering")
    return json.dumps({"echo": text})


@pytest.fixture(scope="module")
def shared() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(_handler) as server:
        yield server


@pytest.fixture
def server(shared: FakeLLMServer) -> Iterator[FakeLLMServer]:
    shared.batch_plan = BatchPlan()
    shared.clear()
    yield shared
    shared.batch_plan = BatchPlan()


@pytest.fixture(params=["openai", "anthropic"])
async def backend(
    request: pytest.FixtureRequest, server: FakeLLMServer
) -> AsyncIterator[BatchHTTPBackend]:
    made: BatchHTTPBackend
    if request.param == "openai":
        made = OpenAIChatBackend(base_url=server.base_url, api_key=KEY)
    else:
        made = AnthropicBackend(base_url=server.anthropic_base_url, api_key=KEY)
    async with made:
        yield made


def _line(custom_id: str, text: str, **extra: Any) -> ProviderBatchLine:
    request = ChatRequest(model="m1", messages=[{"role": "user", "content": text}], **extra)
    return ProviderBatchLine(custom_id=custom_id, request=request)


def _encode(backend: BatchHTTPBackend, texts: list[str]) -> list[bytes]:
    assert isinstance(backend, ProviderBatchBackend)
    return [backend.encode_line(_line(f"c{i}", text)) for i, text in enumerate(texts)]


def _online_path(backend: BatchHTTPBackend) -> str:
    return "/v1/chat/completions" if isinstance(backend, OpenAIChatBackend) else "/v1/messages"


def test_both_backends_are_provider_batch_backends_with_the_real_limits() -> None:
    openai = OpenAIChatBackend(base_url="http://127.0.0.1:9/v1")
    claude = AnthropicBackend(base_url="http://127.0.0.1:9")
    assert isinstance(openai, ProviderBatchBackend)
    assert isinstance(claude, ProviderBatchBackend)
    assert openai.batch_limits == OPENAI_BATCH_LIMITS
    assert (OPENAI_BATCH_LIMITS.max_requests, OPENAI_BATCH_LIMITS.max_bytes) == (
        50_000,
        200_000_000,
    )
    assert claude.batch_limits == ANTHROPIC_BATCH_LIMITS
    assert ANTHROPIC_BATCH_LIMITS.max_requests == 100_000
    # What wraps the lines fits in 256 MB even with 100,000 of them.
    wrapper = len(b'{"requests":[]}') + ANTHROPIC_BATCH_LIMITS.max_requests - 1
    assert ANTHROPIC_BATCH_LIMITS.max_bytes + wrapper <= 256_000_000
    small = ProviderBatchLimits(max_requests=2, max_bytes=100)
    assert (
        OpenAIChatBackend(base_url="http://127.0.0.1:9/v1", batch_limits=small).batch_limits
        == small
    )
    with pytest.raises(LoomUsageError, match="batch_limits must be a ProviderBatchLimits"):
        AnthropicBackend(base_url="http://127.0.0.1:9", batch_limits=5)  # type: ignore[arg-type]


async def test_encode_line_carries_exactly_the_online_body(
    backend: BatchHTTPBackend, server: FakeLLMServer
) -> None:
    line = _line(
        "x-1",
        "héllo\u2028world\n",
        temperature=0.5,
        max_tokens=7,
        response_format={"type": "json_object"},
    )
    await backend.acomplete(line.request)
    online = server.requests[-1].body
    encoded = backend.encode_line(line)
    item = json.loads(encoded)
    assert item["custom_id"] == "x-1"
    if isinstance(backend, OpenAIChatBackend):
        assert encoded.endswith(b"\n") and encoded.count(b"\n") == 1
        assert (item["method"], item["url"]) == ("POST", "/v1/chat/completions")
        assert item["body"] == online
    else:
        assert item["params"] == online
    with pytest.raises(LoomUsageError, match="expects a ProviderBatchLine"):
        backend.encode_line(line.request)  # type: ignore[arg-type]


async def test_submit_poll_and_read_every_outcome(
    backend: BatchHTTPBackend, server: FakeLLMServer
) -> None:
    texts = ["a", "bad", "long", "think", "e"]
    before = datetime.now(UTC) - timedelta(seconds=1)
    info = await backend.asubmit_batch(_encode(backend, texts), metadata={"loom_job": "j1"})
    assert info.state is ProviderBatchState.IN_PROGRESS
    assert info.created_at is not None and info.created_at >= before
    paths = [r.path for r in server.requests]
    if isinstance(backend, OpenAIChatBackend):
        assert paths == ["/v1/files", "/v1/batches"]
        assert info.provider_status == "validating"
        assert info.metadata == {"loom_job": "j1"}
        assert info.input_file_id is not None
    else:
        assert paths == ["/v1/messages/batches"]
        assert info.provider_status == "in_progress"
        assert info.counts.processing == 5
    assert _online_path(backend) not in paths  # nothing went online
    done = await backend.aget_batch(info.batch_id)
    assert done.state is ProviderBatchState.COMPLETED
    assert done.results_ready
    assert (done.counts.total, done.counts.succeeded, done.counts.failed) == (5, 4, 1)
    items = {item.custom_id: item for item in await backend.aresults(info.batch_id)}
    assert set(items) == {"c0", "c1", "c2", "c3", "c4"}
    first = items["c0"].response
    assert first is not None and json.loads(first.content) == {"echo": "a"}
    assert first.usage is not None and first.usage.total_tokens > 0
    bad = items["c1"].error
    assert bad is not None and items["c1"].response is None
    assert (bad.code, bad.retryable, bad.status) == (ErrorCode.PROVIDER_BAD_REQUEST, False, 400)
    assert "bad input" in bad.message
    cut = items["c2"].response
    assert cut is not None and cut.finish_reason == "length"  # truncation is visible
    thought = items["c3"].response
    assert thought is not None and thought.reasoning == "pondering"
    assert json.loads(thought.content) == {"a": 1}


async def test_counts_move_while_the_batch_runs(
    backend: BatchHTTPBackend, server: FakeLLMServer
) -> None:
    server.batch_plan = BatchPlan(complete_after=1.2)
    info = await backend.asubmit_batch(_encode(backend, [f"t{i}" for i in range(6)]), metadata={})
    await asyncio.sleep(0.5)
    running = await backend.aget_batch(info.batch_id)
    assert running.state is ProviderBatchState.IN_PROGRESS
    assert 0 < running.counts.succeeded < 6
    assert running.counts.processing == 6 - running.counts.succeeded
    assert await backend.aresults(info.batch_id) == []  # nothing to read before the end
    await asyncio.sleep(1.0)
    done = await backend.aget_batch(info.batch_id)
    assert done.state is ProviderBatchState.COMPLETED
    assert len(await backend.aresults(info.batch_id)) == 6


async def test_a_batch_that_expires_part_way_keeps_what_finished(
    backend: BatchHTTPBackend, server: FakeLLMServer
) -> None:
    server.batch_plan = BatchPlan(expire_after_fraction=0.6, shuffle=True)
    info = await backend.asubmit_batch(_encode(backend, [f"t{i}" for i in range(10)]), metadata={})
    ended = await backend.aget_batch(info.batch_id)
    assert ended.state is ProviderBatchState.EXPIRED
    assert (ended.counts.succeeded, ended.counts.expired, ended.counts.processing) == (6, 4, 0)
    items = await backend.aresults(info.batch_id)
    assert sorted(i.custom_id for i in items) == sorted(f"c{i}" for i in range(10))
    answered = [i for i in items if i.response is not None]
    assert len(answered) == 6
    for item in answered:
        assert json.loads(item.response.content)["echo"] == "t" + item.custom_id[1:]  # type: ignore[union-attr]
    expired = [i.error for i in items if i.error is not None]
    assert len(expired) == 4
    assert all(e.retryable and e.detail == "expired" for e in expired)


async def test_cancel_then_read_the_cancelled_requests(
    backend: BatchHTTPBackend, server: FakeLLMServer
) -> None:
    server.batch_plan = BatchPlan(complete_after=3600)
    info = await backend.asubmit_batch(_encode(backend, ["a", "b", "c"]), metadata={})
    cancelling = await backend.acancel_batch(info.batch_id)
    assert cancelling.state is ProviderBatchState.CANCELLING
    cancelled = await backend.aget_batch(info.batch_id)
    assert cancelled.state is ProviderBatchState.CANCELLED
    assert cancelled.counts.cancelled == 3
    items = await backend.aresults(info.batch_id)
    assert len(items) == 3
    for item in items:
        assert item.error is not None
        assert (item.error.code, item.error.retryable, item.error.detail) == (
            ErrorCode.CANCELLED,
            True,
            "cancelled",
        )
    # Cancelling again, or cancelling a batch that already completed, is answered with the
    # batch as it is (a race with the provider, not a mistake).
    assert (await backend.acancel_batch(info.batch_id)).state.is_final
    server.batch_plan = BatchPlan()
    done = await backend.asubmit_batch(_encode(backend, ["a"]), metadata={})
    assert (await backend.aget_batch(done.batch_id)).state is ProviderBatchState.COMPLETED
    assert (await backend.acancel_batch(done.batch_id)).state is ProviderBatchState.COMPLETED


async def test_list_follows_every_page_newest_first(
    backend: BatchHTTPBackend, server: FakeLLMServer
) -> None:
    server.batch_plan = BatchPlan(complete_after=3600)
    start = datetime.now(UTC)
    made = [
        (await backend.asubmit_batch(_encode(backend, ["x"]), metadata={})).batch_id
        for _ in range(103)
    ]
    listed = await backend.alist_batches(created_after=start - timedelta(seconds=1))
    ids = [info.batch_id for info in listed]
    assert set(made) <= set(ids)
    assert ids.index(made[-1]) < ids.index(made[0])  # newest first
    list_calls = [r for r in server.requests if r.path.endswith("batches") and r.status == 200]
    assert len([r for r in list_calls if "limit=" in r.query]) >= 2  # more than one page
    later = await backend.alist_batches(created_after=datetime.now(UTC) + timedelta(hours=1))
    assert later == []
    with pytest.raises(LoomUsageError, match="aware datetime"):
        await backend.alist_batches(created_after=datetime.now())


async def test_polling_through_5xx_raises_retryable_errors_then_recovers(
    backend: BatchHTTPBackend, server: FakeLLMServer
) -> None:
    info = await backend.asubmit_batch(_encode(backend, ["a"]), metadata={})
    server.batch_plan = BatchPlan(poll_failures=2)
    for _ in range(2):
        with pytest.raises(BackendError) as caught:
            await backend.aget_batch(info.batch_id)
        assert caught.value.error.code is ErrorCode.PROVIDER_UNAVAILABLE
        assert caught.value.error.retryable
    assert (await backend.aget_batch(info.batch_id)).state is ProviderBatchState.COMPLETED


async def test_an_oversized_batch_is_a_413_bad_request_naming_the_size(
    backend: BatchHTTPBackend, server: FakeLLMServer
) -> None:
    server.batch_plan = BatchPlan(max_bytes=2000)
    lines = _encode(backend, ["y" * 500 for _ in range(6)])
    with pytest.raises(BackendError) as caught:
        await backend.asubmit_batch(lines, metadata={})
    error = caught.value.error
    assert (error.code, error.status, error.retryable) == (
        ErrorCode.PROVIDER_BAD_REQUEST,
        413,
        False,
    )
    assert "413" in error.message and "bytes were sent" in error.message
    assert KEY not in str(error) and KEY not in (error.detail or "")


async def test_a_provider_limit_on_requests_is_reported(
    backend: BatchHTTPBackend, server: FakeLLMServer
) -> None:
    server.batch_plan = BatchPlan(max_requests=2)
    lines = _encode(backend, ["a", "b", "c"])
    if isinstance(backend, OpenAIChatBackend):
        info = await backend.asubmit_batch(lines, metadata={})
        failed = await backend.aget_batch(info.batch_id)
        assert failed.state is ProviderBatchState.FAILED and not failed.results_ready
        assert failed.error is not None
        assert failed.error.code is ErrorCode.PROVIDER_BAD_REQUEST
        assert "3 requests" in failed.error.message
        assert await backend.aresults(info.batch_id) == []
    else:
        with pytest.raises(BackendError, match="at most 2") as caught:
            await backend.asubmit_batch(lines, metadata={})
        assert caught.value.error.code is ErrorCode.PROVIDER_BAD_REQUEST


@pytest.mark.parametrize(
    ("encoded", "problem"),
    [
        ([], "no requests"),
        (b'{"a":1}\n', "sequence of bytes"),
        (["text"], "line 0 is not"),
        ([b""], "line 0 is not"),
    ],
)
async def test_a_bad_submission_is_a_usage_error_before_any_call(
    backend: BatchHTTPBackend, server: FakeLLMServer, encoded: Any, problem: str
) -> None:
    with pytest.raises(LoomUsageError, match=problem):
        await backend.asubmit_batch(encoded, metadata={})
    assert server.request_count == 0


async def test_a_batch_over_the_backends_limits_is_refused_before_any_call(
    server: FakeLLMServer,
) -> None:
    small = ProviderBatchLimits(max_requests=2, max_bytes=10_000)
    async with OpenAIChatBackend(base_url=server.base_url, batch_limits=small) as backend:
        with pytest.raises(LoomUsageError, match="3 requests, more than the 2"):
            await backend.asubmit_batch(_encode(backend, ["a", "b", "c"]), metadata={})
        with pytest.raises(LoomUsageError, match="more than the 10,000"):
            await backend.asubmit_batch(_encode(backend, ["z" * 11_000]), metadata={})
        with pytest.raises(LoomUsageError, match="newline"):
            await backend.asubmit_batch([b'{"custom_id":"a"}'], metadata={})
        with pytest.raises(LoomUsageError, match="at most 16"):
            await backend.asubmit_batch(
                _encode(backend, ["a"]), metadata={str(i): "v" for i in range(17)}
            )
    assert server.request_count == 0


async def test_batch_ids_are_one_path_segment(
    backend: BatchHTTPBackend, server: FakeLLMServer
) -> None:
    with pytest.raises(BackendError) as caught:
        await backend.aget_batch("../../files/x")
    assert caught.value.error.status == 404
    # Quoted, the id reached the batch route (a path would have reached the file route).
    assert "no such" in caught.value.error.message
    assert "batch" in caught.value.error.message
    with pytest.raises(LoomUsageError, match="batch_id must be a non-empty str"):
        await backend.aget_batch("")


async def test_a_base_url_with_a_path_and_a_query_keeps_working(server: FakeLLMServer) -> None:
    base = f"{server.base_url}?api-version=2024-10-21"
    async with OpenAIChatBackend(base_url=base, api_key=KEY) as backend:
        info = await backend.asubmit_batch(_encode(backend, ["a"]), metadata={})
        assert len(await backend.aresults(info.batch_id)) == 1
    assert all("api-version=2024-10-21" in r.query for r in server.requests)
    server.clear()
    async with AnthropicBackend(base_url=f"{server.anthropic_base_url}/v1", api_key=KEY) as claude:
        info = await claude.asubmit_batch(_encode(claude, ["a"]), metadata={})
        assert len(await claude.aresults(info.batch_id)) == 1
    assert server.requests[0].path == "/v1/messages/batches"


async def test_credentials_stay_out_of_reprs_and_requests_carry_them(
    backend: BatchHTTPBackend, server: FakeLLMServer
) -> None:
    await backend.asubmit_batch(_encode(backend, ["a"]), metadata={})
    assert KEY not in repr(backend)
    sent = server.requests[-1].headers
    assert KEY in (sent.get("authorization", "") + sent.get("x-api-key", ""))


async def test_concurrent_polls_run_each_request_once(server: FakeLLMServer) -> None:
    calls: list[str] = []

    def counting(request: RecordedRequest) -> str:
        calls.append(request.last_user_text)
        return json.dumps({"echo": request.last_user_text})

    server.handler = counting
    server.batch_plan = BatchPlan(complete_after=0.6)
    try:
        async with AnthropicBackend(base_url=server.anthropic_base_url, api_key=KEY) as backend:
            texts = [f"t{i}" for i in range(40)]
            info = await backend.asubmit_batch(_encode(backend, texts), metadata={})
            for _ in range(8):
                seen = await asyncio.gather(*(backend.aget_batch(info.batch_id) for _ in range(10)))
                done = [s.counts.succeeded for s in seen]
                assert all(0 <= n <= 40 for n in done)
                await asyncio.sleep(0.1)
            final = await backend.aget_batch(info.batch_id)
            assert final.state is ProviderBatchState.COMPLETED
            assert len(await backend.aresults(info.batch_id)) == 40
    finally:
        server.handler = _handler
    assert sorted(calls) == sorted(texts)  # every request answered exactly once
