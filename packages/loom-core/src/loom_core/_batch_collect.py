"""Reading the outcomes of a finished provider batch: results, and the requests to send again.

Every answer goes through the online path's parts: :func:`~._extract.split_reasoning`, then
:meth:`~._reask.AnswerReader.parse` (JSON repair, validation, an answer cut off at the token
limit never accepted) and :meth:`~._reask.AnswerReader.reask` (the re-ask budget). An answer
that cannot be used is asked again in a follow-up batch, with the answer and its error carried
in the item's history, which :func:`~._batch_lines.build_request` turns into the same
feedback messages an online re-ask sends. A request that did not run (the batch expired or was
cancelled) or failed retryably is sent again within ``max_retries`` rounds; any other error
fails its task.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loom_protocol import (
    ChatResponse,
    Error,
    ErrorCode,
    ProviderBatchItem,
    TaskResult,
    Usage,
)
from loom_store import ProviderItem

from ._attempts import Attempts
from ._extract import split_reasoning
from ._output_errors import OutputError
from ._task import TaskRunner, task_result

__all__ = ["Collected", "read_outcomes"]

#: ``ProviderBatchItem.error.detail`` of a request that never ran.
_NOT_RUN = frozenset({"expired", "cancelled"})


@dataclass(slots=True)
class Collected:
    """What a finished provider batch gave.

    Attributes:
        results: The tasks it settled (successes and failures).
        followups: The requests to ask again (their ``custom_id`` is set by the next split).
    """

    results: list[TaskResult[Any]] = dataclasses.field(default_factory=list)
    followups: list[ProviderItem] = dataclasses.field(default_factory=list)


def read_outcomes(
    runner: TaskRunner,
    items: Sequence[ProviderItem],
    outcomes: Sequence[ProviderBatchItem],
    *,
    cancelled: bool,
) -> Collected:
    """Turn a finished batch's ``outcomes`` into results and follow-ups, item by item.

    Args:
        runner: The loom's task runner (its answer reader and model).
        items: The batch's requests.
        outcomes: What the provider returned, in any order; an item without an outcome did
            not run.
        cancelled: The user cancelled the job: what did not finish fails as ``cancelled``
            instead of being sent again.
    """
    by_id = {outcome.custom_id: outcome for outcome in outcomes}
    collected = Collected()
    for item in items:
        settled = _settle(runner, item, by_id.get(item.custom_id), cancelled)
        if isinstance(settled, ProviderItem):
            collected.followups.append(settled)
        else:
            collected.results.append(settled)
    return collected


def _attempts(item: ProviderItem) -> Attempts:
    attempts = Attempts()
    attempts.calls = item.calls
    attempts.reasks = item.reasks
    attempts.transport_failures = item.failures
    attempts.usage = None if item.usage is None else Usage.model_validate_json(item.usage)
    return attempts


def _carried(item: ProviderItem, attempts: Attempts, **changes: Any) -> ProviderItem:
    """``item`` for its next round: its counts and usage so far, and ``changes``."""
    usage = attempts.usage
    return dataclasses.replace(
        item,
        custom_id="",
        calls=attempts.calls,
        reasks=attempts.reasks,
        failures=attempts.transport_failures,
        usage=None if usage is None else usage.model_dump_json(),
        **changes,
    )


def _settle(
    runner: TaskRunner, item: ProviderItem, outcome: ProviderBatchItem | None, cancelled: bool
) -> TaskResult[Any] | ProviderItem:
    attempts = _attempts(item)
    data: dict[str, Any] = json.loads(item.input)
    if outcome is None or outcome.response is None:
        error = _error_of(outcome)
        if error.detail not in _NOT_RUN and outcome is not None:
            attempts.add(None)  # the request ran and failed
        if error.retryable and cancelled:
            error = Error(
                code=ErrorCode.CANCELLED,
                message="the provider batch was cancelled (cancel_batch) before this request ran",
            )
        elif error.retryable and attempts.transport_failures < runner.reader.max_retries:
            attempts.transport_failures += 1
            return _carried(item, attempts)
        return _result(runner, item, data, attempts, error=error)
    response = outcome.response
    attempts.add(response.usage)
    answer, reasoning = split_reasoning(response.content, response.reasoning)
    try:
        value = runner.reader.parse(answer, response.finish_reason)
    except OutputError as exc:
        if cancelled or not runner.reader.reask(exc.error, attempts, item.task_id):
            return _result(runner, item, data, attempts, response, reasoning, error=exc.error)
        history = json.loads(item.history)
        history.append([response.content or "", exc.error.model_dump(mode="json")])
        return _carried(item, attempts, history=json.dumps(history, ensure_ascii=False))
    return _result(runner, item, data, attempts, response, reasoning, value)


def _error_of(outcome: ProviderBatchItem | None) -> Error:
    if outcome is None:
        # A provider may leave out what did not run (an expired batch's missing lines).
        return Error(
            code=ErrorCode.PROVIDER_UNAVAILABLE,
            message="the provider batch ended without an outcome for this request",
            retryable=True,
            detail="expired",
        )
    if outcome.error is not None:
        return outcome.error
    return Error(  # pragma: no cover - ProviderBatchItem holds a response or an error
        code=ErrorCode.PROVIDER_ERROR, message="the provider returned neither answer nor error"
    )


def _result(
    runner: TaskRunner,
    item: ProviderItem,
    data: dict[str, Any],
    attempts: Attempts,
    response: ChatResponse | None = None,
    reasoning: str | None = None,
    value: Any = None,
    *,
    error: Error | None = None,
) -> TaskResult[Any]:
    return task_result(
        runner.model,
        item.task_id,
        data,
        attempts,
        response,
        reasoning,
        value,
        pricer=runner.pricer,
        error=error,
        provider_batch=True,
    )
