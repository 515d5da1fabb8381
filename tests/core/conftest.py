"""Shared helpers for the engine tests: a FakeLLMServer per test and a loom factory."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loom_backends.testing import FakeBackend, FakeLLMServer, RecordedRequest
from loom_core import TaskLoom


def echo_json(req: RecordedRequest) -> str:
    """Answer {"text": <the rendered prompt>} so every input gets a distinct, checkable answer."""
    return json.dumps({"text": req.last_user_text})


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(echo_json) as srv:
        yield srv


@pytest.fixture
def fake() -> FakeBackend:
    """The same answers as ``server``, in process: for engine tests where sockets are not the
    point (the loom does not own it, so closing the loom leaves it as it is)."""
    return FakeBackend(echo_json)


LoomFactory = Callable[..., TaskLoom[Any]]


def _factory(tmp_path: Path, made: list[TaskLoom[Any]]) -> LoomFactory:
    def factory(srv: FakeLLMServer | FakeBackend, **kwargs: Any) -> TaskLoom[Any]:
        kwargs.setdefault("prompt_template", "{{ text }}")
        kwargs.setdefault("db_path", tmp_path / "loom.db")
        model = kwargs.pop("model", "fake-model")
        if isinstance(srv, FakeBackend):
            kwargs.setdefault("backend", srv)
        else:
            kwargs.setdefault("api_key", "sk-test-secret-key")
            kwargs.setdefault("base_url", srv.base_url)
        loom: TaskLoom[Any] = TaskLoom(model, **kwargs)
        made.append(loom)
        return loom

    return factory


@pytest.fixture
def make_loom(tmp_path: Path) -> Iterator[LoomFactory]:
    """Build looms against a server (or a FakeBackend); every loom made is closed after the test."""
    made: list[TaskLoom[Any]] = []
    yield _factory(tmp_path, made)
    for loom in made:
        loom.close()


@pytest.fixture
async def amake_loom(tmp_path: Path) -> AsyncIterator[LoomFactory]:
    """Like make_loom, for async tests: closed with aclose() on the test's own loop, where the
    loom's async HTTP client for that loop lives."""
    made: list[TaskLoom[Any]] = []
    yield _factory(tmp_path, made)
    for loom in made:
        await loom.aclose()
