"""A loom outliving the event loops it was used from (notebooks, ``asyncio.run`` per call)."""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import Any

import pytest

from loom_backends.testing import FakeLLMServer
from loom_core import TaskLoom


def test_a_loom_used_from_asyncio_run_leaves_no_open_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unraisable: list[str] = []

    def record(info: Any) -> None:
        unraisable.append(f"{info.exc_type.__name__}: {info.exc_value}")

    monkeypatch.setattr(sys, "unraisablehook", record)
    with FakeLLMServer(lambda request: "ok") as srv:
        loom: TaskLoom[Any] = TaskLoom("fake-model", "{{ text }}", base_url=srv.base_url)

        async def one_cell() -> list[Any]:
            return [r.data async for r in loom.astream(["a", "b"])]

        assert asyncio.run(one_cell()) == ["ok", "ok"]  # a notebook cell, or a script's main()
        loom.close()
    gc.collect()
    assert unraisable == []


def test_pools_of_many_short_loops_are_closed_as_each_loop_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unraisable: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda info: unraisable.append(repr(info)))
    with FakeLLMServer(lambda request: "ok") as srv:
        loom: TaskLoom[Any] = TaskLoom("fake-model", "{{ text }}", base_url=srv.base_url)

        async def cell(text: str) -> Any:
            return (await loom.aprocess(text)).data

        for i in range(5):  # asyncio.run per call, as a notebook or a CLI would
            assert asyncio.run(cell(f"x{i}")) == "ok"
        assert loom.process("sync too").data == "ok"
        loom.close()
    gc.collect()
    assert unraisable == []
