"""Prompt-cache reads reach ``Usage.cached_tokens`` from each provider's own usage shape."""

from __future__ import annotations

from typing import Any

import pytest

from loom_backends import AnthropicBackend, OpenAIChatBackend
from loom_backends._openai import usage_from
from loom_backends.testing import CONTRACT_API_KEY as API_KEY
from loom_backends.testing import FakeLLMServer, FakeReply
from loom_backends.testing import contract_request as chat
from loom_protocol import Backend, Usage


def _scripted(cached: int) -> Any:
    def handler(_request: Any) -> FakeReply:
        usage = {"prompt_tokens": 1000, "completion_tokens": 50, "cached_tokens": cached}
        return FakeReply(content="ok", usage=usage)

    return handler


def _backends(server: FakeLLMServer) -> list[Backend]:
    return [
        OpenAIChatBackend(server.base_url, API_KEY),
        AnthropicBackend(server.anthropic_base_url, API_KEY),
    ]


@pytest.mark.parametrize("kind", [0, 1])
async def test_cached_tokens_from_the_wire(kind: int) -> None:
    with FakeLLMServer(_scripted(600)) as server:
        backend = _backends(server)[kind]
        async with backend:  # type: ignore[attr-defined]
            response = await backend.acomplete(chat())
    assert response.usage == Usage(
        prompt_tokens=1000, completion_tokens=50, total_tokens=1050, cached_tokens=600
    )


@pytest.mark.parametrize("kind", [0, 1])
async def test_no_cache_read_is_zero(kind: int) -> None:
    with FakeLLMServer(_scripted(0)) as server:
        backend = _backends(server)[kind]
        async with backend:  # type: ignore[attr-defined]
            response = await backend.acomplete(chat())
    assert response.usage is not None
    assert response.usage.cached_tokens == 0


@pytest.mark.parametrize(
    ("details", "cached"),
    [
        ({"prompt_tokens_details": {"cached_tokens": 30}}, 30),
        ({"prompt_tokens_details": {"cached_tokens": 500}}, 100),  # never more than the prompt
        ({"prompt_tokens_details": {"cached_tokens": True}}, 0),  # a bool is no count
        ({"prompt_tokens_details": {"cached_tokens": -4}}, 0),
        ({"prompt_tokens_details": None}, 0),
        ({"prompt_tokens_details": "x"}, 0),
        ({}, 0),
    ],
)
def test_odd_openai_details_are_read_safely(details: dict[str, Any], cached: int) -> None:
    data = {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105, **details}
    usage = usage_from(data, "prompt_tokens", "completion_tokens")
    assert usage is not None
    assert usage.cached_tokens == cached


def test_anthropic_prompt_includes_cache_reads_and_writes() -> None:
    data = {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_read_input_tokens": 70,
        "cache_creation_input_tokens": 20,
    }
    usage = usage_from(
        data,
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
    )
    assert usage == Usage(prompt_tokens=100, completion_tokens=5, cached_tokens=70)
