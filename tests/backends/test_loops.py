"""One OpenAIChatBackend used from several event loops: each loop gets its own pool."""

from __future__ import annotations

import asyncio
import threading

from loom_backends import AnthropicBackend, OpenAIChatBackend
from loom_backends.testing import FakeLLMServer
from loom_backends.testing import contract_request as chat
from loom_protocol import ChatResponse


async def _use(backend: OpenAIChatBackend | AnthropicBackend, n: int) -> list[ChatResponse]:
    try:
        return await asyncio.gather(*(backend.acomplete(chat(f"q{i}")) for i in range(n)))
    finally:
        await backend.aclose()


def test_asyncio_run_twice(server: FakeLLMServer) -> None:
    backend = OpenAIChatBackend(server.base_url)
    first = asyncio.run(_use(backend, 5))
    second = asyncio.run(_use(backend, 5))
    assert [r.content for r in first] == [r.content for r in second]
    assert server.request_count == 10


async def test_a_loop_in_another_thread_at_the_same_time(server: FakeLLMServer) -> None:
    backend = OpenAIChatBackend(server.base_url)
    from_thread: list[ChatResponse] = []
    failures: list[BaseException] = []

    def other_loop() -> None:
        try:
            from_thread.extend(asyncio.run(_use(backend, 20)))
        except BaseException as exc:  # surfaced by the assertion below
            failures.append(exc)

    thread = threading.Thread(target=other_loop)
    thread.start()
    here = await _use(backend, 20)
    await asyncio.to_thread(thread.join, 60)
    assert not failures
    assert len(from_thread) == len(here) == 20
    assert {r.content for r in here} == {f'{{"echo": "q{i}"}}' for i in range(20)}
    assert server.request_count == 40


def test_anthropic_from_two_loops(server: FakeLLMServer) -> None:
    backend = AnthropicBackend(server.anthropic_base_url)
    assert len(asyncio.run(_use(backend, 3))) == 3
    assert len(asyncio.run(_use(backend, 3))) == 3
