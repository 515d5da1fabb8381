"""Shared fixtures of the loom-backends tests."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loom_backends.testing import FakeLLMServer

# fake_handlers.py (picklable handlers for process=True) sits next to the tests; with
# --import-mode=importlib this folder is not on sys.path by itself.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="module")
def shared_server() -> Iterator[FakeLLMServer]:
    """One server per test module (starting one per test adds up over hundreds of tests)."""
    with FakeLLMServer() as server:
        yield server


@pytest.fixture
def server(shared_server: FakeLLMServer) -> Iterator[FakeLLMServer]:
    """The module's server with the echo handler and an empty record."""
    shared_server.handler = None
    shared_server.clear()
    yield shared_server
    shared_server.handler = None


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A local port nothing listens on: bound, never listening, for the test's length, so
    that no other process (a parallel test) can take it meanwhile. A connect is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])
