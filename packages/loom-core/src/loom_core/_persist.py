"""Between task results and the store: rows out, cache hits in."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter, ValidationError

from loom_protocol import Error, ErrorCode, TaskResult, Usage
from loom_store import ResultRow, ResultStore, StoreWriter

from ._fast import trusted_result_from
from ._output import OutputSpec

__all__ = ["ResultCache"]

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

    async def lookup(
        self, task_ids: Sequence[str], inputs: dict[str, dict[str, Any]]
    ) -> dict[str, TaskResult[Any]]:
        """Cached successful results for ``task_ids``, by id; one store query per chunk."""
        if not task_ids:
            return {}
        rows = await asyncio.to_thread(
            self.store.get_hits, self.task_name, task_ids, self.config_fp
        )
        hits: dict[str, TaskResult[Any]] = {}
        validate = self._hit_json.validate_json
        for row in rows:
            if row.data is None:
                continue
            try:
                # Data and usage in one validation: a resumed run spends most of its time here.
                data, usage = validate(f"[{row.data},{row.usage or 'null'}]")
            except ValidationError:
                continue  # stored data no longer validates (the model changed): recompute
            task_id = row.task_id
            hits[task_id] = trusted_result_from(
                {
                    "task_id": task_id,
                    "is_success": True,
                    "data": data,
                    "error": None,
                    "input_data": inputs[task_id],
                    "raw_output": row.raw_output,
                    "reasoning": row.reasoning,
                    "cached": True,
                    "attempts": row.attempts,
                    "usage": usage,
                    "latency_ms": row.latency_ms,
                    "model": row.model,
                }
            )
        return hits

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
