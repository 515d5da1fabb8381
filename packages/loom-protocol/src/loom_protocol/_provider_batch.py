"""The contract of a provider's Batch API (OpenAI Batch, Anthropic Message Batches).

A backend that can run requests through its provider's Batch API implements
:class:`ProviderBatchBackend` beside :class:`~loom_protocol.Backend`. The engine owns the job:
it splits requests to :attr:`ProviderBatchBackend.batch_limits` by the encoded size of each line,
records every provider batch in the store before a submit returns, polls, matches answers by
``custom_id`` (providers do not keep order) and resubmits only what did not finish. A backend
only speaks the provider's protocol: it never retries, never sleeps and never keeps state
between calls, so a process killed at any moment leaves nothing a later process cannot rebuild
from the store and the provider.

These names start with ``ProviderBatch`` because ``BatchResult`` already names the result of
one ``map``; a *provider batch* is one job at the provider (one file of up to 50,000 requests at
OpenAI), and one ``map(batch=True)`` may need several.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from ._chat import ChatRequest, ChatResponse
from ._errors import Error

__all__ = [
    "ProviderBatchBackend",
    "ProviderBatchCounts",
    "ProviderBatchInfo",
    "ProviderBatchItem",
    "ProviderBatchLimits",
    "ProviderBatchLine",
    "ProviderBatchState",
]


class ProviderBatchState(StrEnum):
    """A provider batch's state, the same names for every provider.

    ``in_progress`` covers OpenAI's ``validating``/``in_progress``/``finalizing`` and
    Anthropic's ``in_progress``; ``cancelling`` covers both providers' cancelling states.
    The four others are final: no answer changes after them.
    """

    IN_PROGRESS = "in_progress"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        """Whether the provider will not change this batch any more."""
        return self in _FINAL


_FINAL = frozenset(
    {
        ProviderBatchState.COMPLETED,
        ProviderBatchState.EXPIRED,
        ProviderBatchState.CANCELLED,
        ProviderBatchState.FAILED,
    }
)


class ProviderBatchLimits(BaseModel):
    """The most one provider batch may hold (the engine splits requests to these).

    Attributes:
        max_requests: Requests per provider batch (OpenAI 50,000; Anthropic 100,000).
        max_bytes: Bytes of encoded lines per provider batch (OpenAI 200 MB per file;
            Anthropic 256 MB per request body), counted with
            :meth:`ProviderBatchBackend.encode_line`.
    """

    model_config = ConfigDict(frozen=True)

    max_requests: int = Field(gt=0)
    max_bytes: int = Field(gt=0)


class ProviderBatchLine(BaseModel):
    """One request of a provider batch, named by the ``custom_id`` its answer comes back with.

    Attributes:
        custom_id: Unique within the provider batch; at most 64 characters of
            ``[A-Za-z0-9_-]`` (Anthropic's rule, the stricter of the two).
        request: The request, exactly as it would be sent online.
    """

    model_config = ConfigDict(frozen=True)

    custom_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    request: ChatRequest


class ProviderBatchCounts(BaseModel):
    """How many requests of one provider batch are in each state, as the provider reports."""

    model_config = ConfigDict(frozen=True)

    total: int = Field(default=0, ge=0)
    processing: int = Field(default=0, ge=0)
    succeeded: int = Field(default=0, ge=0)
    failed: int = Field(default=0, ge=0)
    expired: int = Field(default=0, ge=0)
    cancelled: int = Field(default=0, ge=0)


class ProviderBatchInfo(BaseModel):
    """What the provider says about one provider batch.

    Attributes:
        batch_id: The provider's id of the batch.
        state: The normalized state.
        provider_status: The provider's own status word (``"finalizing"``, ``"ended"``, ...).
        counts: Requests per state.
        input_file_id: The uploaded input file (OpenAI), ``None`` where there is none.
        created_at: When the provider created the batch.
        expires_at: When the provider will expire it, if it says.
        metadata: The metadata the batch was created with (OpenAI); ``{}`` where the provider
            keeps none (Anthropic).
        results_ready: Whether :meth:`ProviderBatchBackend.aresults` can be read now.
        error: Why the provider failed the whole batch (state ``failed``: a file that did not
            validate, a quota reached), classified with the online error codes; ``None``
            otherwise.
    """

    model_config = ConfigDict(frozen=True)

    batch_id: str = Field(min_length=1)
    state: ProviderBatchState
    provider_status: str
    counts: ProviderBatchCounts = Field(default_factory=ProviderBatchCounts)
    input_file_id: str | None = None
    created_at: datetime | None = None
    expires_at: datetime | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    results_ready: bool = False
    error: Error | None = None


class ProviderBatchItem(BaseModel):
    """The outcome of one request of a provider batch, matched to its line by ``custom_id``.

    Exactly one of ``response`` and ``error`` is set. A request that did not run because the
    batch expired or was cancelled is an ``error`` whose ``retryable`` is true and whose
    ``detail`` is ``"expired"`` or ``"cancelled"``: the engine sends it again in a new batch.

    Attributes:
        custom_id: The line's ``custom_id``.
        response: The answer, read exactly as an online answer is read (truncation, reasoning,
            usage), when the request succeeded.
        error: Why it failed, classified with the online error codes.
    """

    model_config = ConfigDict(frozen=True)

    custom_id: str
    response: ChatResponse | None = None
    error: Error | None = None


@runtime_checkable
class ProviderBatchBackend(Protocol):
    """A backend whose provider runs requests through a Batch API.

    Every method raises :class:`~loom_protocol.BackendError` for a failed call (a 413 for a
    file that is too large is ``provider_bad_request``; 5xx and network errors are retryable)
    and never retries or sleeps: the engine polls and retries.
    """

    @property
    def batch_limits(self) -> ProviderBatchLimits:
        """The provider's limits for one provider batch."""
        ...

    def encode_line(self, line: ProviderBatchLine) -> bytes:
        """``line`` as the provider receives it (one JSONL line with its newline for OpenAI,
        one ``requests`` element for Anthropic); its length is what counts against
        :attr:`ProviderBatchLimits.max_bytes`."""
        ...

    async def asubmit_batch(
        self, encoded: Sequence[bytes], *, metadata: dict[str, str]
    ) -> ProviderBatchInfo:
        """Create one provider batch from lines made by :meth:`encode_line` (uploading the
        input file first where the provider needs one), tagged with ``metadata`` where the
        provider keeps it; return the created batch."""
        ...

    async def aget_batch(self, batch_id: str) -> ProviderBatchInfo:
        """The provider batch ``batch_id`` now."""
        ...

    async def alist_batches(self, *, created_after: datetime) -> list[ProviderBatchInfo]:
        """Every provider batch of this account created at or after ``created_after``
        (following the provider's pagination), newest first. Used to find a batch whose
        submit was interrupted before its id was recorded."""
        ...

    async def acancel_batch(self, batch_id: str) -> ProviderBatchInfo:
        """Ask the provider to cancel ``batch_id``; return the batch as it is then."""
        ...

    async def aresults(self, batch_id: str) -> list[ProviderBatchItem]:
        """Every outcome of ``batch_id`` so far, in the provider's (any) order: successes,
        errors, and the requests that expired or were cancelled."""
        ...
