"""The provider batches FakeLLMServer keeps: what was submitted, how far each has run.

Pure state, no HTTP: ``_batch_app`` reads requests, calls into this module and renders the
provider's JSON. A batch runs lazily: each time someone looks at it (a poll, a list, a results
download, a cancel), the requests whose scheduled time has passed are answered by the server's
handler, so counts move over time as at a real provider, and a request that never came due
(the batch expired or was cancelled first) never reaches the handler.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from loom_protocol import LoomUsageError, check_int, check_non_negative_number, check_number

__all__ = ["BatchPlan", "FakeBatch", "FakeFile", "Outcome", "Provider"]

Provider = Literal["openai", "anthropic"]

#: The real per-batch limits: OpenAI 50,000 requests / 200 MB per input file; Anthropic
#: 100,000 requests / 256 MB per request body.
REAL_LIMITS: dict[str, tuple[int, int]] = {
    "openai": (50_000, 200 * 1024 * 1024),
    "anthropic": (100_000, 256 * 1024 * 1024),
}
DAY = 24 * 3600


@dataclass(frozen=True)
class BatchPlan:
    """How FakeLLMServer's Batch APIs (OpenAI Batch, Anthropic Message Batches) behave.

    Every request of a batch is answered by the server's handler, as an online request is
    (scripted replies, error statuses, JSON answers and the content faults of a FaultPlan all
    apply); a non-200 reply becomes an errored line.

    Attributes:
        complete_after: Seconds from creation until every request has run; requests come due
            evenly over that time, so the counts move while a client polls. ``0`` runs them
            all at the first look.
        expire_after_fraction: Expire the batch once this share of its requests has run
            (``0.6``: 60 % answered, the rest expired); ``None`` never expires.
        shuffle: Write results in a shuffled order (real providers do not keep order).
        max_bytes: An OpenAI file upload or an Anthropic create body larger than this is
            answered 413; ``None`` is the real limit (200 MB, 256 MB).
        max_requests: Requests allowed per batch (an OpenAI batch over it fails validation,
            an Anthropic create is answered 400); ``None`` is the real limit (50,000, 100,000).
        poll_failures: The next this-many reads (batch, list, file, results) are answered
            ``poll_failure_status`` before the server answers normally again.
        poll_failure_status: The status of those failed reads.
        cancel_after: Seconds a cancelled batch stays ``cancelling`` (``0``: until the next look).
    """

    complete_after: float = 0.0
    expire_after_fraction: float | None = None
    shuffle: bool = False
    max_bytes: int | None = None
    max_requests: int | None = None
    poll_failures: int = 0
    poll_failure_status: int = 503
    cancel_after: float = 0.0

    def __post_init__(self) -> None:
        check_non_negative_number("BatchPlan.complete_after", self.complete_after, " of seconds")
        check_non_negative_number("BatchPlan.cancel_after", self.cancel_after, " of seconds")
        if self.expire_after_fraction is not None:
            check_number("BatchPlan.expire_after_fraction", self.expire_after_fraction, 0.0, 1.0)
        if not isinstance(self.shuffle, bool):
            raise LoomUsageError(f"BatchPlan.shuffle must be a bool, got {self.shuffle!r}")
        for name in ("max_bytes", "max_requests"):
            if getattr(self, name) is not None:
                check_int(f"BatchPlan.{name}", getattr(self, name), 1)
        check_int("BatchPlan.poll_failures", self.poll_failures, 0)
        check_int("BatchPlan.poll_failure_status", self.poll_failure_status, 400)
        if self.poll_failure_status > 599:
            raise LoomUsageError(
                f"BatchPlan.poll_failure_status must be an HTTP error status, got "
                f"{self.poll_failure_status}"
            )

    def limits(self, provider: Provider) -> tuple[int, int]:
        """The (requests, bytes) limits this plan applies to ``provider``'s batches."""
        requests, size = REAL_LIMITS[provider]
        return self.max_requests or requests, self.max_bytes or size


@dataclass(frozen=True)
class FakeFile:
    """An uploaded (or produced) OpenAI file."""

    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int


#: How one request of a batch ended: (HTTP status, answer body) or "expired" / "cancelled".
Outcome = tuple[int, Any] | Literal["expired", "cancelled"]

#: Answers one request: (line body, headers of the submission) → (status, answer body).
Answer = Callable[[str, dict[str, Any], dict[str, str]], Awaitable[tuple[int, Any]]]


