"""The OpenAI-compatible ``/chat/completions`` backend and its request/answer mapping.

The mapping functions are plain and shared: :class:`OpenAIClientBackend` (a ready SDK
client) builds the same body and parses the same answer.
"""

from __future__ import annotations

from typing import Any, ClassVar

from loom_protocol import ChatRequest, ChatResponse, Message, TextPart, Usage, is_int

from ._defaults import OPENAI_API_KEY_ENV, OPENAI_BASE_URL_ENV
from ._errors import bad_answer_error
from ._openai_batch import OpenAIBatchBackend
from ._params import OPENAI_CHAT_PARAMS, merge_params

__all__ = ["OpenAIChatBackend", "build_openai_body", "parse_openai_answer", "usage_from"]


def _openai_message(message: Message) -> dict[str, Any]:
    if isinstance(message.content, str):
        return {"role": message.role, "content": message.content}
    parts: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, TextPart):
            parts.append({"type": "text", "text": part.text})
        else:
            parts.append({"type": "image_url", "image_url": {"url": part.url}})
    return {"role": message.role, "content": parts}


def build_openai_body(request: ChatRequest, *, keep_extra_body: bool = False) -> dict[str, Any]:
    """The JSON body of a ``/chat/completions`` call for ``request``.

    ``temperature`` and ``max_tokens`` are sent only when set; ``response_format`` as given;
    ``params`` are merged last, so a user's explicit generation parameter always wins, and
    the ``extra_body`` mapping among them after the others. With ``keep_extra_body`` (an
    OpenAI SDK client, which takes ``extra_body=`` itself) it stays a key of its own.
    """
    body: dict[str, Any] = {
        "model": request.model,
        "messages": [_openai_message(m) for m in request.messages],
    }
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.response_format is not None:
        body["response_format"] = request.response_format
    if keep_extra_body:
        body.update(request.params)
    else:
        merge_params(body, request.params)
    return body


def usage_from(data: Any, prompt_key: str, completion_key: str, *extra_prompt: str) -> Usage | None:
    """A :class:`Usage` from a provider's usage object, or ``None`` when it is unusable."""
    if not isinstance(data, dict):
        return None
    if not extra_prompt:
        # The common answer, plain counts that add up, in one step (every answer has usage).
        prompt, completion = data.get(prompt_key), data.get(completion_key)
        total = data.get("total_tokens")
        if (
            type(prompt) is int
            and type(completion) is int
            and type(total) is int
            and prompt >= 0
            and completion >= 0
            and prompt + completion <= total
        ):
            return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)
    values = [data.get(prompt_key), data.get(completion_key), *(data.get(k) for k in extra_prompt)]
    counts = [v if is_int(v) and v >= 0 else 0 for v in values]
    if not any(is_int(v) for v in values):
        return None
    prompt = counts[0] + sum(counts[2:])
    completion = counts[1]
    total = data.get("total_tokens")
    if not is_int(total) or total < prompt + completion:
        total = prompt + completion
    # The plain constructor: faster than model_construct for a model this small.
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)


def _text_of(content: Any) -> str | None:
    if content is None:
        return ""  # a null content is an empty answer, never the string "None"
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some servers answer with content parts
        texts = [p.get("text") for p in content if isinstance(p, dict)]
        return "".join(t for t in texts if isinstance(t, str))
    return None


def parse_openai_answer(
    data: dict[str, Any],
    content: bytes | str = b"",
    status: int | None = 200,
    secrets: tuple[str | None, ...] = (),
) -> ChatResponse:
    """A :class:`ChatResponse` from a ``/chat/completions`` answer.

    Args:
        data: The decoded answer.
        content: The raw body, kept in the error detail when the answer is unusable.
        status: The HTTP status of the answer, for the error.
        secrets: Strings (API keys) to blank out of the error.

    Raises:
        BackendError: provider_error (not retryable) when the answer has no usable choice.
    """
    choices = data.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        raw = content.decode("utf-8", "replace") if isinstance(content, bytes) else content
        raise bad_answer_error(
            "the provider's answer has no choices[0].message", raw, status=status, secrets=secrets
        )
    text = _text_of(message.get("content"))
    if text is None:
        raw = content.decode("utf-8", "replace") if isinstance(content, bytes) else content
        raise bad_answer_error(
            "the provider's message content is not text", raw, status=status, secrets=secrets
        )
    # DeepSeek, vLLM and Qwen put the chain of thought in reasoning_content; others in reasoning.
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    finish = choice.get("finish_reason") if isinstance(choice, dict) else None
    model = data.get("model")
    # Types are checked above; the plain constructor is the fastest way to build it anyway.
    return ChatResponse(
        content=text,
        reasoning=reasoning if isinstance(reasoning, str) and reasoning else None,
        usage=usage_from(data.get("usage"), "prompt_tokens", "completion_tokens"),
        finish_reason=finish if isinstance(finish, str) else None,
        model=model if isinstance(model, str) else None,
    )


class OpenAIChatBackend(OpenAIBatchBackend):
    """Any OpenAI-compatible ``/chat/completions`` server.

    OpenAI, DeepSeek, Qwen/DashScope, vLLM, Ollama, Together, Groq, LM Studio… The backend
    does not retry (the engine owns retries) and raises only
    :class:`~loom_protocol.BackendError`. It implements
    :class:`~loom_protocol.ProviderBatchBackend` through OpenAI's Batch API (``/files`` and
    ``/batches`` under ``base_url``), for servers that have one.

    Args:
        base_url: The API root, e.g. ``https://api.openai.com/v1``; defaults to the
            ``OPENAI_BASE_URL`` environment variable, then ``https://api.openai.com/v1``.
        api_key: Sent as ``Authorization: Bearer …``; defaults to ``OPENAI_API_KEY``. ``None``
            (local servers) sends no Authorization header.
        timeout: Seconds allowed for each network phase (connect, write, wait for the answer).
        max_connections: Size of each connection pool; match the engine's in-flight limit.
        headers: Extra headers sent with every request.
        async_transport: An httpx async transport (tests, proxies); by default Loom's aiohttp
            connection pool, one per event loop.
        batch_limits: The limits per provider batch; by default OpenAI's
            (:data:`~loom_backends.OPENAI_BATCH_LIMITS`).
    """

    #: The generation parameters this backend accepts (see ``_params``).
    generation_params: ClassVar[frozenset[str]] = OPENAI_CHAT_PARAMS

    _ENV_BASE_URL = OPENAI_BASE_URL_ENV
    _ENV_API_KEY = OPENAI_API_KEY_ENV
    _DEFAULT_BASE_URL = "https://api.openai.com/v1"
    _KEYED_HOST = "api.openai.com"

    def _endpoint(self, path: str) -> str:
        return f"{path}/chat/completions"

    def _auth_headers(self, api_key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {api_key}"} if api_key else {}

    def _build_body(self, request: ChatRequest) -> dict[str, Any]:
        return build_openai_body(request)

    def _parse_answer(self, data: dict[str, Any], content: bytes, status: int) -> ChatResponse:
        return parse_openai_answer(data, content, status, self._secrets)
