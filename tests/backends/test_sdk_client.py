"""The conformance suite on OpenAIClientBackend, with a duck-typed SDK client built on httpx.

The fake client mirrors the parts of ``openai.OpenAI`` / ``openai.AsyncOpenAI`` the adapter
relies on: ``chat.completions.create(**body)``, ``with_options(max_retries=...)``, answers with
``model_dump()``, and exceptions named like the SDK's (``APIStatusError`` with ``status_code``
and ``response``, ``APITimeoutError``, ``APIConnectionError``).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
import pytest

from loom_backends import OpenAIClientBackend
from loom_backends.testing import CONTRACT_API_KEY as API_KEY
from loom_backends.testing import BackendContract, FakeLLMServer
from loom_backends.testing import contract_request as chat
from loom_protocol import Backend, ErrorCode, LoomUsageError


class APIError(Exception):
    pass


class APIStatusError(APIError):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"Error code: {response.status_code} - {response.text}")
        self.response = response
        self.status_code = response.status_code


class APIConnectionError(APIError):
    pass


class APITimeoutError(APIConnectionError):
    pass


class Completion:
    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def model_dump(self) -> dict[str, Any]:
        return self._data


def _answer(response: httpx.Response) -> Completion:
    if response.status_code >= 400:
        raise APIStatusError(response)
    return Completion(response.json())


class _Completions:
    def __init__(self, owner: FakeOpenAI) -> None:
        self._owner = owner

    def create(self, **body: Any) -> Completion:
        self._owner.calls += 1
        self._owner.threads.add(threading.get_ident())
        try:
            response = self._owner.http.post("/chat/completions", json=body)
        except httpx.TimeoutException as exc:
            raise APITimeoutError("Request timed out.") from exc
        except httpx.TransportError as exc:
            raise APIConnectionError("Connection error.") from exc
        return _answer(response)


class _AsyncCompletions:
    def __init__(self, owner: FakeAsyncOpenAI) -> None:
        self._owner = owner

    async def create(self, **body: Any) -> Completion:
        self._owner.calls += 1
        try:
            response = await self._owner.http.post("/chat/completions", json=body)
        except httpx.TimeoutException as exc:
            raise APITimeoutError("Request timed out.") from exc
        except httpx.TransportError as exc:
            raise APIConnectionError("Connection error.") from exc
        return _answer(response)


class _Chat:
    def __init__(self, completions: Any) -> None:
        self.completions = completions


class FakeOpenAI:
    def __init__(self, base_url: str, api_key: str | None, timeout: float) -> None:
        self.api_key = api_key
        self.max_retries = 2
        self.calls = 0
        self.threads: set[int] = set()
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout)
        self.chat = _Chat(_Completions(self))

    def with_options(self, *, max_retries: int) -> FakeOpenAI:
        # The real SDK returns a copy sharing the HTTP client.
        copy = object.__new__(FakeOpenAI)
        copy.__dict__.update(self.__dict__)
        copy.max_retries = max_retries
        copy.chat = _Chat(_Completions(copy))
        return copy


class FakeAsyncOpenAI:
    def __init__(self, base_url: str, api_key: str | None, timeout: float) -> None:
        self.api_key = api_key
        self.calls = 0
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout)
        self.chat = _Chat(_AsyncCompletions(self))


class SDKContract(BackendContract):
    """The SDK's own HTTP client is closed with the backend (here: the test owns both)."""

    def make_backend(self, port: int, *, api_key: str | None, timeout: float) -> Backend:
        raise NotImplementedError


class TestSyncSDKClient(SDKContract):
    def make_backend(self, port: int, *, api_key: str | None, timeout: float) -> Backend:
        client = FakeOpenAI(f"http://127.0.0.1:{port}/v1", api_key, timeout)
        return _Closing(OpenAIClientBackend(client), client.http.close)


class TestAsyncSDKClient(SDKContract):
    def make_backend(self, port: int, *, api_key: str | None, timeout: float) -> Backend:
        client = FakeAsyncOpenAI(f"http://127.0.0.1:{port}/v1", api_key, timeout)
        return _Closing(OpenAIClientBackend(client), None, client.http.aclose)


class _Closing:
    """The backend plus the fake SDK's HTTP client, closed together at the end of a test."""

    def __init__(self, backend: OpenAIClientBackend, close: Any, aclose: Any = None) -> None:
        self.backend, self._close, self._aclose = backend, close, aclose

    async def acomplete(self, request: Any) -> Any:
        return await self.backend.acomplete(request)

    async def aclose(self) -> None:
        await self.backend.aclose()
        if self._close is not None:
            self._close()
        if self._aclose is not None:
            await self._aclose()

    def __repr__(self) -> str:
        return repr(self.backend)


# -- adapter specifics ---------------------------------------------------------------------------


async def test_a_sync_client_runs_in_a_worker_thread_once_per_attempt(
    server: FakeLLMServer,
) -> None:
    client = FakeOpenAI(server.base_url, None, 10.0)
    backend = OpenAIClientBackend(client)
    try:
        await asyncio.gather(*(backend.acomplete(chat(str(i))) for i in range(20)))
    finally:
        await backend.aclose()
        client.http.close()
    assert server.request_count == 20
    assert threading.get_ident() not in client.threads
    # with_options(max_retries=0) was taken: the engine owns retries.
    assert backend._client.max_retries == 0
    assert backend._client.calls == 20


async def test_an_error_is_raised_after_exactly_one_call(server: FakeLLMServer) -> None:
    from loom_backends.testing import FakeReply
    from loom_protocol import BackendError

    server.handler = lambda req: FakeReply(status=503)
    client = FakeOpenAI(server.base_url, None, 10.0)
    backend = OpenAIClientBackend(client)
    with pytest.raises(BackendError) as caught:
        await backend.acomplete(chat())
    await backend.aclose()
    client.http.close()
    assert caught.value.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert server.request_count == 1


def test_an_object_without_create_is_refused() -> None:
    with pytest.raises(LoomUsageError, match=r"\.chat\.completions\.create, got int"):
        OpenAIClientBackend(3)


async def test_the_client_keeps_its_owner(server: FakeLLMServer) -> None:
    client = FakeOpenAI(server.base_url, API_KEY, 10.0)
    backend = OpenAIClientBackend(client)
    await backend.acomplete(chat())
    await backend.aclose()
    # aclose() released only the adapter's threads: the caller's client still works.
    assert (await backend.acomplete(chat())).content == '{"echo": "hello"}'
    assert API_KEY not in repr(backend)
    await backend.aclose()
    client.http.close()


async def test_an_unexpected_sdk_exception_is_a_provider_error() -> None:
    from loom_protocol import BackendError

    class Broken:
        class chat:
            class completions:
                @staticmethod
                def create(**body: Any) -> Any:
                    raise KeyError("boom")

    backend = OpenAIClientBackend(Broken())
    with pytest.raises(BackendError) as caught:
        await backend.acomplete(chat())
    await backend.aclose()
    assert caught.value.code is ErrorCode.PROVIDER_ERROR
    assert not caught.value.retryable
    assert "KeyError" in caught.value.error.message
    assert caught.value.error.detail is not None
    assert "Traceback" in caught.value.error.detail
