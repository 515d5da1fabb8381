"""Trusted constructors for models whose fields the engine has already checked.

Cache hits are the engine's hottest path (a resumed run of 100,000 results must not take
longer than a few seconds); pydantic's validating constructor and ``model_construct`` each
cost more than the rest of a hit's handling. The values here come from our own store rows,
validated by pydantic against their types as a whole chunk, so they need no second
validation, only the instance state pydantic expects. At import, each fast path is compared
with the validating constructor; if a pydantic release ever lays instances out differently,
the validating constructor is used instead.

Only Loom's own models get this (``TaskResult`` and ``Usage`` of loom-protocol); the data of a
cached result, an instance of the caller's ``response_model``, is always built by pydantic's
own validation. Measured again after the store's dialect split (issue 12), resuming 100,000
cached results on a quiet machine: 83,067 and 85,097 results/s with the validating
constructors against 108,897 and 126,311/s with these (+28 % at the least), so they stay.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from loom_protocol import TaskResult, Usage

__all__ = ["trusted_result_from", "trusted_usage_from"]

M = TypeVar("M", bound=BaseModel)

_new = object.__new__
_set = object.__setattr__


def _trusted(
    cls: type[M], sample: dict[str, Any], changed: dict[str, Any]
) -> Callable[[dict[str, Any]], M]:
    """``cls``'s trusted constructor, or its validating one if the two ever disagree.

    ``sample`` holds every field; ``changed`` is a ``model_copy`` update that must work on
    the trusted instance as on the validated one.
    """
    fields = frozenset(cls.model_fields)
    # Every field is set, so every instance shares one fields-set: pydantic only ever adds a
    # field name to it (on assignment, a name already there) and copies it for model_copy.
    # One set per instance would cost an allocation, ~700 bytes and a garbage-collector
    # tracked object per cached result.
    shared = set(fields)

    def fast(values: dict[str, Any]) -> M:
        instance: M = _new(cls)
        _set(instance, "__dict__", values)
        _set(instance, "__pydantic_fields_set__", shared)
        _set(instance, "__pydantic_extra__", None)
        _set(instance, "__pydantic_private__", None)
        return instance

    def safe(values: dict[str, Any]) -> M:
        return cls(**values)

    try:
        trusted, validated = fast(dict(sample)), safe(dict(sample))
        same = (
            set(sample) == fields
            and trusted.model_dump() == validated.model_dump()
            and trusted.model_dump_json() == validated.model_dump_json()
            and trusted == validated
            and repr(trusted) == repr(validated)
            and trusted.model_copy(update=changed) == validated.model_copy(update=changed)
            and trusted.model_fields_set == validated.model_fields_set
        )
    except Exception:
        same = False
    return fast if same else safe


#: ``trusted_usage_from(fields)``: a Usage from a dict of every field, already valid.
trusted_usage_from: Callable[[dict[str, Any]], Usage] = _trusted(
    Usage,
    {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7, "cached_tokens": 1},
    {"total_tokens": 8},
)

#: ``trusted_result_from(fields)``: a TaskResult from a dict of every field, already valid
#: (the dict becomes the instance's own: the caller hands it over).
trusted_result_from: Callable[[dict[str, Any]], TaskResult[Any]] = _trusted(
    TaskResult,
    {
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
        "cost_usd": 0.25,
        "provider_batch": False,
    },
    {"cached": False},
)
