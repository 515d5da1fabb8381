"""The HTTP core shared by the OpenAI-compatible and Anthropic backends.

A subclass only builds the request body and parses the answer (plain functions, no I/O); this
class owns the connection pools (one per event loop) and does the I/O, asyncio only. Every
failure leaves as a :class:`~loom_protocol.BackendError`, mapped in one place
(``_errors.error_for_transport``): no httpx or aiohttp exception reaches the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncGenerator, Mapping
from typing import Any, ClassVar, Self
from urllib.parse import parse_qsl, unquote_plus, urlunsplit

import httpx

from loom_protocol import (
    MASK,
    MAX_TIMEOUT,
    BackendError,
    ChatRequest,
    ChatResponse,
    LoomUsageError,
    check_header,
    check_http_url,
    check_int,
    check_positive_number,
    is_secret_name,
    redact_headers,
    redact_url,
)

from ._defaults import DEFAULT_MAX_CONNECTIONS, DEFAULT_TIMEOUT
from ._errors import error_for_transport
from ._json import encode_json, parse_json_answer
from ._limits import parse_rate_limit_headers
from ._transport import BufferedAiohttpTransport, PreparedTarget
from ._version import __version__ as _VERSION

__all__ = ["HTTPBackend"]


class HTTPBackend:
    """Base of the HTTP backends: configuration, clients, I/O and error wrapping.

    Subclasses set the class variables and implement :meth:`_build_body` and
    :meth:`_parse_answer`, both free of I/O.
    """

    _ENV_BASE_URL: ClassVar[str]
    _ENV_API_KEY: ClassVar[str]
    _DEFAULT_BASE_URL: ClassVar[str]
    #: The official host, where a request without a key can only fail.
    _KEYED_HOST: ClassVar[str]

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        headers: Mapping[str, str] | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        name = type(self).__name__
        if base_url is not None and base_url != "":
            base: str = base_url
            where = f"{name}: base_url"
        elif os.environ.get(self._ENV_BASE_URL):
            base = os.environ[self._ENV_BASE_URL]
            where = f"{name}: {self._ENV_BASE_URL} (from the environment)"
        else:
            base = self._DEFAULT_BASE_URL
            where = f"{name}: base_url"
        parts = check_http_url(where, base)
        url_where = (where, redact_url(base))
        seconds = check_positive_number(f"{name}: timeout", timeout, " of seconds", MAX_TIMEOUT)
        check_int(f"{name}: max_connections", max_connections, 1)
        if headers is not None and not isinstance(headers, Mapping):
            raise LoomUsageError(f"{name}: headers must be a mapping, got {type(headers).__name__}")
        custom = {str(k).lower(): str(v) for k, v in (headers or {}).items()}
        for key, value in custom.items():
            check_header(f"{name}: the name of header {key!r}", key)
            check_header(f"{name}: the value of header {key!r}", value)
        if api_key is not None:
            self._api_key: str | None = check_header(f"{name}: api_key", api_key)
        else:
            from_env = os.environ.get(self._ENV_API_KEY) or None
            where = f"{name}: {self._ENV_API_KEY} (from the environment)"
            self._api_key = check_header(where, from_env) if from_env else None
        if (
            not self._api_key
            and (parts.hostname or "").lower() == self._KEYED_HOST
            and not any(is_secret_name(k) for k in custom)
        ):
            # Without this every request would go out and come back 401, one row at a time.
            given = "api_key is empty" if api_key is not None else f"{self._ENV_API_KEY} is not set"
            raise LoomUsageError(
                f"{name}: no API key for {self._KEYED_HOST} ({given}): set {self._ENV_API_KEY} "
                f"or pass api_key=...; for a local or self-hosted server pass base_url= (or set "
                f"{self._ENV_BASE_URL})"
            )
        # The query stays on the endpoint: {root}/chat/completions?api-version=... (Azure).
        path = parts.path.rstrip("/")
        self._base_url = urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
        self._url = urlunsplit((parts.scheme, parts.netloc, self._endpoint(path), parts.query, ""))
        self._timeout = httpx.Timeout(seconds)
        self._limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        # Headers are built once: per-request header work is measurable at thousands of req/s.
        self._headers = {
            "content-type": "application/json",
            "accept": "application/json",
            "user-agent": f"loom-backends/{_VERSION}",
        }
        self._headers.update(self._auth_headers(self._api_key))
        self._headers.update(custom)
        self._custom_headers = custom
        # Everything secret is blanked out of errors: the key, credential-like header values
        # and the base URL's secret query values (Azure's ?api-key=...).
        query_secrets = [
            value for key, value in parse_qsl(parts.query) if is_secret_name(key) and value
        ]
        # ...also as written in the URL (percent-encoded), the form an echoed URL carries.
        for item in parts.query.split("&"):
            key, _, value = item.partition("=")
            if value and is_secret_name(unquote_plus(key)):
                query_secrets.append(value)
        self._secrets: tuple[str | None, ...] = (
            self._api_key,
            *(value for key, value in custom.items() if is_secret_name(key)),
            *query_secrets,
        )
        self._async_transport = async_transport
        self._lock = threading.Lock()
        # One async transport (connection pool) per event loop: an aiohttp session and its
        # connections belong to the loop that created them, and the engine calls us from its
        # own loop and from users' loops (FastAPI's, asyncio.run in a notebook cell...).
        self._async_transports: dict[asyncio.AbstractEventLoop, httpx.AsyncBaseTransport] = {}
        self._guards: dict[asyncio.AbstractEventLoop, _LoopGuard] = {}
        try:
            self._httpx_url = httpx.URL(self._url)
        except httpx.InvalidURL as exc:  # what urlsplit lets through and httpx does not
            raise LoomUsageError(
                f"{url_where[0]} is not a valid URL ({exc}): {url_where[1]!r}"
            ) from None
        self._httpx_headers = httpx.Headers(self._headers)
        self._timeouts = self._timeout.as_dict()
        self._header_list = list(self._headers.items())
        # The default transport's view of the endpoint, for the transport it was made by.
        self._prepared: tuple[BufferedAiohttpTransport, PreparedTarget] | None = None

    # -- what a subclass provides -------------------------------------------------------------

    def _endpoint(self, path: str) -> str:
        """The endpoint's path, from the base URL's path (no trailing slash)."""
        raise NotImplementedError

    def _auth_headers(self, api_key: str | None) -> dict[str, str]:
        raise NotImplementedError

    def _build_body(self, request: ChatRequest) -> dict[str, Any]:
        raise NotImplementedError

    def _parse_answer(self, data: dict[str, Any], content: bytes, status: int) -> ChatResponse:
        raise NotImplementedError

    # -- shared core --------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The provider's base URL (without a trailing slash; its query, if any, kept)."""
        return self._base_url

    @property
    def url(self) -> str:
        """The endpoint every request is POSTed to (the base URL's query kept at its end)."""
        return self._url

    def _encode(self, request: ChatRequest) -> bytes:
        if not isinstance(request, ChatRequest):
            raise LoomUsageError(
                f"{type(self).__name__} expects a ChatRequest, got {type(request).__name__}"
            )
        # One encoding of a plain dict: no pydantic serialisation on the hot path.
        return encode_json(self._build_body(request)).encode()

    def _decode(self, status: int, content: bytes, headers: Mapping[str, str]) -> ChatResponse:
        # The rate-limit headers are read from every answer, refusals included: the engine
        # paces itself by them (issue 15).
        limits = parse_rate_limit_headers(headers)
        try:
            data = parse_json_answer(status, content, headers, self._secrets)
        except BackendError as exc:
            if exc.rate_limit is None:  # a status error has its own; a bad 200 body not
                exc.rate_limit = limits
            raise
        response = self._parse_answer(data, content, status)
        if limits is None:
            return response
        return response.model_copy(update={"rate_limit": limits})

    def _loop_transport(self) -> httpx.AsyncBaseTransport:
        loop = asyncio.get_running_loop()
        transport = self._async_transports.get(loop)
        if transport is None:
            with self._lock:
                transport = self._async_transports.get(loop)
                if transport is None:
                    self._forget_closed_loops()
                    # httpx's own async pool collapses beyond a few dozen requests in flight;
                    # the aiohttp one holds up (see scripts/bench_backends.py).
                    transport = self._async_transport or BufferedAiohttpTransport(
                        limits=self._limits
                    )
                    self._async_transports[loop] = transport
                    if self._async_transport is None:  # an injected transport is the caller's
                        self._guards[loop] = _LoopGuard(self, loop, transport)
        return transport

    def _forget(self, loop: asyncio.AbstractEventLoop, transport: object) -> None:
        with self._lock:
            if self._async_transports.get(loop) is transport:
                del self._async_transports[loop]
                self._guards.pop(loop, None)
                self._prepared = None

    def _forget_closed_loops(self) -> None:
        # A closed loop can no longer run its client's aclose(); drop our reference so a
        # process that runs many short loops (asyncio.run per call) does not keep them all.
        for loop in [loop for loop in self._async_transports if loop.is_closed()]:
            del self._async_transports[loop]
            self._prepared = None  # it may hold that loop's transport
            guard = self._guards.pop(loop, None)
            if guard is not None:
                guard.discard()

    async def acomplete(self, request: ChatRequest) -> ChatResponse:
        """Send one request from asyncio, on a client owned by the running loop.

        Raises:
            BackendError: For every failure, classified by the one error table.
        """
        content = self._encode(request)
        transport = self._loop_transport()
        try:
            if isinstance(transport, BufferedAiohttpTransport):
                # The default transport: skip building httpx.Request/Response objects, which
                # at thousands of requests per second cost as much as the round trip itself.
                prepared = self._prepared
                if prepared is None or prepared[0] is not transport:
                    target = transport.prepare(self._httpx_url, self._header_list, self._timeouts)
                    prepared = self._prepared = (transport, target)
                answer = await transport.send_prepared("POST", prepared[1], content)
                status, _, headers, body = answer
            else:
                status, headers, body = await self._send_httpx(
                    transport, "POST", self._httpx_url, self._httpx_headers, content
                )
        except Exception as exc:
            raise error_for_transport(exc, secrets=self._secrets) from None
        return self._decode(status, body, headers)

    async def _send_httpx(
        self,
        transport: httpx.AsyncBaseTransport,
        method: str,
        url: httpx.URL | str,
        headers: Any,
        content: bytes | None,
    ) -> tuple[int, httpx.Headers, bytes]:
        """One call through a plain httpx transport (an injected one): status, headers, body.

        Its exceptions are left to the caller's one mapping (``error_for_transport``).
        """
        response = await transport.handle_async_request(
            httpx.Request(
                method,
                url,
                headers=headers,
                content=content,
                extensions={"timeout": self._timeouts},
            )
        )
        try:
            body = await response.aread()
        finally:
            await response.aclose()
        return response.status_code, response.headers, body

    async def aclose(self) -> None:
        """Close the running loop's connections; forget those of loops already closed.

        Call it from every event loop that used :meth:`acomplete` before that loop ends (a
        loop ended by ``asyncio.run`` closes its pool by itself). The backend stays usable: a
        later call opens new connections.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            transport = self._async_transports.pop(loop, None)
            guard = self._guards.pop(loop, None)
            self._prepared = None
            self._forget_closed_loops()
        if guard is not None:
            guard.discard()
        if transport is not None:
            await transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        # Never a secret: a repr ends up in logs and tracebacks.
        key = repr(MASK) if self._api_key else "None"
        shown = f"base_url={redact_url(self._base_url)!r}, api_key={key}"
        if self._custom_headers:
            shown += f", headers={redact_headers(self._custom_headers)!r}"
        return f"{type(self).__name__}({shown})"


class _LoopGuard:
    """Closes one loop's connection pool when that loop shuts down.

    A user who runs a loom inside ``asyncio.run(...)`` and closes it afterwards (or never)
    would otherwise leave that loop's aiohttp session open. An async generator parked at its
    first ``yield`` is registered with the loop (its firstiter hook), and ``asyncio.run`` —
    like every orderly loop shutdown — calls ``shutdown_asyncgens()``, which closes it: the
    ``finally`` then closes the pool on the loop that owns it.
    """

    __slots__ = ("_agen", "_live")

    def __init__(self, owner: HTTPBackend, loop: asyncio.AbstractEventLoop, transport: Any) -> None:
        self._live = True
        self._agen = self._guard(owner, loop, transport)
        # Run it to its first yield now (nothing before the yield awaits): that registers it
        # with the running loop, which keeps only a weak reference; we keep the strong one.
        step = self._agen.asend(None)
        try:
            step.send(None)
        except StopIteration:
            return
        raise RuntimeError("loop guard did not park")  # pragma: no cover - no await before it

    async def _guard(
        self, owner: HTTPBackend, loop: asyncio.AbstractEventLoop, transport: Any
    ) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            if self._live:
                owner._forget(loop, transport)
                await transport.aclose()

    def discard(self) -> None:
        """Finish the generator without touching the pool (already closed, or its loop gone)."""
        self._live = False
        step = self._agen.aclose()
        with contextlib.suppress(StopIteration, RuntimeError):
            step.send(None)
