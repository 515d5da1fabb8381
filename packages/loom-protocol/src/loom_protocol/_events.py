"""Stream events: a union discriminated by ``type``, ready for Server-Sent Events."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter

from ._errors import Error
from ._results import BatchSummary, TaskResult

__all__ = [
    "BatchEndEvent",
    "BatchErrorEvent",
    "BatchStartEvent",
    "StreamEvent",
    "TaskResultEvent",
    "parse_stream_event",
]


class BatchStartEvent(BaseModel):
    """The batch started. ``total`` is ``None`` when the input's length is unknown."""

    type: Literal["batch_start"] = "batch_start"
    batch_id: str
    task_name: str | None = None
    total: int | None = Field(default=None, ge=0)


class TaskResultEvent(BaseModel):
    """One task finished. ``index`` is its position in the input; ``done`` counts finished tasks."""

    type: Literal["task_result"] = "task_result"
    batch_id: str
    index: int = Field(ge=0)
    result: TaskResult[Any]
    done: int = Field(ge=0)
    total: int | None = Field(default=None, ge=0)


class BatchEndEvent(BaseModel):
    """The batch finished; every input has had its ``task_result``."""

    type: Literal["batch_end"] = "batch_end"
    batch_id: str
    summary: BatchSummary


class BatchErrorEvent(BaseModel):
    """The batch stopped early (cancelled, or an error outside any one task)."""

    type: Literal["batch_error"] = "batch_error"
    batch_id: str
    error: Error
    summary: BatchSummary | None = None


StreamEvent = Annotated[
    BatchStartEvent | TaskResultEvent | BatchEndEvent | BatchErrorEvent,
    Field(discriminator="type"),
]

_adapter: TypeAdapter[StreamEvent] = TypeAdapter(StreamEvent)


def parse_stream_event(data: str | bytes | dict[str, Any]) -> StreamEvent:
    """Parse one event from its JSON text or its dict, choosing the class by ``type``."""
    if isinstance(data, dict):
        return _adapter.validate_python(data)
    return _adapter.validate_json(data)
