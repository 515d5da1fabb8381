"""What a provider said about its rate limits in one answer's headers, provider-neutral.

Backends parse the headers (OpenAI's ``x-ratelimit-*``, Anthropic's ``anthropic-ratelimit-*``)
into a :class:`RateLimitInfo` carried by :class:`~loom_protocol.ChatResponse` and by
:class:`~loom_protocol.BackendError`; the engine paces itself from it. Every field is optional:
providers send some dimensions and not others, and a header that does not parse is left out.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["RateLimitInfo", "RateLimitWindow"]


class RateLimitWindow(BaseModel):
    """One limited dimension (requests, tokens…) as the provider reported it.

    Attributes:
        limit: The most the provider allows per its window (per minute for the usual limits).
        remaining: What is left of it now.
        reset_s: Seconds, from when the answer arrived, until the budget is full again.
    """

    model_config = ConfigDict(frozen=True)

    limit: int | None = Field(default=None, ge=0, strict=True)
    remaining: int | None = Field(default=None, ge=0, strict=True)
    reset_s: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)


class RateLimitInfo(BaseModel):
    """The rate limits a provider reported with one answer (or one refusal).

    Attributes:
        requests: The request budget (OpenAI ``x-ratelimit-*-requests``, Anthropic
            ``anthropic-ratelimit-requests-*``).
        tokens: The token budget (OpenAI ``x-ratelimit-*-tokens``, Anthropic
            ``anthropic-ratelimit-tokens-*``).
        input_tokens: Anthropic's input-token budget, when reported apart.
        output_tokens: Anthropic's output-token budget, when reported apart.
    """

    model_config = ConfigDict(frozen=True)

    requests: RateLimitWindow | None = None
    tokens: RateLimitWindow | None = None
    input_tokens: RateLimitWindow | None = None
    output_tokens: RateLimitWindow | None = None
