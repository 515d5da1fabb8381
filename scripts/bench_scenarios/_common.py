"""What every scenario shares: the fake model's names, the outcome record, inputs, a loom."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from loom_backends.testing import FakeLLMServer
from loom_core import TaskLoom

__all__ = ["MODEL", "TEMPLATE", "Echo", "Outcome", "inputs", "new_loom", "timed_map"]

MODEL = "fake-model"
TEMPLATE = "Extract the fields of: {{ text }}"


class Echo(BaseModel):
    """What the default FakeLLMServer handler answers: {"echo": <prompt>}."""

    echo: str


@dataclass
class Outcome:
    """One measured figure: what was measured, its value, the target and the verdict."""

    name: str
    measure: str
    value: float
    target: str
    passed: bool
    detail: str = ""


def inputs(n: int, prefix: str = "doc") -> list[dict[str, str]]:
    """``n`` distinct inputs; a new ``prefix`` makes inputs no earlier call made."""
    return [{"text": f"{prefix} {i}: Jane Doe, Python and Rust"} for i in range(n)]


def new_loom(server: FakeLLMServer, db: Path | None, **kwargs: Any) -> TaskLoom[Echo]:
    """A loom talking to ``server``, storing in ``db`` when a run has a task_name."""
    return TaskLoom(
        MODEL,
        TEMPLATE,
        response_model=Echo,
        base_url=server.base_url,
        api_key="sk-bench",
        db_path=db or ".loom.db",  # opened only when a task_name is given
        **kwargs,
    )


def timed_map(loom: TaskLoom[Echo], items: list[dict[str, str]], **kwargs: Any) -> float:
    """Seconds for ``loom.map(items, **kwargs)``; raises when any task failed."""
    started = time.perf_counter()
    batch = loom.map(items, **kwargs)
    elapsed = time.perf_counter() - started
    failed = batch.failed()
    if failed:
        raise RuntimeError(f"{len(failed)} tasks failed, first: {failed[0].error}")
    return elapsed
