"""Error codes, the ``Error`` record and Loom's exception tree.

Every exception Loom raises derives from one root::

    LoomError                 root of everything Loom raises
    ├── LoomUsageError        misuse, raised at once (bad template, unknown backend, bad schema…)
    ├── BackendError          a provider call failed: an ``Error``, ``retryable``, ``retry_after``
    └── StoreError            the result store failed (unreachable, schema mismatch, write failed)

Per-task problems inside a batch never raise: they become a failed ``TaskResult`` whose
``error`` is an :class:`Error` with an :class:`ErrorCode`.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from ._ratelimits import RateLimitInfo

__all__ = [
    "BackendError",
    "Error",
    "ErrorCode",
    "LoomError",
    "LoomUsageError",
    "StoreError",
]


class ErrorCode(StrEnum):
    """Why a task failed. The value is the stable, JSON-facing name."""

    INPUT_INVALID = "input_invalid"
    TEMPLATE_ERROR = "template_error"
    IMAGE_UNREADABLE = "image_unreadable"
    PROVIDER_AUTH = "provider_auth"
    PROVIDER_BAD_REQUEST = "provider_bad_request"
    PROVIDER_RATE_LIMITED = "provider_rate_limited"
    PROVIDER_TIMEOUT = "provider_timeout"
    PROVIDER_UNAVAILABLE = "provider_unavailable"
    PROVIDER_ERROR = "provider_error"
    JSON_INVALID = "json_invalid"
    VALIDATION_FAILED = "validation_failed"
    CANCELLED = "cancelled"
    STORE_ERROR = "store_error"
    INTERNAL = "internal"
    #: Not called: the batch's ``max_cost`` or ``max_tokens_total`` was reached. Never stored,
    #: so a run with a higher cap calls it.
    BUDGET_EXCEEDED = "budget_exceeded"


class Error(BaseModel):
    """A structured, JSON-serializable description of one failure.

    Attributes:
        code: The error class.
        message: One line a person can act on.
        detail: Supporting text: a traceback, a provider's response body, a validation report.
        retryable: Whether trying the same call again may succeed.
        status: The HTTP status, when the failure came from an HTTP answer.
    """

    model_config = ConfigDict(frozen=True)

    code: ErrorCode
    message: str = Field(min_length=1)
    detail: str | None = None
    retryable: bool = False
    status: int | None = Field(default=None, ge=100, le=599)

    def __str__(self) -> str:
        status = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{self.code.value}{status}: {self.message}"


class LoomError(Exception):
    """Root of every exception Loom raises."""


class LoomUsageError(LoomError, ValueError):
    """Loom was misused or misconfigured; raised at once, never turned into a task result."""


class BackendError(LoomError):
    """A provider call failed.

    Args:
        error: The structured description (its ``code`` and ``retryable`` drive the engine).
        retry_after: Seconds the provider asked us to wait before trying again, if it said.
        rate_limit: What the refusal's headers said of the provider's rate limits, if any.
    """

    def __init__(
        self,
        error: Error,
        *,
        retry_after: float | None = None,
        rate_limit: RateLimitInfo | None = None,
    ) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after
        self.rate_limit = rate_limit

    @property
    def code(self) -> ErrorCode:
        """The error's code."""
        return self.error.code

    @property
    def retryable(self) -> bool:
        """Whether the engine may try the call again."""
        return self.error.retryable

    @property
    def status(self) -> int | None:
        """The HTTP status, when there is one."""
        return self.error.status

    def __repr__(self) -> str:
        return f"BackendError({self.error!s}, retry_after={self.retry_after!r})"

    def __reduce__(self) -> tuple[object, ...]:
        # Keep the exception picklable (it crosses process and thread boundaries).
        limits = None if self.rate_limit is None else self.rate_limit.model_dump()
        return (_rebuild_backend_error, (self.error.model_dump(), self.retry_after, limits))


def _rebuild_backend_error(
    error: dict[str, object],
    retry_after: float | None,
    rate_limit: dict[str, object] | None = None,
) -> BackendError:
    limits = None if rate_limit is None else RateLimitInfo.model_validate(rate_limit)
    return BackendError(Error.model_validate(error), retry_after=retry_after, rate_limit=limits)


class StoreError(LoomError):
    """The result store failed: unreachable, a schema mismatch, or a write that did not commit."""