@dataclass
class FakeBatch:
    """One provider batch and how far it has run."""

    id: str
    provider: Provider
    created_at: float
    #: (custom_id, body) of each request, in submission order.
    lines: list[tuple[str, dict[str, Any]]]
    plan: BatchPlan
    headers: dict[str, str]
    path: str  # the endpoint each line goes to
    input_file_id: str | None = None
    metadata: dict[str, str] | None = None
    #: Indexes into ``lines`` in the order they run (and are written out).
    order: list[int] = field(default_factory=list)
    outcomes: dict[int, Outcome] = field(default_factory=dict)
    status: str = "in_progress"  # the provider-neutral state of the fake
    ended_at: float | None = None
    cancel_at: float | None = None  # when cancelling turns into cancelled
    cancel_requested_at: float | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)  # OpenAI validation errors
    output_file_id: str | None = None
    error_file_id: str | None = None
    seen: bool = False  # looked at once (OpenAI: "validating" until then)
    #: Serializes advance() on the server's loop: two polls at once must not run a request twice.
    guard: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def final(self) -> bool:
        return self.status in ("completed", "expired", "cancelled", "failed")

    def counts(self) -> dict[str, int]:
        """Requests per outcome: ok, errored, expired, cancelled, processing."""
        ok = errored = expired = cancelled = 0
        for outcome in self.outcomes.values():
            if outcome == "expired":
                expired += 1
            elif outcome == "cancelled":
                cancelled += 1
            elif outcome[0] == 200:
                ok += 1
            else:
                errored += 1
        done = ok + errored + expired + cancelled
        processing = 0 if self.status == "failed" else len(self.lines) - done
        return {
            "ok": ok,
            "errored": errored,
            "expired": expired,
            "cancelled": cancelled,
            "processing": processing,
        }

    def _due(self, now: float) -> int:
        """How many requests should have run by ``now``."""
        total = len(self.lines)
        if self.plan.complete_after <= 0:
            return total
        share = (now - self.created_at) / self.plan.complete_after
        return min(total, max(0, math.floor(total * share)))

    async def advance(self, now: float, answer: Answer) -> None:
        """Run every request due by ``now``; expire, cancel or complete the batch when due."""
        self.seen = True
        if self.final:
            return
        total = len(self.lines)
        if self.status == "cancelling":
            if self.cancel_at is not None and now >= self.cancel_at:
                self._finish("cancelled", now)
            return
        due = self._due(now)
        fraction = self.plan.expire_after_fraction
        limit = total if fraction is None else math.floor(total * fraction)
        for position in range(len(self.outcomes), min(due, limit)):
            index = self.order[position]
            body = self.lines[index][1]
            self.outcomes[index] = await answer(self.path, body, self.headers)
        if len(self.outcomes) >= total:
            self._finish("completed", now)
        elif fraction is not None and due >= limit:
            self._finish("expired", now)

    def cancel(self, now: float) -> None:
        """Start cancelling: nothing more runs; it is cancelled after ``plan.cancel_after``."""
        if self.final or self.status == "cancelling":
            return
        self.status = "cancelling"
        self.cancel_requested_at = now
        self.cancel_at = now + self.plan.cancel_after

    def fail(self, errors: list[dict[str, Any]], now: float) -> None:
        """Fail validation (OpenAI): no request runs."""
        self.errors = errors
        self.status = "failed"
        self.ended_at = now

    def _finish(self, status: str, now: float) -> None:
        leftover: Outcome = "cancelled" if status == "cancelled" else "expired"
        for index in self.order:
            self.outcomes.setdefault(index, leftover)
        self.status = status
        self.ended_at = now

    def results(self) -> list[tuple[str, Outcome]]:
        """(custom_id, outcome) of every request that has an outcome, in output order."""
        return [(self.lines[i][0], self.outcomes[i]) for i in self.order if i in self.outcomes]


class BatchBook:
    """Every file and batch of one server, thread-safe (the admin side reads it too)."""

    def __init__(self, plan: BatchPlan, seed: int | None) -> None:
        self.plan = plan
        self.lock = threading.Lock()
        self.files: dict[str, FakeFile] = {}
        self.batches: dict[str, FakeBatch] = {}
        self.failures_left = plan.poll_failures
        self.rng = random.Random(seed)

    def set_plan(self, plan: BatchPlan) -> None:
        """Use ``plan`` for batches created from now on (and reset the poll failures)."""
        with self.lock:
            self.plan = plan
            self.failures_left = plan.poll_failures

    def take_failure(self) -> int | None:
        """The status to fail this read with, while the plan's poll failures last."""
        with self.lock:
            if self.failures_left > 0:
                self.failures_left -= 1
                return self.plan.poll_failure_status
            return None

    def add_file(self, filename: str, purpose: str, data: bytes, now: float) -> FakeFile:
        item = FakeFile(f"file-{uuid.uuid4().hex[:24]}", filename, purpose, data, int(now))
        with self.lock:
            self.files[item.id] = item
        return item

    def add_batch(
        self,
        provider: Provider,
        lines: list[tuple[str, dict[str, Any]]],
        headers: dict[str, str],
        path: str,
        now: float,
        **extra: Any,
    ) -> FakeBatch:
        prefix = "batch_" if provider == "openai" else "msgbatch_"
        with self.lock:
            order = list(range(len(lines)))
            if self.plan.shuffle:
                self.rng.shuffle(order)
            batch = FakeBatch(
                id=f"{prefix}{uuid.uuid4().hex[:24]}",
                provider=provider,
                created_at=now,
                lines=lines,
                plan=self.plan,
                headers=headers,
                path=path,
                order=order,
                **extra,
            )
            self.batches[batch.id] = batch
        return batch

    def listed(self, provider: Provider) -> list[FakeBatch]:
        """``provider``'s batches, newest first."""
        with self.lock:
            batches = [b for b in self.batches.values() if b.provider == provider]
        # Creation order breaks ties between batches created in the same instant.
        ranked = list(enumerate(batches))
        ranked.sort(key=lambda pair: (pair[1].created_at, pair[0]), reverse=True)
        return [b for _, b in ranked]
