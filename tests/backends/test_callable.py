"""CallableBackend: the conformance rows that apply to a Python function."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from loom_backends import CallableBackend
from loom_protocol import (
    BackendError,
    ChatRequest,
    ChatResponse,
    Error,
    ErrorCode,
    ImagePart,
    LoomUsageError,
    Message,
    TextPart,
    Usage,
)


def chat(text: str = "hello") -> ChatRequest:
    return ChatRequest(model="m", messages=[Message(role="user", content=text)])


def upper(request: ChatRequest) -> str:
    content = request.messages[-1].content
    assert isinstance(content, str)
    return content.upper()


async def aupper(request: ChatRequest) -> str:
    await asyncio.sleep(0)
    return upper(request)


class AsyncCallable:
    async def __call__(self, request: ChatRequest) -> str:
        return "from an object"


@pytest.mark.parametrize("fn", [upper, aupper, AsyncCallable()])
async def test_text_answer_sync_and_async(fn: Any) -> None:
    backend = CallableBackend(fn)
    expected = "from an object" if isinstance(fn, AsyncCallable) else "HELLO"
    assert (await backend.acomplete(chat())).content == expected
    await backend.aclose()


def test_the_backend_is_async_only() -> None:
    # Protocol 2.0: a sync caller goes through TaskLoom's loop thread, never a sync half here.
    assert not hasattr(CallableBackend, "complete")
    assert not hasattr(CallableBackend, "close")


async def test_a_sync_function_returning_an_awaitable_is_awaited() -> None:
    backend = CallableBackend(lambda req: aupper(req))
    assert (await backend.acomplete(chat("x"))).content == "X"
    await backend.aclose()


async def test_reasoning_and_usage_pass_through_a_chat_response() -> None:
    answer = ChatResponse(
        content="42", reasoning="because", usage=Usage(prompt_tokens=3, completion_tokens=2)
    )
    backend = CallableBackend(lambda req: answer)
    response = await backend.acomplete(chat())
    assert response == answer
    assert response.usage is not None
    assert response.usage.total_tokens == 5
    await backend.aclose()


async def test_image_parts_reach_the_function() -> None:
    seen: list[ChatRequest] = []
    backend = CallableBackend(lambda req: seen.append(req) or "ok")
    request = ChatRequest(
        model="m",
        messages=[
            Message(
                role="user",
                content=[TextPart(text="what"), ImagePart(url="data:image/png;base64,AAAA")],
            )
        ],
    )
    await backend.acomplete(request)
    assert seen == [request]
    await backend.aclose()


async def test_a_sync_function_runs_in_a_worker_thread() -> None:
    threads: set[int] = set()
    gate = threading.Barrier(8, timeout=30)

    def blocking(request: ChatRequest) -> str:
        threads.add(threading.get_ident())
        gate.wait()  # all eight must be in flight at once, or this times out
        return "done"

    backend = CallableBackend(blocking)
    results = await asyncio.gather(*(backend.acomplete(chat()) for _ in range(8)))
    assert [r.content for r in results] == ["done"] * 8
    assert len(threads) == 8
    assert threading.get_ident() not in threads
    await backend.aclose()


async def test_a_backend_error_passes_through_unchanged() -> None:
    raised = BackendError(
        Error(code=ErrorCode.PROVIDER_RATE_LIMITED, message="slow", retryable=True),
        retry_after=4.0,
    )

    def fn(request: ChatRequest) -> str:
        raise raised

    backend = CallableBackend(fn)
    with pytest.raises(BackendError) as caught:
        await backend.acomplete(chat())
    assert caught.value is raised
    await backend.aclose()


async def test_any_other_exception_is_a_provider_error_with_the_traceback() -> None:
    async def fn(request: ChatRequest) -> str:
        raise ZeroDivisionError("division by zero in my model")

    backend = CallableBackend(fn)
    with pytest.raises(BackendError) as caught:
        await backend.acomplete(chat())
    error = caught.value.error
    assert error.code is ErrorCode.PROVIDER_ERROR
    assert not error.retryable
    assert "ZeroDivisionError: division by zero in my model" in error.message
    assert error.detail is not None
    assert "Traceback" in error.detail
    assert "in fn" in error.detail
    await backend.aclose()


async def test_a_wrong_return_type_is_named() -> None:
    backend = CallableBackend(lambda req: 42)
    with pytest.raises(BackendError, match="must return a str or a ChatResponse, got int"):
        await backend.acomplete(chat())
    await backend.aclose()


def test_a_non_callable_is_refused() -> None:
    with pytest.raises(LoomUsageError, match="needs a callable, got str"):
        CallableBackend("not a function")  # type: ignore[arg-type]


def test_repr_names_the_function() -> None:
    assert repr(CallableBackend(upper)) == "CallableBackend(upper)"
