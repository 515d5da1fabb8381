"""Test helpers for Loom users, third-party backends and Loom's own tests.

:class:`FakeLLMServer` is a real HTTP server on 127.0.0.1 speaking the OpenAI
``/v1/chat/completions`` and Anthropic ``/v1/messages`` protocols, scriptable per request,
with injectable faults, recording what it receives; it serves OpenAI's Batch API and
Anthropic's Message Batches too, scripted by a :class:`BatchPlan`. With pytest, the
``fake_llm_server`` fixture (registered by this package's pytest plugin) hands out a started server.
:class:`FakeBackend` gives the same answers in process, without a socket.

:class:`BackendContract` is the conformance suite every backend passes: a third-party backend
subclasses it in its own tests (it imports pytest, so it is loaded on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._batch_jobs import BatchPlan
from ._fake_backend import FakeBackend
from ._limits import ServerLimits
from ._replies import FakeReply, FaultPlan, RecordedRequest
from ._server import FakeLLMServer, Handler

if TYPE_CHECKING:
    from ._suite import CONTRACT_API_KEY, ERROR_ROWS, BackendContract, contract_request

__all__ = [
    "CONTRACT_API_KEY",
    "ERROR_ROWS",
    "BackendContract",
    "BatchPlan",
    "FakeBackend",
    "FakeLLMServer",
    "FakeReply",
    "FaultPlan",
    "Handler",
    "RecordedRequest",
    "ServerLimits",
    "contract_request",
]

_SUITE = frozenset({"CONTRACT_API_KEY", "ERROR_ROWS", "BackendContract", "contract_request"})


def __getattr__(name: str) -> Any:
    # The suite imports pytest: FakeLLMServer users (benchmarks, scripts) need not have it.
    if name in _SUITE:
        from . import _suite

        return getattr(_suite, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
