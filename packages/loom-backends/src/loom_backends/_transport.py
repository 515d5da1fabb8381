"""The default async transport: an aiohttp connection pool behind httpx's configuration.

httpx's own async pool collapses beyond a few dozen requests in flight (see
``scripts/bench_backends.py``); aiohttp's holds up. ``httpx_aiohttp.AiohttpTransport`` bridges
the two but streams every body through an async iterator. This subclass keeps its
configuration (TLS, limits, session lifecycle) and adds :meth:`send_prepared`, the backends'
one request path: the body is read in one go (an LLM answer is needed whole anyway), and what
every request to the endpoint shares (URL text, headers, timeout, proxy) is worked out once.
Its failures leave as aiohttp's own exceptions; the backend maps them to ``BackendError`` in
one place (``_errors.error_for_transport``), with no httpx hop between.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.request import getproxies, proxy_bypass

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

__all__ = ["BufferedAiohttpTransport", "PreparedTarget"]


@dataclass(frozen=True, slots=True)
class PreparedTarget:
    """An endpoint with its headers, timeout and proxy, ready for aiohttp (see ``prepare``)."""

    url: str
    headers: tuple[tuple[str, str], ...]
    timeout: aiohttp.ClientTimeout
    proxy: str | None


class BufferedAiohttpTransport(AiohttpTransport):
    """An aiohttp connection pool configured like an httpx transport; reads bodies whole.

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

    def prepare(
        self,
        url: httpx.URL,
        headers: list[tuple[str, str]],
        timeouts: Mapping[str, float | None],
    ) -> PreparedTarget:
        """What every request to ``url`` with these headers and timeouts shares, worked out once.

        A backend sends thousands of requests per second to one endpoint with one set of
        headers: converting the URL, merging the headers and looking up the timeout and proxy
        per request costs ~2 µs each time (the ``overhead`` scenario of ``scripts/bench.py``).
        """
        return PreparedTarget(
            url=str(url),
            headers=tuple(headers),
            timeout=self._timeout(timeouts),
            proxy=self._proxy_for(url),
        )

    async def send_bytes(
        self,
        method: str,
        url: httpx.URL,
        headers: list[tuple[str, str]],
        content: bytes | None,
        timeouts: Mapping[str, float | None],
    ) -> tuple[int, str | None, Mapping[str, str], bytes]:
        """Send one request and read the whole answer, without building httpx objects.

        Returns:
            The status, the reason phrase, the (case-insensitive) headers and the body.

        Raises:
            aiohttp.ClientError: The connection failed, timed out or broke mid-answer.
            TimeoutError: No answer in time.
        """
        return await self.send_prepared(method, self.prepare(url, headers, timeouts), content)

    async def send_prepared(
        self, method: str, target: PreparedTarget, content: bytes | None
    ) -> tuple[int, str | None, Mapping[str, str], bytes]:
        """:meth:`send_bytes` to a :meth:`prepare`-d target: the backends' hot path.

        At thousands of requests per second, constructing an ``httpx.Request`` and
        ``httpx.Response`` costs as much CPU as aiohttp's round trip; this builds neither.
        """
        session = self.client
        if not isinstance(session, aiohttp.ClientSession):
            session = self.client = self.get_client()
        async with session.request(
            method,
            target.url,
            headers=target.headers,
            data=content,
            allow_redirects=False,
            timeout=target.timeout,
            proxy=target.proxy,
        ) as answer:
            body = await answer.read()
            return answer.status, answer.reason, answer.headers, body
