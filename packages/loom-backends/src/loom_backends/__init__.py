"""loom-backends: Loom's provider adapters (level 1).

Depends on loom-protocol, httpx and the httpx-aiohttp transport; never imports loom-store,
loom-core, or a provider SDK. Every backend implements :class:`loom_protocol.Backend`, raises
only :class:`loom_protocol.BackendError` (classified by one error table: see
:func:`error_for_status`) and never retries: the engine owns retries. Backends are asyncio
only (``acomplete`` / ``aclose``); a blocking function or SDK client runs in a worker thread.
:class:`EndpointPool` spreads requests over several servers of one model, with a circuit
breaker per server; its failover to another server is routing, not a retry.

``loom_backends.testing`` holds :class:`~loom_backends.testing.FakeLLMServer`, a real local
OpenAI- and Anthropic-compatible server for tests and benchmarks, its in-process twin
:class:`~loom_backends.testing.FakeBackend`, and :class:`~loom_backends.testing.BackendContract`,
the conformance suite a third-party backend subclasses.

:class:`OpenAIChatBackend` and :class:`AnthropicBackend` also implement
:class:`loom_protocol.ProviderBatchBackend` (OpenAI's Batch API, Anthropic's Message Batches).
"""

from ._admission import EndpointLimit, EndpointPacer
from ._anthropic import AnthropicBackend
from ._anthropic_batch import ANTHROPIC_BATCH_LIMITS
from ._breaker import DEFAULT_COOLDOWN, DEFAULT_FAILURE_THRESHOLD, DEFAULT_MAX_COOLDOWN
from ._callable import CallableBackend, OpenAIClientBackend
from ._defaults import (
    ANTHROPIC_API_KEY_ENV,
    ANTHROPIC_BASE_URL_ENV,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_TIMEOUT,
    OPENAI_API_KEY_ENV,
    OPENAI_BASE_URL_ENV,
)
from ._endpoints import MAX_ENDPOINTS, Endpoint, check_endpoints
from ._errors import error_for_status, error_for_transport, parse_retry_after
from ._limits import parse_rate_limit_headers
from ._openai import OpenAIChatBackend
from ._openai_batch import OPENAI_BATCH_LIMITS
from ._pool import EndpointPool, EndpointStatus
from ._resolve import ENTRY_POINT_GROUP, ResolvedBackend, backend_route, resolve_backend
from ._version import __version__ as __version__

__all__ = [
    "ANTHROPIC_API_KEY_ENV",
    "ANTHROPIC_BASE_URL_ENV",
    "ANTHROPIC_BATCH_LIMITS",
    "DEFAULT_COOLDOWN",
    "DEFAULT_FAILURE_THRESHOLD",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_COOLDOWN",
    "DEFAULT_TIMEOUT",
    "ENTRY_POINT_GROUP",
    "MAX_ENDPOINTS",
    "OPENAI_API_KEY_ENV",
    "OPENAI_BASE_URL_ENV",
    "OPENAI_BATCH_LIMITS",
    "AnthropicBackend",
    "CallableBackend",
    "Endpoint",
    "EndpointLimit",
    "EndpointPacer",
    "EndpointPool",
    "EndpointStatus",
    "OpenAIChatBackend",
    "OpenAIClientBackend",
    "ResolvedBackend",
    "backend_route",
    "check_endpoints",
    "error_for_status",
    "error_for_transport",
    "parse_rate_limit_headers",
    "parse_retry_after",
    "resolve_backend",
]
