"""``loom run --batch``: the same run through the provider's Batch API.

The inputs are read whole (a provider batch is submitted whole), handed to
``map(..., batch=True)``, and the results come back as the events ``loom run`` writes, in
input order. While the job waits, a progress bar over its requests shows the batches and their
counts. Ctrl-C stops the wait and loses nothing: the same command attaches to the batches
already submitted, sends nothing twice, and collects what has finished.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from loom_core._loom import TaskLoom
from loom_protocol import (
    BatchErrorEvent,
    Error,
    ErrorCode,
    LoomError,
    LoomUsageError,
    StoreError,
    StreamEvent,
    SummaryCounter,
    TaskResultEvent,
)

from .command import CliUsageError
from .inputs import InputReadError, InputSource

__all__ = ["batch_events"]


def batch_events(
    loom: TaskLoom[Any], source: InputSource, task_name: str, progress: bool
) -> Iterator[StreamEvent]:
    """The events of a ``--batch`` run (checked now: a backend without a Batch API is misuse).

    Raises:
        CliUsageError: The model's backend has no Batch API.
    """
    try:
        loom.batch_status(task_name, refresh=False)
    except LoomUsageError as exc:
        raise CliUsageError(str(exc)) from None
    except StoreError as exc:
        raise CliUsageError(f"the result store cannot be used: {exc}") from None
    return _events(loom, source, task_name, progress)


def _events(
    loom: TaskLoom[Any], source: InputSource, task_name: str, progress: bool
) -> Iterator[StreamEvent]:
    counter = SummaryCounter()
    try:
        records = list(source.records())
    except InputReadError:
        return  # source.error says why; the run reports it
    try:
        result = loom.map(records, task_name=task_name, batch=True, progress=progress)
    except LoomError as exc:
        code = ErrorCode.STORE_ERROR if isinstance(exc, StoreError) else ErrorCode.PROVIDER_ERROR
        yield BatchErrorEvent(
            batch_id=task_name,
            error=Error(code=code, message=f"the batch job stopped: {exc}"),
            summary=counter.summary(),
        )
        return
    for index, item in enumerate(result):
        counter.add(item)
        yield TaskResultEvent(
            batch_id=task_name, index=index, result=item, done=index + 1, total=len(result)
        )
