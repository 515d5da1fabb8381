"""Backends around Python code: a plain function, or a ready OpenAI SDK client."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import threading
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, TypeVar, cast

import httpx

from loom_protocol import (
    BackendError,
    ChatRequest,
    ChatResponse,
    Error,
    ErrorCode,
    LoomUsageError,
    is_int,
    shorten,
)

from ._errors import (
    DETAIL_LIMIT,
    bad_answer_error,
    error_for_status,
    error_for_transport,
    one_line,
    redacted,
    transport_error,
)
from ._openai import build_openai_body, parse_openai_answer
from ._params import OPENAI_CHAT_PARAMS

__all__ = ["CallableBackend", "OpenAIClientBackend", "WorkerPool"]

_T = TypeVar("_T")

#: Upper bound on worker threads; threads start on demand, so the real count follows the
#: engine's in-flight limit.
MAX_WORKERS = 256


class WorkerPool:
    """A lazily created thread pool for sync code called from ``acomplete``."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    async def run(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` in a worker thread and await its result."""
        executor = self._executor
        if executor is None:
            with self._lock:
                executor = self._executor
                if executor is None:
                    executor = ThreadPoolExecutor(MAX_WORKERS, thread_name_prefix=self._name)
                    self._executor = executor
        return await asyncio.get_running_loop().run_in_executor(executor, fn)

    def shutdown(self) -> None:
        """Stop the threads once their current call ends; a later ``run`` starts a new pool."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)


def _is_async_callable(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


def _callable_error(exc: Exception, who: str = "the backend function") -> BackendError:
    if isinstance(exc, BackendError):
        return exc
    text = one_line(str(exc))
    message = f"{who} raised {type(exc).__name__}" + (f": {text}" if text else "")
    # The end of a traceback tells most: the frame that raised, and the exception.
    detail = shorten("".join(traceback.format_exception(exc)), DETAIL_LIMIT, keep_end=True)
    return BackendError(
        Error(code=ErrorCode.PROVIDER_ERROR, message=message, detail=detail, retryable=False)
    )


def _as_response(value: object) -> ChatResponse:
    if isinstance(value, ChatResponse):
        return value
    if isinstance(value, str):
        return ChatResponse(content=value)
    raise BackendError(
        Error(
            code=ErrorCode.PROVIDER_ERROR,
            message=(
                "the backend function must return a str or a ChatResponse, "
                f"got {type(value).__name__}"
            ),
            retryable=False,
        )
    )


class CallableBackend:
    """A backend around a Python function from :class:`~loom_protocol.ChatRequest` to an answer.

    For local models, custom providers and tests. ``fn`` may be sync or async and returns a
    ``str`` (the answer text) or a :class:`~loom_protocol.ChatResponse`. A sync ``fn`` runs in
    a private thread pool (threads start on demand, up to 256), so a blocking call never stalls
    the event loop.

    A :class:`~loom_protocol.BackendError` raised by ``fn`` passes through unchanged, so a
    function can ask for a retry; any other exception becomes a non-retryable provider_error
    whose detail is the traceback.

    Args:
        fn: The function to call, once per attempt.
    """

    def __init__(self, fn: Callable[[ChatRequest], Any]) -> None:
        if not callable(fn):
            raise LoomUsageError(f"CallableBackend needs a callable, got {type(fn).__name__}")
        self._fn = fn
        self._is_async = _is_async_callable(fn)
        self._pool = WorkerPool("loom-callable")

    async def acomplete(self, request: ChatRequest) -> ChatResponse:
        """Call the function from asyncio (a sync function in a worker thread)."""
        try:
            if self._is_async:
                value = await self._fn(request)
            else:
                value = await self._pool.run(lambda: self._fn(request))
                if inspect.isawaitable(value):
                    value = await value
        except Exception as exc:
            raise _callable_error(exc) from None
        return _as_response(value)

    async def aclose(self) -> None:
        """Release the worker threads."""
        self._pool.shutdown()

    def __repr__(self) -> str:
        name = getattr(self._fn, "__qualname__", None) or type(self._fn).__name__
        return f"CallableBackend({name})"


def _sdk_error(exc: Exception, secrets: tuple[str | None, ...]) -> BackendError:
    """Map an OpenAI-SDK-like exception by duck typing, without importing the SDK."""
    if isinstance(exc, BackendError):
        return exc
    if isinstance(exc, json.JSONDecodeError):
        # The client could not decode a 200 body: as for our own HTTP backends, a body that
        # is not JSON is most likely a proxy hiccup, worth another attempt.
        return bad_answer_error(
            "the provider's answer is not JSON", exc.doc, retryable=True, secrets=secrets
        )
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "APITimeoutError" in names:
        return redacted(
            transport_error(ErrorCode.PROVIDER_TIMEOUT, "the provider timed out", exc), secrets
        )
    if "APIConnectionError" in names:
        return redacted(
            transport_error(ErrorCode.PROVIDER_UNAVAILABLE, "could not reach the provider", exc),
            secrets,
        )
    status = getattr(exc, "status_code", None)
    if is_int(status):
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
        body: str | None = None
        try:
            text = getattr(response, "text", None)
            body = text if isinstance(text, str) else None
        except Exception:  # an httpx response whose body was never read
            body = None
        if body is None:
            raw = getattr(exc, "body", None)
            body = json.dumps(raw, default=str) if raw is not None else str(exc)
        return error_for_status(
            status,
            body,
            cast(Mapping[str, str], headers) if isinstance(headers, Mapping) else {},
            secrets=secrets,
        )
    if isinstance(exc, httpx.HTTPError | OSError):
        return error_for_transport(exc, secrets=secrets)
    return redacted(_callable_error(exc, "the SDK client"), secrets)


def _answer_dict(value: object) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, str):  # the SDK hands back the raw text of a body it cannot parse
        raise bad_answer_error("the provider's answer is not JSON", value, retryable=True)
    for method in ("model_dump", "to_dict"):
        dump = getattr(value, method, None)
        if callable(dump):
            data = dump()
            if isinstance(data, dict):
                return cast(dict[str, Any], data)
    raise bad_answer_error(
        f"the SDK client returned {type(value).__name__}, not a chat completion",
        shorten(repr(value), 500),
    )


class OpenAIClientBackend:
    """A backend around a ready OpenAI SDK client (``openai.OpenAI`` or ``openai.AsyncOpenAI``).

    Found by duck typing on ``client.chat.completions.create``; ``openai`` is never imported.
    Requests and answers use the same mapping as :class:`OpenAIChatBackend`, and the SDK's
    exceptions are mapped into the same error table (``status_code``, the response's
    ``retry-after`` headers, ``APITimeoutError`` / ``APIConnectionError`` by class name).

    The engine owns retries: when the client has ``with_options`` (the OpenAI SDK does), the
    backend uses ``client.with_options(max_retries=0)`` so one engine attempt is one call. A
    sync client called from ``acomplete`` runs in a private thread pool, once per attempt.
    The caller keeps ownership of the client: ``aclose()`` does not close it.

    ``extra_body`` is handed to ``create`` as its own ``extra_body=`` argument, which the SDK
    merges into the request body.

    Args:
        client: The SDK client (or any object with ``.chat.completions.create(**body)``).
    """

    #: The generation parameters this backend accepts: the OpenAI SDK's ``create`` arguments.
    generation_params: ClassVar[frozenset[str]] = OPENAI_CHAT_PARAMS

    def __init__(self, client: Any) -> None:
        create = getattr(
            getattr(getattr(client, "chat", None), "completions", None), "create", None
        )
        if not callable(create):
            raise LoomUsageError(
                f"OpenAIClientBackend needs an object with .chat.completions.create, "
                f"got {type(client).__name__}"
            )
        with_options = getattr(client, "with_options", None)
        if callable(with_options):
            # A look-alike without that option is used as it is.
            with contextlib.suppress(TypeError):
                client = with_options(max_retries=0)
            create = client.chat.completions.create
        self._client = client
        self._create: Callable[..., Any] = create
        self._is_async = _is_async_callable(create)
        key = getattr(client, "api_key", None)
        self._secrets: tuple[str | None, ...] = (key if isinstance(key, str) else None,)
        self._pool = WorkerPool("loom-sdk")

    def _finish(self, value: object) -> ChatResponse:
        data = _answer_dict(value)
        return parse_openai_answer(data, json.dumps(data, default=str), 200, self._secrets)

    async def acomplete(self, request: ChatRequest) -> ChatResponse:
        """Await ``create`` (async client) or run it in a worker thread (sync client)."""
        body = build_openai_body(request, keep_extra_body=True)
        try:
            if self._is_async:
                value = await self._create(**body)
            else:
                value = await self._pool.run(lambda: self._create(**body))
                if inspect.isawaitable(value):
                    value = await value
        except Exception as exc:
            raise _sdk_error(exc, self._secrets) from None
        return self._finish(value)

    async def aclose(self) -> None:
        """Release the worker threads (the SDK client stays open: it belongs to the caller)."""
        self._pool.shutdown()

    def __repr__(self) -> str:
        return f"OpenAIClientBackend({type(self._client).__name__})"
