"""An in-process provider Batch API for the engine's batch tests, and a loom factory.

``BatchFake`` implements :class:`~loom_protocol.ProviderBatchBackend` (and ``Backend``) in
memory, scriptable per test: how many polls until a batch finishes, what share of a batch
finishes before it expires, requests that error, shuffled outcomes, failing calls. Every
submission is recorded, so a test counts double submissions directly. The HTTP path is tested
apart, against FakeLLMServer (tests/integration/test_batch_fake_server.py).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from loom_core import BatchPolicy, TaskLoom
from loom_protocol import (
    BackendError,
    ChatRequest,
    ChatResponse,
    Error,
    ErrorCode,
    ProviderBatchCounts,
    ProviderBatchInfo,
    ProviderBatchItem,
    ProviderBatchLimits,
    ProviderBatchLine,
    ProviderBatchState,
    Usage,
)

Answer = Callable[[ChatRequest], str]

FAST = BatchPolicy(poll_interval=0.001, poll_max=0.01, submit_timeout=0.2, clock_skew=0.05)


def echo(request: ChatRequest) -> str:
    """``{"text": <the last user message>}``."""
    text = request.messages[-1].content
    return json.dumps({"text": text})


@dataclass
class FakeBatch:
    batch_id: str
    lines: list[dict[str, Any]]
    metadata: dict[str, str]
    created_at: datetime
    polls_left: int
    state: ProviderBatchState = ProviderBatchState.IN_PROGRESS
    outcomes: list[ProviderBatchItem] = field(default_factory=list)


class BatchFake:
    """A provider with a Batch API, in memory (see the module docstring).

    Attributes:
        submissions: Every successful submit: (batch id, its custom_ids).
        calls: Every call made, by method name.
        polls: Polls before a batch finishes.
        finish_share: The share of each batch answered before it ends; the rest expires.
        end_state: How a batch with ``finish_share < 1`` ends (expired, cancelled).
        errors: custom_id index (its 6-digit suffix) -> the error its request gets.
        fail: Method name -> errors its next calls raise, in order.
        keeps_metadata: Whether batches keep their metadata (OpenAI) or not (Anthropic).
    """

    def __init__(
        self,
        answer: Answer = echo,
        *,
        limits: ProviderBatchLimits | None = None,
        keeps_metadata: bool = True,
    ) -> None:
        self.answer = answer
        self.limits = limits or ProviderBatchLimits(max_requests=50_000, max_bytes=200_000_000)
        self.keeps_metadata = keeps_metadata
        self.batches: dict[str, FakeBatch] = {}
        self.submissions: list[tuple[str, list[str]]] = []
        self.calls: dict[str, int] = {}
        self.polls = 1
        self.finish_share = 1.0
        self.end_state = ProviderBatchState.EXPIRED
        self.errors: dict[int, Error] = {}
        self.fail: dict[str, list[BackendError]] = {}
        #: Errors the next submits raise after creating their batch (a lost answer).
        self.lose_answer: list[BackendError] = []
        self.shuffle = True
        #: Fail whole batches (no results) with this error, as a file that does not validate.
        self.fail_whole: Error | None = None
        self.usage = Usage(prompt_tokens=3, completion_tokens=2)

    # -- Backend -----------------------------------------------------------------------------

    async def acomplete(self, request: ChatRequest) -> ChatResponse:
        self._count("acomplete")
        return ChatResponse(content=self.answer(request), usage=self.usage, model=request.model)

    async def aclose(self) -> None:
        return None

    # -- ProviderBatchBackend ----------------------------------------------------------------

    @property
    def batch_limits(self) -> ProviderBatchLimits:
        return self.limits

    def encode_line(self, line: ProviderBatchLine) -> bytes:
        body = {"custom_id": line.custom_id, "body": line.request.model_dump(mode="json")}
        return json.dumps(body).encode() + b"\n"

    async def asubmit_batch(
        self, encoded: Sequence[bytes], *, metadata: dict[str, str]
    ) -> ProviderBatchInfo:
        self._count("asubmit_batch")
        assert len(encoded) <= self.limits.max_requests
        assert sum(map(len, encoded)) <= self.limits.max_bytes
        batch_id = f"batch_{len(self.batches):05d}"
        lines = [json.loads(line) for line in encoded]
        batch = FakeBatch(
            batch_id,
            lines,
            dict(metadata) if self.keeps_metadata else {},
            datetime.now(UTC),
            self.polls,
        )
        self.batches[batch_id] = batch
        self.submissions.append((batch_id, [line["custom_id"] for line in lines]))
        if self.lose_answer:
            raise self.lose_answer.pop(0)
        return self._info(batch)

    async def aget_batch(self, batch_id: str) -> ProviderBatchInfo:
        self._count("aget_batch")
        batch = self.batches[batch_id]
        if batch.state == ProviderBatchState.IN_PROGRESS:
            batch.polls_left -= 1
            if batch.polls_left <= 0:
                self._finish(batch, self.finish_share, self.end_state)
        return self._info(batch)

    async def alist_batches(self, *, created_after: datetime) -> list[ProviderBatchInfo]:
        self._count("alist_batches")
        found = [b for b in self.batches.values() if b.created_at >= created_after]
        return [self._info(b) for b in reversed(found)]

    async def acancel_batch(self, batch_id: str) -> ProviderBatchInfo:
        self._count("acancel_batch")
        batch = self.batches[batch_id]
        if batch.state == ProviderBatchState.IN_PROGRESS:
            self._finish(batch, 0.0, ProviderBatchState.CANCELLED)
        return self._info(batch)

    async def aresults(self, batch_id: str) -> list[ProviderBatchItem]:
        self._count("aresults")
        return list(self.batches[batch_id].outcomes)

    # -- internals ---------------------------------------------------------------------------

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        pending = self.fail.get(name)
        if pending:
            raise pending.pop(0)

    def _finish(self, batch: FakeBatch, share: float, end: ProviderBatchState) -> None:
        if self.fail_whole is not None:
            batch.state = ProviderBatchState.FAILED
            return
        done = math.ceil(len(batch.lines) * share)
        outcomes = []
        for n, line in enumerate(batch.lines):
            cid = line["custom_id"]
            index = int(cid.rsplit("-", 1)[1])
            if n >= done:
                detail = "expired" if end == ProviderBatchState.EXPIRED else "cancelled"
                error = Error(
                    code=ErrorCode.PROVIDER_UNAVAILABLE,
                    message=f"the request {detail}",
                    retryable=True,
                    detail=detail,
                )
                outcomes.append(ProviderBatchItem(custom_id=cid, error=error))
            elif index in self.errors:
                outcomes.append(ProviderBatchItem(custom_id=cid, error=self.errors[index]))
            else:
                request = ChatRequest.model_validate(line["body"])
                response = ChatResponse(
                    content=self.answer(request), usage=self.usage, model=request.model
                )
                outcomes.append(ProviderBatchItem(custom_id=cid, response=response))
        if self.shuffle:
            random.Random(len(outcomes)).shuffle(outcomes)
        batch.outcomes = outcomes
        batch.state = ProviderBatchState.COMPLETED if share >= 1.0 else end

    def _info(self, batch: FakeBatch) -> ProviderBatchInfo:
        ok = sum(o.response is not None for o in batch.outcomes)
        expired = sum(o.error is not None and o.error.detail == "expired" for o in batch.outcomes)
        cancelled = sum(
            o.error is not None and o.error.detail == "cancelled" for o in batch.outcomes
        )
        failed = len(batch.outcomes) - ok - expired - cancelled
        total = len(batch.lines)
        counts = ProviderBatchCounts(
            total=total,
            processing=total - len(batch.outcomes),
            succeeded=ok,
            failed=failed,
            expired=expired,
            cancelled=cancelled,
        )
        return ProviderBatchInfo(
            batch_id=batch.batch_id,
            state=batch.state,
            provider_status=batch.state.value,
            counts=counts,
            created_at=batch.created_at,
            metadata=batch.metadata,
            results_ready=batch.state.is_final,
            error=self.fail_whole if batch.state == ProviderBatchState.FAILED else None,
        )


@pytest.fixture
def provider() -> BatchFake:
    return BatchFake()


LoomFactory = Callable[..., TaskLoom[Any]]


@pytest.fixture
def make_loom(tmp_path: Path) -> Iterator[LoomFactory]:
    """Looms on a BatchFake with the fast batch policy, closed after the test."""
    made: list[TaskLoom[Any]] = []

    def factory(backend: Any, **kwargs: Any) -> TaskLoom[Any]:
        kwargs.setdefault("prompt_template", "{{ text }}")
        kwargs.setdefault("db_path", tmp_path / "loom.db")
        kwargs.setdefault("batch_policy", FAST)
        kwargs.setdefault("response_model", dict)
        loom: TaskLoom[Any] = TaskLoom("fake-model", backend=backend, **kwargs)
        made.append(loom)
        return loom

    yield factory
    for loom in made:
        loom.close()
