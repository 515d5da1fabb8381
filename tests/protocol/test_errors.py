"""Error, ErrorCode, the exception tree and the Backend protocol."""

from __future__ import annotations

import importlib
import pickle

import pytest

from loom_protocol import (
    PROTOCOL_VERSION,
    Backend,
    BackendError,
    ChatRequest,
    ChatResponse,
    Error,
    ErrorCode,
    LoomError,
    LoomUsageError,
    StoreError,
)

# DESIGN §2: the stable, JSON-facing names.
DESIGN_CODES = [
    "input_invalid",
    "template_error",
    "image_unreadable",
    "provider_auth",
    "provider_bad_request",
    "provider_rate_limited",
    "provider_timeout",
    "provider_unavailable",
    "provider_error",
    "json_invalid",
    "validation_failed",
    "cancelled",
    "store_error",
    "internal",
    # Issue 15, additive: a task the batch's max_cost / max_tokens_total did not call.
    "budget_exceeded",
]


def test_error_codes_are_exactly_the_designed_ones() -> None:
    assert [code.value for code in ErrorCode] == DESIGN_CODES
    assert ErrorCode("provider_auth") is ErrorCode.PROVIDER_AUTH
    assert ErrorCode.PROVIDER_AUTH == "provider_auth"


def test_str_of_error_reads_well(rate_limited: Error) -> None:
    assert str(rate_limited) == "provider_rate_limited (HTTP 429): rate limit reached for requests"
    plain = Error(code=ErrorCode.TEMPLATE_ERROR, message="'title' is undefined")
    assert str(plain) == "template_error: 'title' is undefined"
    # The detail (a traceback, a provider body) stays out of the one-line form.
    assert "Rate limit reached" not in str(rate_limited)


def test_backend_error_keeps_its_fields(rate_limited: Error) -> None:
    exc = BackendError(rate_limited, retry_after=2.5)
    assert exc.error is rate_limited
    assert exc.code is ErrorCode.PROVIDER_RATE_LIMITED
    assert exc.retryable is True
    assert exc.status == 429
    assert exc.retry_after == 2.5
    assert str(exc) == str(rate_limited)
    assert "retry_after=2.5" in repr(exc)


def test_backend_error_without_status_or_retry_after() -> None:
    exc = BackendError(
        Error(code=ErrorCode.PROVIDER_TIMEOUT, message="read timed out", retryable=True)
    )
    assert exc.status is None
    assert exc.retry_after is None
    assert exc.retryable is True


@pytest.mark.parametrize("retry_after", [None, 0.0, 30.0])
def test_backend_error_pickles(rate_limited: Error, retry_after: float | None) -> None:
    exc = BackendError(rate_limited, retry_after=retry_after)
    restored = pickle.loads(pickle.dumps(exc))
    assert type(restored) is BackendError
    assert restored.error == rate_limited
    assert (restored.code, restored.retryable, restored.status, restored.retry_after) == (
        ErrorCode.PROVIDER_RATE_LIMITED,
        True,
        429,
        retry_after,
    )
    assert str(restored) == str(exc)


def test_other_loom_errors_pickle() -> None:
    for exc in (LoomUsageError("bad template"), StoreError("database is locked")):
        restored = pickle.loads(pickle.dumps(exc))
        assert type(restored) is type(exc)
        assert str(restored) == str(exc)


@pytest.mark.parametrize("cls", [LoomUsageError, BackendError, StoreError])
def test_exception_tree(cls: type[Exception]) -> None:
    assert issubclass(cls, LoomError)
    assert issubclass(LoomError, Exception)


def test_every_loom_error_is_caught_by_the_root(rate_limited: Error) -> None:
    for exc in (LoomUsageError("x"), BackendError(rate_limited), StoreError("y")):
        with pytest.raises(LoomError):
            raise exc


def test_tree_is_drawn_in_the_errors_module_docstring() -> None:
    module = importlib.import_module(BackendError.__module__)
    assert module.__doc__ is not None
    for name in ("LoomError", "LoomUsageError", "BackendError", "StoreError"):
        assert name in module.__doc__


class _EchoBackend:
    async def acomplete(self, request: ChatRequest) -> ChatResponse:
        return ChatResponse(content=str(request.messages[-1].content), model=request.model)

    async def aclose(self) -> None:
        pass


class _SyncOnly:
    def complete(self, request: ChatRequest) -> ChatResponse:
        return ChatResponse()

    def close(self) -> None:
        pass


def test_backend_protocol_is_structural() -> None:
    assert isinstance(_EchoBackend(), Backend)
    assert not isinstance(_SyncOnly(), Backend)


def test_backend_protocol_is_async_only() -> None:
    # PROTOCOL_VERSION 2.0: acomplete + aclose are the whole contract.
    members = {name for name in vars(Backend) if not name.startswith("_")}
    assert members == {"acomplete", "aclose"}
    assert PROTOCOL_VERSION == "2.1"
