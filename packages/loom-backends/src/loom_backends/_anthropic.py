"""The Anthropic Messages API backend and its request/answer mapping."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import unquote_to_bytes

import httpx

from loom_protocol import (
    BackendError,
    ChatRequest,
    ChatResponse,
    Error,
    ErrorCode,
    ImagePart,
    Message,
    ProviderBatchLimits,
    TextPart,
    check_int,
    shorten,
)

from ._anthropic_batch import AnthropicBatchBackend
from ._defaults import (
    ANTHROPIC_API_KEY_ENV,
    ANTHROPIC_BASE_URL_ENV,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_TIMEOUT,
)
from ._errors import bad_answer_error
from ._openai import usage_from
from ._params import ANTHROPIC_PARAMS, merge_params

__all__ = ["AnthropicBackend", "build_anthropic_body", "parse_anthropic_answer"]

# Anthropic's stop reasons, normalised to the OpenAI vocabulary the engine reads.
_STOP_REASONS = {
    "max_tokens": "length",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
}


def _image_block(part: ImagePart) -> dict[str, Any]:
    url = part.url
    if not url.startswith("data:"):
        return {"type": "image", "source": {"type": "url", "url": url}}
    header, sep, payload = url[5:].partition(",")
    if not sep:
        raise BackendError(
            Error(
                code=ErrorCode.PROVIDER_BAD_REQUEST,
                message="an image data: URL has no ',' separating its header from its data",
                detail=shorten(url, 200),
            )
        )
    fields = header.split(";")
    media_type = fields[0] or "text/plain"
    if "base64" in fields[1:]:
        data = payload
    else:  # a percent-encoded data: URL; Anthropic only takes base64
        data = base64.b64encode(unquote_to_bytes(payload)).decode("ascii")
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _anthropic_content(message: Message) -> str | list[dict[str, Any]]:
    if isinstance(message.content, str):
        return message.content
    return [
        {"type": "text", "text": part.text} if isinstance(part, TextPart) else _image_block(part)
        for part in message.content
    ]


def _system_text(message: Message) -> str:
    if isinstance(message.content, str):
        return message.content
    return "\n".join(part.text for part in message.content if isinstance(part, TextPart))


def _format_instruction(response_format: Mapping[str, Any]) -> str | None:
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema", spec) if isinstance(spec, Mapping) else spec
        return (
            "Answer with one JSON object that conforms to this JSON schema, and nothing else "
            "(no prose, no code fences):\n" + json.dumps(schema, ensure_ascii=False)
        )
    if kind == "json_object":
        return "Answer with one JSON object and nothing else (no prose, no code fences)."
    return None


def build_anthropic_body(request: ChatRequest, default_max_tokens: int = 4096) -> dict[str, Any]:
    """The JSON body of a ``/v1/messages`` call for ``request``.

    System messages are joined into ``system``. The Messages API has no ``response_format``:
    a JSON format becomes a short instruction (with the schema) appended to the system prompt.
    ``max_tokens`` is required by the API, so ``default_max_tokens`` fills it when unset.
    """
    system = [_system_text(m) for m in request.messages if m.role == "system"]
    if request.response_format is not None:
        instruction = _format_instruction(request.response_format)
        if instruction is not None:
            system.append(instruction)
    body: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens if request.max_tokens is not None else default_max_tokens,
        "messages": [
            {"role": m.role, "content": _anthropic_content(m)}
            for m in request.messages
            if m.role != "system"
        ],
    }
    if system:
        body["system"] = "\n\n".join(system)
    if request.temperature is not None:
        body["temperature"] = request.temperature
    merge_params(body, request.params)
    return body


def parse_anthropic_answer(
    data: dict[str, Any],
    content: bytes | str = b"",
    status: int | None = 200,
    secrets: tuple[str | None, ...] = (),
) -> ChatResponse:
    """A :class:`ChatResponse` from a Messages API answer.

    ``text`` blocks are joined into ``content``, ``thinking`` blocks into ``reasoning``;
    ``stop_reason`` is normalised (``max_tokens`` → ``length``, ``end_turn`` → ``stop``);
    ``usage.input_tokens`` (plus cache reads and writes) → ``prompt_tokens``.

    Raises:
        BackendError: provider_error (not retryable) when the answer has no content list.
    """
    blocks = data.get("content")
    if not isinstance(blocks, list):
        raw = content.decode("utf-8", "replace") if isinstance(content, bytes) else content
        raise bad_answer_error(
            "the provider's answer has no content blocks", raw, status=status, secrets=secrets
        )
    texts: list[str] = []
    thoughts: list[str] = []
    for block in blocks:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            thoughts.append(block["thinking"])
    stop = data.get("stop_reason")
    model = data.get("model")
    return ChatResponse(
        content="".join(texts),
        reasoning="\n".join(thoughts) if any(thoughts) else None,
        usage=usage_from(
            data.get("usage"),
            "input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
        ),
        finish_reason=_STOP_REASONS.get(stop, stop) if isinstance(stop, str) else None,
        model=model if isinstance(model, str) else None,
    )


class AnthropicBackend(AnthropicBatchBackend):
    """Anthropic's native Messages API (``POST {base_url}/v1/messages``).

    The model name is sent as given: :func:`~loom_backends.resolve_backend` strips an
    ``anthropic/`` prefix. The backend does not retry and raises only
    :class:`~loom_protocol.BackendError`. It implements
    :class:`~loom_protocol.ProviderBatchBackend` through Message Batches.

    Args:
        base_url: The API root; defaults to ``ANTHROPIC_BASE_URL``, then
            ``https://api.anthropic.com``. A root ending in ``/v1`` is accepted too.
        api_key: Sent as ``x-api-key``; defaults to ``ANTHROPIC_API_KEY``.
        timeout: Seconds allowed for each network phase.
        max_connections: Size of each connection pool.
        headers: Extra headers sent with every request (e.g. ``anthropic-beta``).
        anthropic_version: The ``anthropic-version`` header.
        default_max_tokens: ``max_tokens`` when the request sets none (the API requires one).
        async_transport: An httpx async transport; by default the aiohttp transport.
        batch_limits: The limits per provider batch; by default Anthropic's
            (:data:`~loom_backends.ANTHROPIC_BATCH_LIMITS`).
    """

    #: The generation parameters this backend accepts (see ``_params``).
    generation_params: ClassVar[frozenset[str]] = ANTHROPIC_PARAMS
    #: Narrower than the chat contract's [0, 2]: the Messages API takes temperature in [0, 1].
    parameter_ranges: ClassVar[Mapping[str, tuple[float, float]]] = {
        "temperature": (0.0, 1.0),
        "top_p": (0.0, 1.0),
    }

    _ENV_BASE_URL = ANTHROPIC_BASE_URL_ENV
    _ENV_API_KEY = ANTHROPIC_API_KEY_ENV
    _DEFAULT_BASE_URL = "https://api.anthropic.com"
    _KEYED_HOST = "api.anthropic.com"

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        headers: Mapping[str, str] | None = None,
        anthropic_version: str = "2023-06-01",
        default_max_tokens: int = 4096,
        async_transport: httpx.AsyncBaseTransport | None = None,
        batch_limits: ProviderBatchLimits | None = None,
    ) -> None:
        check_int("AnthropicBackend: default_max_tokens", default_max_tokens, 1)
        self._anthropic_version = anthropic_version
        self._default_max_tokens = default_max_tokens
        super().__init__(
            base_url,
            api_key,
            timeout=timeout,
            max_connections=max_connections,
            headers=headers,
            async_transport=async_transport,
            batch_limits=batch_limits,
        )

    def _endpoint(self, path: str) -> str:
        # Anthropic's SDK takes the root; OpenAI-style users often pass ".../v1". Accept both.
        return f"{path}/messages" if path.endswith("/v1") else f"{path}/v1/messages"

    def _auth_headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": self._anthropic_version}
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    def _build_body(self, request: ChatRequest) -> dict[str, Any]:
        return build_anthropic_body(request, self._default_max_tokens)

    def _parse_answer(self, data: dict[str, Any], content: bytes, status: int) -> ChatResponse:
        return parse_anthropic_answer(data, content, status, self._secrets)
