"""What the conformance suite's two halves share: the contract's key and request."""

from __future__ import annotations

from typing import Any

from loom_protocol import ChatRequest, Message

__all__ = ["CONTRACT_API_KEY", "contract_request"]

#: A recognisable fake key: no test may find it in an error, a repr or a log record.
CONTRACT_API_KEY = "sk-loom-test-SECRET-0123456789abcdef"


def contract_request(text: str = "hello", **kwargs: Any) -> ChatRequest:
    """A request with a system prompt and one user message (``kwargs`` go to ChatRequest)."""
    return ChatRequest(
        model="test-model",
        messages=[Message(role="system", content="be brief"), Message(role="user", content=text)],
        **kwargs,
    )
