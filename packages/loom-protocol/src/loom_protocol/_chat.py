"""The chat contract between the engine and the backends."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ._checks import shorten
from ._ratelimits import RateLimitInfo

__all__ = [
    "ChatRequest",
    "ChatResponse",
    "ContentPart",
    "ImagePart",
    "Message",
    "TextPart",
    "Usage",
]


class TextPart(BaseModel):
    """A text part of a multimodal message."""

    model_config = ConfigDict(frozen=True)

    type: Literal["text"] = "text"
    text: str


class ImagePart(BaseModel):
    """An image part: an ``http(s)://`` URL or a ``data:`` URL (base64)."""

    model_config = ConfigDict(frozen=True)

    type: Literal["image"] = "image"
    url: str

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, value: str) -> str:
        if not value.startswith(("http://", "https://", "data:")):
            raise ValueError(
                f"image url must start with http://, https:// or data:, got {shorten(value, 60)!r}"
            )
        return value


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart]


_COUNTS = ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens")


class Usage(BaseModel):
    """Token counts reported by the provider.

    ``cached_tokens`` is the part of ``prompt_tokens`` read from the provider's prompt cache
    (OpenAI ``prompt_tokens_details.cached_tokens``, Anthropic ``cache_read_input_tokens``),
    billed at the cached-input price; 0 when the provider says nothing (and in rows stored
    before it existed).
    """

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    total_tokens: int = Field(default=0, ge=0)
    cached_tokens: int = Field(default=0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _fill_total(cls, data: Any) -> Any:
        if isinstance(data, dict):
            # pydantic's lax int takes True as 1; a bool is never a count (loom_protocol.is_int).
            for name in _COUNTS:
                if type(data.get(name)) is bool:
                    raise ValueError(f"{name} must be an int, not a bool")
        # Some providers omit the total; derive it rather than report 0.
        if isinstance(data, dict) and not data.get("total_tokens"):
            prompt = data.get("prompt_tokens") or 0
            completion = data.get("completion_tokens") or 0
            if isinstance(prompt, int) and isinstance(completion, int):
                data = {**data, "total_tokens": prompt + completion}
        return data

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
            cached_tokens=self.cached_tokens + other.cached_tokens,
        )


class ChatRequest(BaseModel):
    """One chat completion request, provider-neutral.

    Attributes:
        model: The model name as the provider knows it.
        messages: The conversation, at least one message.
        temperature: Sampling temperature within [0, 2].
        max_tokens: Upper bound on generated tokens, > 0.
        response_format: OpenAI-style ``{"type": "json_object"}`` or
            ``{"type": "json_schema", "json_schema": {...}}``; ``None`` for free text.
        params: Further generation parameters passed through to the provider (top_p, seed…).
    """

    model_config = ConfigDict(frozen=True)

    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    # Strict: a bool (or a numeric string) is no number here either; an int temperature is fine.
    temperature: float | None = Field(default=None, ge=0.0, le=2.0, strict=True)
    max_tokens: int | None = Field(default=None, gt=0, strict=True)
    response_format: dict[str, Any] | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class ChatResponse(BaseModel):
    """One provider answer.

    ``content`` is the answer text (``""`` when the provider returned none, never ``"None"``);
    ``finish_reason`` is ``"length"`` when the answer was cut off by the token limit;
    ``rate_limit`` is what the provider's headers said of its rate limits (``None`` when it
    sent none: vLLM, Ollama, a callable).
    """

    model_config = ConfigDict(frozen=True)

    content: str = ""
    reasoning: str | None = None
    usage: Usage | None = None
    finish_reason: str | None = None
    model: str | None = None
    rate_limit: RateLimitInfo | None = None
