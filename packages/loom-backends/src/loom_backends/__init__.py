"""loom-backends: Loom's provider adapters (level 1).

Depends on loom-protocol, httpx and the httpx-aiohttp transport; never imports loom-store,
loom-core, or a provider SDK. Every backend implements :class:`loom_protocol.Backend`, raises
only :class:`loom_protocol.BackendError` (classified by one error table: see
:func:`error_for_status`) and never retries: the engine owns retries.

``loom_backends.testing`` holds :class:`~loom_backends.testing.FakeLLMServer`, a real local
OpenAI- and Anthropic-compatible server for tests and benchmarks.
"""

from ._anthropic import AnthropicBackend
from ._callable import CallableBackend, OpenAIClientBackend
from ._errors import error_for_status, error_for_transport, parse_retry_after
from ._openai import OpenAIChatBackend
from ._resolve import ENTRY_POINT_GROUP, ResolvedBackend, resolve_backend
from ._version import __version__ as __version__

__all__ = [
    "ENTRY_POINT_GROUP",
    "AnthropicBackend",
    "CallableBackend",
    "OpenAIChatBackend",
    "OpenAIClientBackend",
    "ResolvedBackend",
    "error_for_status",
    "error_for_transport",
    "parse_retry_after",
    "resolve_backend",
]
