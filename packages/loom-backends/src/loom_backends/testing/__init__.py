"""Test helpers for Loom users and Loom's own tests.

:class:`FakeLLMServer` is a real HTTP server on 127.0.0.1 speaking the OpenAI
``/v1/chat/completions`` and Anthropic ``/v1/messages`` protocols, scriptable per request,
with injectable faults, recording what it receives. With pytest, the ``fake_llm_server``
fixture (registered by this package's pytest plugin) hands out a started server.
"""

from ._replies import FakeReply, FaultPlan, RecordedRequest
from ._server import FakeLLMServer, Handler

__all__ = ["FakeLLMServer", "FakeReply", "FaultPlan", "Handler", "RecordedRequest"]
