"""The pytest plugin of loom-backends: fixtures around :class:`FakeLLMServer`.

Registered through the ``pytest11`` entry point, so installing ``loom-backends[testing]`` is
enough for any test to ask for ``fake_llm_server``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ._server import FakeLLMServer

__all__ = ["fake_llm_server", "fake_llm_server_factory"]


@pytest.fixture
def fake_llm_server() -> Iterator[FakeLLMServer]:
    """A started :class:`FakeLLMServer` with the echo handler, stopped after the test.

    Script it from the test with ``fake_llm_server.handler = ...``.
    """
    with FakeLLMServer() as server:
        yield server


@pytest.fixture
def fake_llm_server_factory() -> Iterator[Callable[..., FakeLLMServer]]:
    """A function taking :class:`FakeLLMServer`'s arguments and returning a started server.

    Every server it made is stopped after the test.
    """
    servers: list[FakeLLMServer] = []

    def make(*args: Any, **kwargs: Any) -> FakeLLMServer:
        server = FakeLLMServer(*args, **kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
