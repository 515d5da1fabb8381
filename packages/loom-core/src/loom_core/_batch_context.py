"""What every step of a provider batch job shares: the loom's parts, the store, the policy.

A step (submit, find a lost submission, poll, collect) reads and writes the store in short
transactions on a thread (:meth:`JobContext.db`), never inside an HTTP call, and talks to the
provider through the backend, which never retries or sleeps: the steps decide that.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from loom_protocol import (
    Error,
    ErrorCode,
    ProviderBatchBackend,
    ProviderBatchInfo,
    TaskResult,
    Usage,
)
from loom_store import NewProviderBatch, ProviderItem, ResultStore

from ._batch_lines import Entry, Split, build_request, split_entries
from ._batch_policy import BatchPolicy
from ._images import ImageError
from ._persist import ResultCache
from ._render import TemplateRenderError
from ._task import TaskRunner

__all__ = ["JobContext", "job_log", "save_info"]

job_log = logging.getLogger("loom.batch")

R = TypeVar("R")


@dataclass(slots=True)
class JobContext:
    """One task name's provider batch job, as one loom sees it.

    Attributes:
        runner: The loom's task runner (requests, answer reader, model).
        backend: The loom's backend, which has a Batch API.
        cache: The store seen by this task name and configuration.
        policy: Poll intervals and the submit time-out.
        encoded: Lines this process built for batches it has not submitted yet, by token
            (a batch written by another process is built again from its items).
        cancel_sent: Batches this process asked the provider to cancel.
    """

    runner: TaskRunner
    backend: ProviderBatchBackend
    cache: ResultCache
    policy: BatchPolicy
    encoded: dict[str, list[bytes]] = field(default_factory=dict)
    cancel_sent: set[str] = field(default_factory=set)

    @property
    def store(self) -> ResultStore:
        return self.cache.store

    @property
    def task_name(self) -> str:
        return self.cache.task_name

    @property
    def config_fp(self) -> str:
        return self.cache.config_fp

    async def db(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """Run one store call on a thread (each is its own short transaction)."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    def rows(self, results: Sequence[TaskResult[Any]]) -> list[Any]:
        """The store rows of ``results``."""
        return [self.cache.to_row(result) for result in results]

    async def build(
        self, items: Sequence[ProviderItem], round_: int
    ) -> tuple[Split, list[TaskResult[Any]]]:
        """Build the requests of ``items`` and split them into batches of round ``round_``;
        the tasks that cannot be sent fail (a template or image problem, a request larger
        than a whole provider batch may be)."""
        entries: list[Entry] = []
        failures: list[TaskResult[Any]] = []
        for item in items:
            try:
                entries.append(Entry(item, await build_request(self.runner, item)))
            except TemplateRenderError as exc:
                failures.append(self._failed(item, ErrorCode.TEMPLATE_ERROR, exc.message))
            except ImageError as exc:
                failures.append(self._failed(item, ErrorCode.IMAGE_UNREADABLE, exc.message))
        split = split_entries(self.backend, entries, round_)
        limit = self.backend.batch_limits.max_bytes
        for entry, size in split.too_large:
            failures.append(
                self._failed(
                    entry.item,
                    ErrorCode.PROVIDER_BAD_REQUEST,
                    f"the request is {size:,} bytes encoded, more than the {limit:,} bytes "
                    "one provider batch may hold; run it online (batch=False)",
                )
            )
        return split, failures

    def _failed(self, item: ProviderItem, code: ErrorCode, message: str) -> TaskResult[Any]:
        return self.failed(item, Error(code=code, message=message))

    def failed(self, item: ProviderItem, error: Error) -> TaskResult[Any]:
        """The failed result of ``item`` with ``error``, counted as computed by a batch."""
        return TaskResult(
            task_id=item.task_id,
            is_success=False,
            error=error,
            input_data=json.loads(item.input),
            attempts=item.calls,
            usage=None if item.usage is None else Usage.model_validate_json(item.usage),
            model=self.runner.model,
            provider_batch=True,
        )

    def remember(self, batches: Sequence[NewProviderBatch], split: Split) -> None:
        """Keep the built lines of ``batches`` (written now) for their submission."""
        for batch in batches:
            self.encoded[batch.token] = split.encoded[batch.token]


async def save_info(store: ResultStore, token: str, info: ProviderBatchInfo) -> None:
    """Store what the provider said of the open batch ``token`` (its state and counts)."""
    await asyncio.to_thread(
        store.update_provider_batch,
        token,
        state=info.state.value,
        provider_status=info.provider_status,
        counts=info.counts.model_dump(),
    )
