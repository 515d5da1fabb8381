"""Between task results and the store: rows out, cache hits in."""

from __future__ import annotations

import asyncio
import json
import json.encoder
import logging
import typing
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError

from loom_protocol import Error, ErrorCode, StoreError, TaskResult, Usage
from loom_store import CachedHit, ResultRow, ResultStore, StoreWriter

from ._fast import trusted_result_from, trusted_usage_from
from ._output import OutputSpec
from ._pricing import Pricer

__all__ = ["ResultCache"]

_log = logging.getLogger("loom.store")

_USAGE_FIELDS = Usage.model_fields.keys()


def _usage(counts: dict[str, int] | None) -> Usage | None:
    # The engine stores every count (Usage.model_dump_json): then the checked counts are the
    # instance's fields as they are. Anything else goes through Usage's own validation.
    if counts is None:
        return None
    if counts.keys() == _USAGE_FIELDS:
        return trusted_usage_from(counts)
    return Usage.model_validate(counts)


# Where each field of a hit sits: the layout is CachedHit's (loom-store), named here, not
# counted. Hits are validated as plain tuples of CachedHit's field types (_hit_type): building
# a NamedTuple per hit cost ~0.3 µs of the ~1.2 µs validation (measured).
_POSITION, _DATA, _USAGE, _RAW_OUTPUT, _REASONING, _ATTEMPTS, _LATENCY_MS, _MODEL = (
    CachedHit._fields.index(name)
    for name in (
        "position",
        "data",
        "usage",
        "raw_output",
        "reasoning",
        "attempts",
        "latency_ms",
        "model",
    )
)


def _hit_type(data_type: Any) -> Any:
    """``CachedHit[data_type]`` as a plain tuple type: the same fields, types and order."""
    hints = typing.get_type_hints(CachedHit, include_extras=True)
    fields = (hints[name] for name in CachedHit._fields)
    return tuple[tuple(data_type if isinstance(t, TypeVar) else t for t in fields)]  # type: ignore[misc]


def _cached(
    task_id: str, hit: tuple[Any, ...], input_data: dict[str, Any], pricer: Pricer
) -> TaskResult[Any]:
    """The cached, successful result of a validated hit (the trusted constructor).

    ``input_data`` is copied (its top level, as validation copies a fresh result's): the
    caller's dict stays the caller's, and changing it later changes no result. Its cost is
    what its stored usage costs at the loom's prices now (docs/cost.md): nothing is stored.
    """
    usage = _usage(hit[_USAGE])
    return trusted_result_from(
        {
            "task_id": task_id,
            "is_success": True,
            "data": hit[_DATA],
            "error": None,
            "input_data": input_data.copy(),
            "raw_output": hit[_RAW_OUTPUT],
            "reasoning": hit[_REASONING],
            "cached": True,
            "attempts": hit[_ATTEMPTS],
            "usage": usage,
            "latency_ms": hit[_LATENCY_MS],
            "model": hit[_MODEL],
            "cost_usd": pricer.cost(usage, hit[_MODEL]),
            "provider_batch": False,
        }
    )


def _input_encoder() -> Callable[[dict[str, Any]], str]:
    # json.JSONEncoder.encode builds a new C encoder on every call, which costs more than
    # encoding an input (~1.3 µs a row, the ``store`` scenario of scripts/bench.py): build it
    # once. A stored input passed the fingerprint's checks (JSON values, no cycles), so the
    # encoder needs no circular-reference markers. Same text as JSONEncoder(ensure_ascii=False,
    # separators=(",", ":")).
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - a Python without the json C accelerator
        return json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

    def refuse(value: Any) -> Any:
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    encode = make(None, refuse, json.encoder.encode_basestring, None, ":", ",", False, False, True)
    return lambda value: "".join(encode(value, 0))


_dumps = _input_encoder()


