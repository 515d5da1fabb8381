"""Task and batch results."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from ._chat import Usage
from ._errors import Error
from ._records import flat_record

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["BatchResult", "BatchSummary", "SummaryCounter", "TaskResult"]

T = TypeVar("T")


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by ``None`` (what JSON can hold)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


class TaskResult(BaseModel, Generic[T]):
    """The outcome of one task.

    A successful result has ``data`` (a model instance, a dict or the text, depending on the
    loom's ``response_model``) and no ``error``; a failed one always has an ``error``.
    ``model_dump(mode="json")`` is always JSON-serializable. ``provider_batch`` is true for a
    result computed in this run through a provider's Batch API (``map(..., batch=True)``).
    """

    model_config = ConfigDict(arbitrary_types_allowed=False)

    task_id: str
    is_success: bool
    data: T | None = None
    error: Error | None = None
    input_data: dict[str, Any] = Field(default_factory=dict)
    raw_output: str | None = None
    reasoning: str | None = None
    cached: bool = False
    attempts: int = Field(default=0, ge=0)
    usage: Usage | None = None
    latency_ms: float | None = Field(default=None, ge=0)
    model: str | None = None
    #: What the calls of ``usage`` cost in US dollars, at the loom's price for ``model``
    #: (``None`` when no price is known or there is no usage; see docs/cost.md). A cached
    #: result carries what it cost when it was made, at today's price; it costs nothing new.
    cost_usd: float | None = Field(default=None, ge=0)
    provider_batch: bool = False

    # No return annotation on purpose: pydantic would take it for the serialization schema,
    # and TaskResult's JSON schema (mode="serialization") would lose its properties.
    @model_serializer(mode="wrap")
    def _strict_json(  # type: ignore[no-untyped-def]
        self, handler: SerializerFunctionWrapHandler, info: SerializationInfo
    ):
        # model_dump_json writes a NaN or an infinity as null; model_dump(mode="json") would
        # keep the float, which json.dumps turns into invalid JSON (an SSE stream breaks on
        # it). A data model the user built may hold one: JSON mode gets null, like the JSON
        # dump. The engine itself never produces one (parsing refuses them).
        dumped: dict[str, Any] = handler(self)
        return _finite(dumped) if info.mode_is_json() else dumped

    def to_record(
        self, *, include_input: bool = False, flatten_data: bool = True
    ) -> dict[str, Any]:
        """This result as one flat dict (a row of :meth:`BatchResult.to_records`).

        Columns: ``task_id``, ``is_success``, ``cached``, ``error_code``, ``error`` (the
        message), ``attempts``; with ``include_input`` one column ``input.<key>`` per key of
        ``input_data``; then the data: a model by ``model_dump(mode="json")``, a dict by its
        keys, anything else as the column ``data``, nothing for ``None``. A data key that
        clashes with another column is written ``data.<key>`` (see :func:`data_column`).

        Args:
            include_input: Add the input's keys as ``input.<key>`` columns.
            flatten_data: ``False`` keeps the data whole, in the one column ``data`` (for a
                table whose header is fixed before the answers are known).
        """
        return flat_record(self, include_input=include_input, flatten_data=flatten_data)

    @model_validator(mode="after")
    def _success_xor_error(self) -> TaskResult[T]:
        if self.is_success and self.error is not None:
            raise ValueError("a successful TaskResult must not carry an error")
        if not self.is_success and self.error is None:
            raise ValueError("a failed TaskResult must carry an error")
        return self


class BatchSummary(BaseModel):
    """Counts and totals over a batch.

    The counts (``total``, ``succeeded``, ``failed``, ``cached``) are per result, one per input
    position. The tokens are per request: a result handed to several positions (duplicate
    inputs, asked once) counts once, and a cached result counts nothing (its ``usage`` is that
    of the earlier run that paid for it). ``cost_usd`` counts the same calls, in US dollars:
    ``None`` when one of them has no known price, 0.0 when no call was made.
    ``provider_batch`` counts the results computed in this run through a provider's Batch API
    (at its lower price).
    """

    model_config = ConfigDict(frozen=True)

    total: int = Field(default=0, ge=0)
    succeeded: int = Field(default=0, ge=0)
    failed: int = Field(default=0, ge=0)
    cached: int = Field(default=0, ge=0)
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    total_tokens: int = Field(default=0, ge=0)
    cost_usd: float | None = Field(default=0.0, ge=0)
    elapsed_s: float = Field(default=0.0, ge=0)
    provider_batch: int = Field(default=0, ge=0)

    @classmethod
    def from_results(cls, results: list[TaskResult[Any]], elapsed_s: float = 0.0) -> BatchSummary:
        """Summarise ``results`` (tokens count only calls made in this run, once per call)."""
        summary = SummaryCounter(remember=None)
        for result in results:
            summary.add(result)
        return summary.summary(elapsed_s)


#: Calls a streaming SummaryCounter remembers, to count a result delivered again only once.
_REMEMBERED_CALLS = 32_768

_CallKey = tuple[float | None, int, int, int, int]


class SummaryCounter:
    """Accumulates a :class:`BatchSummary` one result at a time (for streams).

    A result seen again (the same task id with the same call record: latency, attempts and
    usage, as when one answer is delivered to every duplicate of an input) adds its tokens
    only once; a task asked again in a new call has another latency and counts again.

    Args:
        remember: How many task ids to remember for that, the most recent first (``None``:
            all of them). The engine delivers a result to all its positions within a few
            thousand results, far below the default.
    """

    __slots__ = (
        "_calls",
        "_remember",
        "cached",
        "completion_tokens",
        "cost_usd",
        "failed",
        "prompt_tokens",
        "provider_batch",
        "succeeded",
        "total_tokens",
    )

    def __init__(self, remember: int | None = _REMEMBERED_CALLS) -> None:
        self.succeeded = self.failed = self.cached = self.provider_batch = 0
        self.prompt_tokens = self.completion_tokens = self.total_tokens = 0
        #: The calls' cost so far; ``None`` once a call of unknown price was counted.
        self.cost_usd: float | None = 0.0
        self._remember = remember
        self._calls: dict[str, _CallKey] = {}

    def add(self, result: TaskResult[Any]) -> None:
        """Count one result."""
        if result.is_success:
            self.succeeded += 1
        else:
            self.failed += 1
        if result.cached:
            self.cached += 1
            return
        if result.provider_batch:
            self.provider_batch += 1
        usage = result.usage
        if usage is None:
            return
        key = (
            result.latency_ms,
            result.attempts,
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens,
        )
        calls = self._calls
        if calls.get(result.task_id) == key:
            return  # the same call's result, delivered to another position
        calls[result.task_id] = key
        if self._remember is not None and len(calls) > self._remember:
            del calls[next(iter(calls))]
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens
        self.total_tokens += usage.total_tokens
        if self.cost_usd is not None:
            cost = result.cost_usd
            self.cost_usd = None if cost is None else self.cost_usd + cost

    @property
    def done(self) -> int:
        """How many results were counted."""
        return self.succeeded + self.failed

    def summary(self, elapsed_s: float = 0.0) -> BatchSummary:
        """The summary so far."""
        return BatchSummary(
            total=self.done,
            succeeded=self.succeeded,
            failed=self.failed,
            cached=self.cached,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.total_tokens,
            cost_usd=self.cost_usd,
            elapsed_s=max(elapsed_s, 0.0),
            provider_batch=self.provider_batch,
        )


class BatchResult(BaseModel, Generic[T]):
    """The results of a batch, in input order."""

    results: list[TaskResult[T]] = Field(default_factory=list)
    elapsed_s: float = Field(default=0.0, ge=0)

    def successful(self) -> list[TaskResult[T]]:
        """The results that succeeded, in input order."""
        return [r for r in self.results if r.is_success]

    def failed(self) -> list[TaskResult[T]]:
        """The results that failed, in input order."""
        return [r for r in self.results if not r.is_success]

    @property
    def summary(self) -> BatchSummary:
        """Counts (total, succeeded, failed, cached), token totals and elapsed seconds."""
        return BatchSummary.from_results(list(self.results), self.elapsed_s)

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[TaskResult[T]]:  # type: ignore[override]
        # Iterating a batch yields its results, like a list (pydantic's default yields fields).
        return iter(self.results)

    @overload
    def __getitem__(self, index: int) -> TaskResult[T]: ...
    @overload
    def __getitem__(self, index: slice) -> list[TaskResult[T]]: ...
    def __getitem__(self, index: int | slice) -> TaskResult[T] | list[TaskResult[T]]:
        return self.results[index]

    def to_records(self, include_input: bool = False) -> list[dict[str, Any]]:
        """One flat dict per result, in input order (:meth:`TaskResult.to_record`).

        Columns: ``task_id``, ``is_success``, ``cached``, ``error_code``, ``error``,
        ``attempts``; with ``include_input`` the input's keys as ``input.<key>``; then
        ``data`` flattened: a model by ``model_dump(mode="json")``, a dict by its keys,
        anything else as the column ``data``. A data key that clashes with another column
        (a meta column, ``index``, or a key starting with ``input.``) is written
        ``data.<key>``.

        Args:
            include_input: Add the input's keys as ``input.<key>`` columns (a string input
                ``s`` is ``{"text": s}``, so its column is ``input.text``).
        """
        return [r.to_record(include_input=include_input) for r in self.results]

    def to_pandas(self, include_input: bool = False) -> pd.DataFrame:
        """The records of :meth:`to_records` as a pandas DataFrame.

        Args:
            include_input: Add the input's keys as ``input.<key>`` columns.

        Raises:
            ImportError: pandas is not installed (``pip install pandas``).
        """
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - exercised in a pandas-free env
            raise ImportError(
                "BatchResult.to_pandas() needs pandas: pip install pandas "
                "(or Loom's extra loom-core[pandas], see docs/install.md)"
            ) from exc
        return pd.DataFrame.from_records(self.to_records(include_input=include_input))
