"""A trusted constructor for results whose fields the engine has already checked.

Cache hits are the engine's hottest path (a resumed run of 100,000 results must not take
longer than a few seconds); pydantic's validating constructor and ``model_construct`` each
cost more than the rest of a hit's handling. The values here come from our own store rows
and our own parsing, so they need no validation, only the instance state pydantic expects.
At import, the fast path is compared with the validating constructor; if a pydantic release
ever lays instances out differently, the validating constructor is used instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loom_protocol import TaskResult, Usage

__all__ = ["trusted_result_from"]

_FIELDS = frozenset(TaskResult.model_fields)
_new = object.__new__
_set = object.__setattr__


def _fast_from(values: dict[str, Any]) -> TaskResult[Any]:
    result: TaskResult[Any] = _new(TaskResult)
    _set(result, "__dict__", values)
    _set(result, "__pydantic_fields_set__", set(_FIELDS))
    _set(result, "__pydantic_extra__", None)
    _set(result, "__pydantic_private__", None)
    return result


def _safe_from(values: dict[str, Any]) -> TaskResult[Any]:
    return TaskResult(**values)


def _choose() -> Callable[[dict[str, Any]], TaskResult[Any]]:
    sample: dict[str, Any] = {
        "task_id": "t",
        "is_success": True,
        "data": {"a": 1},
        "error": None,
        "input_data": {"text": "x"},
        "raw_output": "{}",
        "reasoning": None,
        "cached": True,
        "attempts": 1,
        "usage": Usage(prompt_tokens=1, completion_tokens=2),
        "latency_ms": 1.5,
        "model": "m",
    }
    try:
        fast, safe = _fast_from(dict(sample)), _safe_from(dict(sample))
        same = (
            set(sample) == _FIELDS
            and fast.model_dump() == safe.model_dump()
            and fast.model_dump_json() == safe.model_dump_json()
            and fast == safe
            and fast.model_copy(update={"cached": False}).cached is False
        )
    except Exception:
        same = False
    return _fast_from if same else _safe_from


#: ``trusted_result_from(fields)``: a TaskResult from a dict of every field, already valid
#: (the dict becomes the instance's own: the caller hands it over).
trusted_result_from: Callable[[dict[str, Any]], TaskResult[Any]] = _choose()
