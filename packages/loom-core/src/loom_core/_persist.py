"""Between task results and the store: rows out, cache hits in."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
from collections.abc import Sequence
from typing import Any

from pydantic import ConfigDict, NonNegativeFloat, NonNegativeInt, TypeAdapter, ValidationError

from loom_protocol import Error, ErrorCode, TaskResult, Usage
from loom_store import CachedHit, ResultRow, ResultStore, StoreWriter

from ._fast import trusted_result_from, trusted_usage_from
from ._output import OutputSpec

__all__ = ["ResultCache"]

_log = logging.getLogger("loom.store")

_USAGE_FIELDS = Usage.model_fields.keys()

#: An element of ResultStore.get_hits_json once validated: position, data, usage counts,
#: raw_output, reasoning, attempts, latency_ms, model.
_HitElement = tuple[
    int, Any, dict[str, int] | None, str | None, str | None, int, float | None, str | None
]


def _usage(counts: dict[str, int] | None) -> Usage | None:
    # The engine stores every count (Usage.model_dump_json): then the checked counts are the
    # instance's fields as they are. Anything else goes through Usage's own validation.
    if counts is None:
        return None
    if counts.keys() == _USAGE_FIELDS:
        return trusted_usage_from(counts)
    return Usage.model_validate(counts)


def _cached(
    task_id: str,
    data: Any,
    input_data: dict[str, Any],
    raw_output: str | None,
    reasoning: str | None,
    attempts: int,
    usage: Usage | None,
    latency_ms: float | None,
    model: str | None,
) -> TaskResult[Any]:
    """The cached, successful result of checked stored values (the trusted constructor)."""
    return trusted_result_from(
        {
            "task_id": task_id,
            "is_success": True,
            "data": data,
            "error": None,
            "input_data": input_data,
            "raw_output": raw_output,
            "reasoning": reasoning,
            "cached": True,
            "attempts": attempts,
            "usage": usage,
            "latency_ms": latency_ms,
            "model": model,
        }
    )


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class ResultCache:
    """The cache view of one task_name under one config: looks up chunks, persists results."""

    def __init__(
        self,
        store: ResultStore,
        writer: StoreWriter,
        task_name: str,
        config_fp: str,
        output: OutputSpec,
    ) -> None:
        self.store = store
        self.writer = writer
        self.task_name = task_name
        self.config_fp = config_fp
        self.output = output
        data_type: Any = {"text": str, "dict": dict[str, Any]}.get(output.kind, output.model)
        self._hit_json: TypeAdapter[tuple[Any, Usage | None]] = TypeAdapter(
            tuple[data_type, Usage | None]
        )
        # The elements of ResultStore.get_hits_json. Usage is read as its plain counts (its
        # model validator, a Python call per hit, only fills a total the engine always
        # stores) and built by the trusted constructor. Only keys go through pydantic's
        # string cache: the values of hits are mostly distinct, and looking each one up in
        # the cache cost ~10 % of the validation (measured).
        self._hits_json: TypeAdapter[list[_HitElement]] = TypeAdapter(
            list[
                tuple[
                    NonNegativeInt,
                    data_type,
                    dict[str, NonNegativeInt] | None,
                    str | None,
                    str | None,
                    NonNegativeInt,
                    NonNegativeFloat | None,
                    str | None,
                ]
            ],
            config=ConfigDict(cache_strings="keys"),
        )

    async def lookup(
        self, task_ids: Sequence[str], inputs: Sequence[dict[str, Any]]
    ) -> list[TaskResult[Any] | None]:
        """The cached successful result of each of ``task_ids`` (``None`` where there is none).

        ``inputs[i]`` is the input of ``task_ids[i]``; the answer is aligned with both. The
        store hands the hits over as one JSON text, validated in one pydantic pass (a resumed
        run spends most of its time here). Should that pass fail, because some stored row no
        longer validates (its data, or a text that is not JSON), the ids are looked up again
        row by row, and only the rows that fail are recomputed.
        """
        found: list[TaskResult[Any] | None] = [None] * len(task_ids)
        if not task_ids:
            return found
        text = await asyncio.to_thread(
            self.store.get_hits_json, self.task_name, task_ids, self.config_fp
        )
        try:
            hits = self._hits_json.validate_json(text)
        except ValidationError as exc:
            # The error's text quotes stored values: only its size is logged.
            _log.warning(
                "task %r: stored results of a chunk of %d inputs do not validate (%d error(s)); "
                "looking them up one by one, and recomputing those that fail",
                self.task_name,
                len(task_ids),
                exc.error_count(),
            )
            return await self._lookup_rows(task_ids, inputs)
        for position, data, usage, raw_output, reasoning, attempts, latency_ms, model in hits:
            found[position] = _cached(
                task_ids[position],
                data,
                inputs[position],
                raw_output,
                reasoning,
                attempts,
                _usage(usage),
                latency_ms,
                model,
            )
        return found

    async def _lookup_rows(
        self, task_ids: Sequence[str], inputs: Sequence[dict[str, Any]]
    ) -> list[TaskResult[Any] | None]:
        """:meth:`lookup` one row at a time, skipping the rows that do not validate."""
        rows = await asyncio.to_thread(
            self.store.get_hits, self.task_name, task_ids, self.config_fp
        )
        by_id = {row.task_id: row for row in rows if row.data is not None}
        found: list[TaskResult[Any] | None] = []
        dropped = 0
        for task_id, input_data in zip(task_ids, inputs, strict=True):
            row = by_id.get(task_id)
            hit = None if row is None else self._from_row(row, input_data)
            dropped += row is not None and hit is None
            found.append(hit)
        if dropped:
            _log.warning(
                "task %r: %d stored result(s) no longer validate against the response model; "
                "they are recomputed",
                self.task_name,
                dropped,
            )
        return found

    def _from_row(self, row: CachedHit, input_data: dict[str, Any]) -> TaskResult[Any] | None:
        try:
            data, usage = self._hit_json.validate_json(f"[{row.data},{row.usage or 'null'}]")
        except ValidationError:
            return None  # stored data no longer validates (the model changed): recompute
        return _cached(
            row.task_id,
            data,
            input_data,
            row.raw_output,
            row.reasoning,
            row.attempts,
            usage,
            row.latency_ms,
            row.model,
        )

    def to_row(self, result: TaskResult[Any]) -> ResultRow:
        """The store row of ``result``."""
        return ResultRow(
            task_name=self.task_name,
            task_id=result.task_id,
            config_fp=self.config_fp,
            status="succeeded" if result.is_success else "failed",
            data=self.output.to_json(result.data) if result.is_success else None,
            raw_output=result.raw_output,
            reasoning=result.reasoning,
            error=result.error.model_dump_json() if result.error else None,
            input=_dumps(result.input_data),
            usage=result.usage.model_dump_json() if result.usage else None,
            attempts=result.attempts,
            latency_ms=result.latency_ms,
            model=result.model,
        )

    def submit(self, result: TaskResult[Any]) -> concurrent.futures.Future[None]:
        """Queue ``result``'s row; the future completes once the row has committed."""
        return self.writer.submit(self.to_row(result))

    @staticmethod
    def settled(result: TaskResult[Any], write: concurrent.futures.Future[None]) -> TaskResult[Any]:
        """``result`` once its write finished: unchanged when committed, else a store_error.

        Nothing is handed to a caller before this, so nothing anyone has seen can be lost by
        a crash; a result whose row did not commit says so instead of pretending.
        """
        error = write.exception()
        if error is None:
            return result
        return result.model_copy(
            update={
                "is_success": False,
                "error": Error(
                    code=ErrorCode.STORE_ERROR,
                    message=f"the result could not be saved: {error}",
                    retryable=True,
                ),
            }
        )
