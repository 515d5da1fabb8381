"""The async transport: httpx's request/response API over an aiohttp connection pool.

httpx's own async pool collapses beyond a few dozen requests in flight (see
``scripts/bench_backends.py``); aiohttp's holds up. ``httpx_aiohttp.AiohttpTransport`` bridges
the two but streams every body through an async iterator and maps a refused connection to
``httpx.ConnectTimeout``. This subclass keeps its configuration (TLS, limits, session
lifecycle) and replaces the request path: the body is read in one go (an LLM answer is needed
whole anyway), timeouts objects are cached, and aiohttp's exceptions map to the right httpx
exception (refused → ``ConnectError``, slow answer → ``ReadTimeout``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.request import getproxies, proxy_bypass

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

__all__ = ["BufferedAiohttpTransport"]

# Hop-by-hop or re-encoded headers that must not describe the already-decoded body we hand
# to httpx (aiohttp decompresses, so httpx must not try again).
_DROP = frozenset({"content-encoding", "transfer-encoding", "content-length"})


def _httpx_error(exc: BaseException) -> httpx.TransportError:
    """The httpx exception that says what the aiohttp (or socket) exception meant."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message)
    if isinstance(exc, aiohttp.ServerTimeoutError | TimeoutError):
        return httpx.ReadTimeout(message)
    if isinstance(exc, aiohttp.ClientProxyConnectionError | aiohttp.ClientHttpProxyError):
        return httpx.ProxyError(message)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(message)
    if isinstance(exc, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return httpx.UnsupportedProtocol(message)
    return httpx.ReadError(message)


class BufferedAiohttpTransport(AiohttpTransport):
    """An httpx async transport on aiohttp that reads each response body whole.

    One instance belongs to one event loop (its aiohttp session is created lazily on the
    first request, on the running loop). Proxies come from the environment
    (``HTTP(S)_PROXY``, ``NO_PROXY``), as with httpx, read once per origin.

    Args:
        limits: Connection limits; ``max_connections`` sizes the aiohttp pool.
        verify: TLS verification, as in httpx.
    """

    def __init__(self, *, limits: httpx.Limits, verify: bool = True) -> None:
        super().__init__(verify=verify, limits=limits)
        self._timeouts: dict[tuple[Any, ...], aiohttp.ClientTimeout] = {}
        self._proxies: dict[tuple[str, str, int | None], str | None] = {}

    def get_client(self) -> aiohttp.ClientSession:
        """Create the aiohttp session (called once, on the loop that will use it)."""
        connector = aiohttp.TCPConnector(
            limit=self.limits.max_connections or 0,
            limit_per_host=0,
            keepalive_timeout=self.limits.keepalive_expiry or 5.0,
            ssl=self.ssl_context,
        )
        # trust_env stays off: aiohttp then looks proxies up in a worker thread on *every*
        # request, which costs more than the request itself. _proxy_for() does it once.
        return aiohttp.ClientSession(connector=connector, trust_env=False)

    def _proxy_for(self, url: httpx.URL) -> str | None:
        origin = (url.scheme, url.host, url.port)
        if origin not in self._proxies:
            proxy: str | None = None
            if self.proxy is not None:
                proxy = str(self.proxy.url)
            elif not proxy_bypass(url.host):
                proxy = getproxies().get(url.scheme)
            self._proxies[origin] = proxy
        return self._proxies[origin]

    def _timeout(self, phases: Mapping[str, float | None]) -> aiohttp.ClientTimeout:
        key = (phases.get("connect"), phases.get("read"), phases.get("pool"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            connect, read, pool = key
            timeout = aiohttp.ClientTimeout(
                total=None,
                sock_connect=connect,
                sock_read=read,
                # aiohttp's ``connect`` covers waiting for a pooled connection plus connecting.
                connect=None if pool is None or connect is None else pool + connect,
            )
            self._timeouts[key] = timeout
        return timeout

    async def send_bytes(
        self,
        method: str,
        url: httpx.URL,
        headers: list[tuple[str, str]],
        content: bytes | None,
        timeouts: Mapping[str, float | None],
    ) -> tuple[int, str | None, Mapping[str, str], bytes]:
        """Send one request and read the whole answer, without building httpx objects.

        The backends' hot path: at thousands of requests per second, constructing an
        ``httpx.Request`` and ``httpx.Response`` costs as much CPU as aiohttp's round trip.

        Returns:
            The status, the reason phrase, the (case-insensitive) headers and the body.

        Raises:
            httpx.TransportError: The subclass that says what went wrong (see the module).
        """
        session = self.client
        if not isinstance(session, aiohttp.ClientSession):
            session = self.client = self.get_client()
        try:
            async with session.request(
                method,
                str(url),
                headers=headers,
                data=content,
                allow_redirects=False,
                timeout=self._timeout(timeouts),
                proxy=self._proxy_for(url),
            ) as answer:
                body = await answer.read()
                return answer.status, answer.reason, answer.headers, body
        except aiohttp.ClientError as exc:
            raise _httpx_error(exc) from exc
        except TimeoutError as exc:
            raise _httpx_error(exc) from exc

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and return the response with its body already read."""
        try:
            content = request.content
        except httpx.RequestNotRead:  # a streaming request body: read it first
            content = await request.aread()
        status, reason, answer_headers, body = await self.send_bytes(
            request.method,
            request.url,
            [(k, v) for k, v in request.headers.multi_items() if k != "host"],
            content or None,
            request.extensions.get("timeout") or {},
        )
        headers = [(k, v) for k, v in answer_headers.items() if k.lower() not in _DROP]
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if reason:
            extensions["reason_phrase"] = reason.encode("latin-1", "replace")
        return httpx.Response(
            status, headers=headers, content=body, request=request, extensions=extensions
        )
