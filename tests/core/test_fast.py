"""The trusted constructors of cache hits: indistinguishable from validated instances."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from loom_core._fast import trusted_result_from, trusted_usage_from
from loom_protocol import TaskResult, Usage


class Doc(BaseModel):
    text: str


def _fields(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "task_id": "t1",
        "is_success": True,
        "data": Doc(text="x"),
        "error": None,
        "input_data": {"text": "x"},
        "raw_output": '{"text": "x"}',
        "reasoning": None,
        "cached": True,
        "attempts": 2,
        "usage": Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7, cached_tokens=1),
        "latency_ms": 12.5,
        "model": "m",
        "cost_usd": 0.5,
        "provider_batch": False,
    }
    fields.update(changes)
    return fields


def test_the_fast_path_is_taken_under_this_pydantic() -> None:
    # If a pydantic release changed the instance layout, the constructors fall back to
    # validation (still correct, only slower); this test says when that happens.
    assert trusted_result_from.__name__ == "fast"
    assert trusted_usage_from.__name__ == "fast"


def test_trusted_instances_equal_validated_ones() -> None:
    trusted, validated = trusted_result_from(_fields()), TaskResult[Any](**_fields())
    assert trusted == TaskResult(**_fields())
    assert trusted.model_dump() == validated.model_dump()
    assert trusted.model_dump_json() == validated.model_dump_json()
    assert trusted.model_fields_set == validated.model_fields_set
    usage = trusted_usage_from(
        {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3, "cached_tokens": 0}
    )
    assert usage == Usage(prompt_tokens=1, completion_tokens=2)
    assert hash(usage) == hash(Usage(prompt_tokens=1, completion_tokens=2))


def test_instances_stay_independent() -> None:
    # The instances share one fields-set; nothing done to one may show in another.
    first, second = trusted_result_from(_fields()), trusted_result_from(_fields(task_id="t2"))
    first.attempts = 9
    copy = first.model_copy(update={"cached": False})
    assert (first.attempts, second.attempts, copy.attempts) == (9, 2, 9)
    assert (first.cached, second.cached, copy.cached) == (True, True, False)
    assert first.model_fields_set == second.model_fields_set == set(TaskResult.model_fields)
    assert second.model_dump() == TaskResult(**_fields(task_id="t2")).model_dump()
