"""``resolve_backend``: from a model name (or an explicit backend or client) to a backend.

Model names are routed through one registry of backend factories, keyed like the
``loom.backends`` entry-point group: a key ``"name"`` serves ``"name/<model>"`` (the prefix
is stripped). The built-in backends are entries of that registry, shaped like entry points
and loaded the same way; they are found without scanning the installed distributions (a
model name without ``/`` never pays for that scan), and they win a clash. One more built-in
key, ``"claude-"``, serves every model name starting with it, unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any, NamedTuple

from loom_protocol import (
    MAX_TIMEOUT,
    Backend,
    LoomUsageError,
    check_header,
    check_http_url,
    check_int,
    check_non_empty_string,
    check_positive_number,
)

from ._anthropic import AnthropicBackend
from ._callable import OpenAIClientBackend
from ._defaults import DEFAULT_MAX_CONNECTIONS, DEFAULT_TIMEOUT, OPENAI_BASE_URL_ENV
from ._endpoints import Endpoint, check_endpoints
from ._openai import OpenAIChatBackend
from ._pool import EndpointPool

__all__ = [
    "ENTRY_POINT_GROUP",
    "BaseURL",
    "ResolvedBackend",
    "backend_route",
    "check_endpoint_args",
    "resolve_backend",
]

#: Third-party backends register a factory under this entry-point group; its name is the
#: model prefix they serve (``"mistral"`` serves ``"mistral/<model>"``).
ENTRY_POINT_GROUP = "loom.backends"


class _BuiltIn(NamedTuple):
    """A built-in registry entry, shaped like an ``importlib.metadata.EntryPoint``."""

    name: str
    value: str
    factory: Callable[..., Backend]

    def load(self) -> Callable[..., Backend]:
        return self.factory


_BUILT_IN: dict[str, _BuiltIn] = {
    entry.name: entry
    for entry in (
        _BuiltIn("anthropic", "loom_backends:AnthropicBackend", AnthropicBackend),
        _BuiltIn("openai", "loom_backends:OpenAIChatBackend", OpenAIChatBackend),
        _BuiltIn("claude-", "loom_backends:AnthropicBackend", AnthropicBackend),
    )
}


class ResolvedBackend(NamedTuple):
    """What :func:`resolve_backend` chose.

    Attributes:
        backend: The backend to call.
        model: The model name to put in each ``ChatRequest`` (a routing prefix removed).
    """

    backend: Backend
    model: str


def _is_backend(obj: object) -> bool:
    return not isinstance(obj, type) and isinstance(obj, Backend)


def _registered() -> dict[str, Any]:
    """The ``loom.backends`` entry points, by name (built-ins are not scanned for)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _name_route(model: str) -> _BuiltIn | None:
    """The built-in entry whose ``-``-ending key starts ``model``, if any."""
    for key, entry in _BUILT_IN.items():
        if key.endswith("-") and model.startswith(key):
            return entry
    return None


def backend_route(model: str, *, base_url_known: bool) -> str | None:
    """Which backend serves ``model``: the registry entry's target (``"module:Class"``).

    Two model names with the same route go to the same kind of backend (``anthropic/x`` and
    ``claude-y`` both to Anthropic): a fallback model of the same route can share the primary
    model's backend, its endpoints and keys. ``None`` when the name cannot be routed.

    Args:
        model: The model name.
        base_url_known: Whether a base URL is given (or set in the environment): then an
            unknown ``prefix/`` is an OpenAI-compatible model id.
    """
    prefix, slash, rest = model.partition("/")
    if not slash:
        return (_name_route(model) or _BUILT_IN["openai"]).value
    if not prefix or not rest:
        return None
    entry = _BUILT_IN.get(prefix) if not prefix.endswith("-") else None
    if entry is not None:
        return entry.value
    registered = _registered()
    if prefix in registered:
        return str(registered[prefix].value)
    return _BUILT_IN["openai"].value if base_url_known else None


#: What ``base_url=`` and ``endpoints=`` take: one URL, or a list of endpoints.
BaseURL = str | Sequence[Endpoint | str | dict[str, Any]]


def check_endpoint_args(
    base_url: object, endpoints: object
) -> tuple[str | None, tuple[Endpoint, ...] | None]:
    """``base_url`` and ``endpoints`` checked: (one URL or ``None``, a list or ``None``).

    ``base_url`` may be one URL or a list; ``endpoints`` only a list; not both at once.

    Raises:
        LoomUsageError: Both given, a bad URL, or a bad list (see :func:`check_endpoints`).
    """
    if endpoints is not None:
        if base_url is not None and base_url != "":
            raise LoomUsageError(
                "give base_url= or endpoints=, not both (endpoints= lists every server)"
            )
        return None, check_endpoints(endpoints, "endpoints")
    if base_url is None or base_url == "":
        return None, None
    if not isinstance(base_url, list | tuple):  # one URL, the common case: its own message
        check_http_url("base_url", base_url)
        return str(base_url), None
    return None, check_endpoints(base_url, "base_url")


