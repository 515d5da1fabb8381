"""Shared fixtures of the loom-protocol tests (they import only loom_protocol, pydantic, stdlib)."""

from __future__ import annotations

import pytest

from loom_protocol import Error, ErrorCode, Usage


@pytest.fixture
def rate_limited() -> Error:
    """A retryable provider error with every field set."""
    return Error(
        code=ErrorCode.PROVIDER_RATE_LIMITED,
        message="rate limit reached for requests",
        detail='{"error": {"message": "Rate limit reached", "type": "requests"}}',
        retryable=True,
        status=429,
    )


@pytest.fixture
def usage() -> Usage:
    """Token counts of one call."""
    return Usage(prompt_tokens=12, completion_tokens=30, total_tokens=42)