class ResultCache:
    """The cache view of one task_name under one config: looks up chunks, persists results."""

    def __init__(
        self,
        store: ResultStore,
        writer: StoreWriter,
        task_name: str,
        config_fp: str,
        output: OutputSpec,
        pricer: Pricer,
    ) -> None:
        self.store = store
        self.pricer = pricer
        self.writer = writer
        self.task_name = task_name
        self.config_fp = config_fp
        self.output = output
        data_type: Any = output.data_type
        # The elements of ResultStore.get_hits (CachedHit), validated in one pass. Usage is
        # read as its plain counts (its model validator, a Python call per hit, only fills a
        # total the engine always stores) and built by the trusted constructor. Only keys go
        # through pydantic's string cache: the values of hits are mostly distinct, and looking each
        # one up in the cache cost ~10 % of the validation (measured).
        element: Any = _hit_type(data_type)
        self._hits: TypeAdapter[list[tuple[Any, ...]]] = TypeAdapter(
            list[element],
            config=ConfigDict(cache_strings="keys"),
        )

    async def lookup(
        self, task_ids: Sequence[str], inputs: Sequence[dict[str, Any]]
    ) -> list[TaskResult[Any] | None]:
        """The cached successful result of each of ``task_ids`` (``None`` where there is none).

        ``inputs[i]`` is the input of ``task_ids[i]``; the answer is aligned with both. The
        store hands the hits over as one JSON text, validated in one pydantic pass (a resumed
        run spends most of its time here). Should that pass fail, because some stored row no
        longer validates (its data, or a text that is not JSON), the chunk is read again in
        halves, and halves of the halves that fail, down to single ids: only the rows that
        fail are recomputed, at the cost of about two reads per bad row and halving.
        """
        found: list[TaskResult[Any] | None] = [None] * len(task_ids)
        if not task_ids:
            return found
        try:
            await self._read(task_ids, inputs, 0, len(task_ids), found)
        except ValidationError as exc:
            # The error's text quotes stored values: only its size is logged.
            _log.warning(
                "task %r: stored results of a chunk of %d inputs do not validate (%d error(s)); "
                "reading it again in parts, and recomputing the results that fail",
                self.task_name,
                len(task_ids),
                exc.error_count(),
            )
            dropped = await self._read_apart(task_ids, inputs, 0, len(task_ids), found)
            if dropped:
                _log.warning(
                    "task %r: %d stored result(s) no longer validate against the response model; "
                    "they are recomputed",
                    self.task_name,
                    dropped,
                )
        return found

    async def _read(
        self,
        task_ids: Sequence[str],
        inputs: Sequence[dict[str, Any]],
        start: int,
        end: int,
        found: list[TaskResult[Any] | None],
    ) -> None:
        """Fill ``found[start:end]`` from one read; ``ValidationError`` if a hit is bad."""
        ids = task_ids if start == 0 and end == len(task_ids) else task_ids[start:end]
        text = await asyncio.to_thread(self.store.get_hits, self.task_name, ids, self.config_fp)
        for hit in self._hits.validate_json(text):
            at = start + hit[_POSITION]
            found[at] = _cached(task_ids[at], hit, inputs[at], self.pricer)

    async def _read_apart(
        self,
        task_ids: Sequence[str],
        inputs: Sequence[dict[str, Any]],
        start: int,
        end: int,
        found: list[TaskResult[Any] | None],
    ) -> int:
        """:meth:`_read` of both halves of a part that failed; the number of ids dropped."""
        if end - start == 1:
            return 1  # this id's stored result does not validate: recompute it
        middle = (start + end) // 2
        dropped = 0
        for part in ((start, middle), (middle, end)):
            try:
                await self._read(task_ids, inputs, *part, found)
            except ValidationError:
                dropped += await self._read_apart(task_ids, inputs, *part, found)
        return dropped

    def to_row(self, result: TaskResult[Any]) -> ResultRow:
        """The store row of ``result``."""
        # Built for every result on the event loop, so written for speed: the models' own
        # serializers are called directly (model_dump_json spends more than half of its
        # ~0.9 µs passing its keyword arguments on), with the text model_dump_json gives.
        succeeded = result.is_success
        error, usage = result.error, result.usage
        return ResultRow(
            task_name=self.task_name,
            task_id=result.task_id,
            config_fp=self.config_fp,
            status="succeeded" if succeeded else "failed",
            data=self.output.to_json(result.data) if succeeded else None,
            raw_output=result.raw_output,
            reasoning=result.reasoning,
            error=None if error is None else error.__pydantic_serializer__.to_json(error).decode(),
            input=_dumps(result.input_data),
            usage=None if usage is None else usage.__pydantic_serializer__.to_json(usage).decode(),
            attempts=result.attempts,
            latency_ms=result.latency_ms,
            model=result.model,
        )

    def submit_rows(self, rows: list[ResultRow]) -> asyncio.Future[list[StoreError | None]]:
        """Queue ``rows`` from the running loop, each judged on its own.

        The future's result says, row by row, ``None`` (committed) or why the row was not
        written: one row the database refuses costs only its own result.
        """
        return self.writer.submit_each_on_loop(rows)

    @staticmethod
    def settled(result: TaskResult[Any], error: BaseException | None) -> TaskResult[Any]:
        """``result`` once its write ended (``error``: why it failed): a store_error if it did.

        Nothing is handed to a caller before this, so nothing anyone has seen can be lost by
        a crash; a result whose row did not commit says so instead of pretending.
        """
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
