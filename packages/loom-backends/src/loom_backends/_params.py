"""The generation parameters each built-in backend knows, and ``extra_body``.

A backend class declares the names it accepts in its ``generation_params`` class attribute;
the engine refuses any other keyword argument at construction (with a did-you-mean), so a
typo never reaches the provider. Provider-specific extras (vLLM's ``top_k``, ``min_p``,
``guided_json``…) go through ``extra_body={...}``, which every built-in backend merges into
the request body last, as the OpenAI SDK does.

The sets follow the providers' API references (OpenAI Chat Completions, Anthropic Messages).
Left out on purpose: what Loom builds itself (``model``, ``messages``, Anthropic's ``system``)
and what it cannot read (``stream``, ``stream_options``: Loom reads one whole answer; ``n``:
Loom keeps one answer per input).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "ANTHROPIC_PARAMS",
    "EXTRA_BODY",
    "OPENAI_CHAT_PARAMS",
    "merge_params",
]

#: The keyword that carries provider-specific extras, merged into the body last.
EXTRA_BODY = "extra_body"

#: OpenAI ``POST /chat/completions`` request fields Loom passes through.
OPENAI_CHAT_PARAMS: frozenset[str] = frozenset(
    {
        "audio",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "metadata",
        "modalities",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "prompt_cache_retention",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
        "web_search_options",
        EXTRA_BODY,
    }
)

#: Anthropic ``POST /v1/messages`` request fields Loom passes through.
ANTHROPIC_PARAMS: frozenset[str] = frozenset(
    {
        "cache_control",
        "container",
        "context_management",
        "inference_geo",
        "max_tokens",
        "mcp_servers",
        "metadata",
        "output_config",
        "service_tier",
        "stop_sequences",
        "temperature",
        "thinking",
        "tool_choice",
        "tools",
        "top_k",
        "top_p",
        EXTRA_BODY,
    }
)


def merge_params(body: dict[str, Any], params: Mapping[str, Any]) -> None:
    """Merge a request's ``params`` into ``body``, ``extra_body`` last (it wins)."""
    if EXTRA_BODY not in params:
        body.update(params)
        return
    extra = params[EXTRA_BODY]
    body.update({k: v for k, v in params.items() if k != EXTRA_BODY})
    if isinstance(extra, Mapping):
        body.update(extra)