def resolve_backend(
    model: str,
    client: Any = None,
    backend: Backend | None = None,
    base_url: BaseURL | None = None,
    api_key: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    endpoints: Sequence[Endpoint | str | dict[str, Any]] | None = None,
) -> ResolvedBackend:
    """Choose the backend for ``model``.

    Precedence: an explicit ``backend``; then ``client`` (a Backend as it is, or an OpenAI
    SDK client wrapped in :class:`OpenAIClientBackend`); then the model name:

    * ``anthropic/<m>`` → :class:`AnthropicBackend`, model ``<m>``; ``claude-…`` → Anthropic,
      model unchanged;
    * ``openai/<m>`` → :class:`OpenAIChatBackend`, model ``<m>``;
    * ``<prefix>/<m>`` with ``<prefix>`` registered in the ``loom.backends`` entry-point group →
      ``factory(base_url=..., api_key=..., timeout=..., max_connections=...)``, model ``<m>``
      (the built-ins are entries of the same registry and win a clash);
    * any other ``<prefix>/<m>`` → :class:`OpenAIChatBackend` with the model unchanged when a
      base URL is known (argument or ``OPENAI_BASE_URL``; vLLM and Together model ids contain
      ``/``), else :class:`~loom_protocol.LoomUsageError`;
    * no ``/`` → :class:`OpenAIChatBackend`, model unchanged.

    With an explicit ``backend`` or ``client`` the model name is returned unchanged and
    ``base_url`` / ``api_key`` / ``endpoints`` are not used.

    Several endpoints (``base_url`` as a list, or ``endpoints``) make an
    :class:`EndpointPool` of the backend the model name chooses, one per endpoint, each with
    its own key (else ``api_key``, else the backend's environment variable); a list of one
    makes that one backend.

    ``base_url``, ``api_key``, ``timeout`` and ``max_connections`` are checked in every case
    (a bad value is a bug even when an explicit backend makes it unused).

    Raises:
        LoomUsageError: An empty model, an object that is no backend or client, an unknown
            prefix, a registered factory that does not return a backend, a base_url that is
            no usable http(s) URL, or a bad timeout, api_key or max_connections.
    """
    check_non_empty_string("model", model, allow_blank=False)
    single, listed = check_endpoint_args(base_url, endpoints)
    if api_key is not None:
        check_header("api_key", api_key)
    check_positive_number("timeout", timeout, " of seconds", MAX_TIMEOUT)
    check_int("max_connections", max_connections, 1)
    if backend is not None:
        if not _is_backend(backend):
            raise LoomUsageError(
                f"backend must implement the Backend protocol (acomplete, aclose), "
                f"got {type(backend).__name__}"
            )
        return ResolvedBackend(backend, model)
    if client is not None:
        if _is_backend(client):
            return ResolvedBackend(client, model)
        completions = getattr(getattr(client, "chat", None), "completions", None)
        if callable(getattr(completions, "create", None)):
            return ResolvedBackend(OpenAIClientBackend(client), model)
        raise LoomUsageError(
            f"client must be a Backend or an OpenAI SDK client (with .chat.completions.create), "
            f"got {type(client).__name__}"
        )
    http: dict[str, Any] = {
        "base_url": single,
        "api_key": api_key,
        "timeout": timeout,
        "max_connections": max_connections,
    }
    openai = _BUILT_IN["openai"]
    prefix, slash, rest = model.partition("/")
    if not slash:
        named = _name_route(model) or openai
        return ResolvedBackend(_from_entry_point(named.name, named, http, listed), model)
    if not prefix or not rest:
        raise LoomUsageError(f"model {model!r} has an empty part around '/'")
    entry = _BUILT_IN.get(prefix) if not prefix.endswith("-") else None
    if entry is not None:
        return ResolvedBackend(_from_entry_point(prefix, entry, http, listed), rest)
    registered = _registered()
    if prefix in registered:
        return ResolvedBackend(_from_entry_point(prefix, registered[prefix], http, listed), rest)
    if single or listed or os.environ.get(OPENAI_BASE_URL_ENV):
        return ResolvedBackend(_from_entry_point("openai", openai, http, listed), model)
    prefixes = [name for name in _BUILT_IN if not name.endswith("-")]
    known = ", ".join([*prefixes, *sorted(k for k in registered if k not in _BUILT_IN)])
    raise LoomUsageError(
        f"unknown backend prefix {prefix!r} in model {model!r}; known: {known}; pass "
        f"base_url=... for an OpenAI-compatible server whose model ids contain '/'"
    )


def _from_entry_point(
    prefix: str,
    entry_point: Any,
    http: dict[str, Any],
    listed: tuple[Endpoint, ...] | None = None,
) -> Backend:
    """The entry point's backend for ``http``; with ``listed``, one per endpoint, pooled."""
    if isinstance(entry_point, _BuiltIn):
        where = f"built-in backend {prefix!r} ({entry_point.value})"
    else:
        where = f"entry point {prefix!r} ({entry_point.value}) in group {ENTRY_POINT_GROUP!r}"
    try:
        factory = entry_point.load()
    except Exception as exc:
        raise LoomUsageError(f"cannot load {where}: {type(exc).__name__}: {exc}") from exc
    if not callable(factory):
        raise LoomUsageError(f"{where} is not callable")
    if listed is None:
        return _made(where, factory, http)
    if len(listed) == 1:  # one server: no pool, no breaker (the engine's retries suffice)
        only = listed[0]
        key = only.key("endpoints[0]") or http["api_key"]
        return _made(where, factory, {**http, "base_url": only.url, "api_key": key})

    def make(**args: Any) -> Backend:
        return _made(where, factory, args)

    return EndpointPool(
        listed,
        api_key=http["api_key"],
        factory=make,
        timeout=http["timeout"],
        max_connections=http["max_connections"],
    )


def _made(where: str, factory: Callable[..., Any], http: dict[str, Any]) -> Backend:
    try:
        made = factory(**http)
    except LoomUsageError:
        raise
    except Exception as exc:
        raise LoomUsageError(f"{where} failed: {type(exc).__name__}: {exc}") from exc
    if not _is_backend(made):
        raise LoomUsageError(
            f"{where} returned {type(made).__name__}, which does not implement the Backend "
            f"protocol (acomplete, aclose)"
        )
    return made  # type: ignore[no-any-return]
