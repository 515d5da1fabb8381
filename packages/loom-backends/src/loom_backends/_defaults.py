"""The backends' defaults, defined once: loom-core and the CLI import them from here."""

from __future__ import annotations

__all__ = [
    "ANTHROPIC_API_KEY_ENV",
    "ANTHROPIC_BASE_URL_ENV",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_TIMEOUT",
    "OPENAI_API_KEY_ENV",
    "OPENAI_BASE_URL_ENV",
]

#: Seconds allowed for each network phase of one provider call.
DEFAULT_TIMEOUT = 60.0
#: Connections per pool (one pool per event loop); the engine's in-flight limit is far lower.
DEFAULT_MAX_CONNECTIONS = 512

#: The environment variables the OpenAI-compatible backend reads when not given a value.
OPENAI_BASE_URL_ENV = "OPENAI_BASE_URL"
OPENAI_API_KEY_ENV = "OPENAI_API_KEY"
#: The environment variables the Anthropic backend reads when not given a value.
ANTHROPIC_BASE_URL_ENV = "ANTHROPIC_BASE_URL"
ANTHROPIC_API_KEY_ENV = "ANTHROPIC_API_KEY"
