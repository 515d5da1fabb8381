"""Cancelling a task's provider batch job: what ``cancel_batch`` and ``loom cancel`` share.

The store marks every open batch of the task first (``request_cancel``): a pending batch is
then never claimed, so nothing more is submitted, and its tasks fail as ``cancelled`` when a
loom next works on the job. Then the provider is asked to stop each batch that runs. What
finished before the cancel stays collectable.
"""

from __future__ import annotations

import asyncio
import logging

from loom_protocol import BackendError, ProviderBatchBackend
from loom_store import ResultStore

from ._batch_context import save_info

__all__ = ["cancel_job"]

_log = logging.getLogger("loom.batch")

#: States in which the provider may still run a batch's requests.
_RUNNING = ("in_progress", "cancelling")


async def cancel_job(store: ResultStore, backend: ProviderBatchBackend, task_name: str) -> int:
    """Cancel ``task_name``'s open batches (every configuration); how many the provider was
    asked to stop. A retryable failure of one cancel is logged and left to the next poll,
    which asks again.

    Raises:
        BackendError: The provider refused a cancel for good (its key, say).
    """
    await asyncio.to_thread(store.request_cancel, task_name)
    records = await asyncio.to_thread(store.provider_batches, task_name, open_only=True)
    asked = 0
    for record in records:
        if record.batch_id is None or record.state not in _RUNNING:
            continue
        try:
            info = await backend.acancel_batch(record.batch_id)
        except BackendError as exc:
            if not exc.retryable:
                raise
            _log.warning("batch %s: cancelling failed (%s)", record.batch_id, exc)
            continue
        asked += 1
        await save_info(store, record.token, info)
    return asked
