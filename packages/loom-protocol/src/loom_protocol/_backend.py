"""The ``Backend`` protocol every provider adapter implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ._chat import ChatRequest, ChatResponse

__all__ = ["Backend"]


@runtime_checkable
class Backend(Protocol):
    """A provider adapter.

    Implementations raise :class:`~loom_protocol.BackendError` for every failure of the call
    (never a transport library's own exception) and do not retry: the engine owns retries.
    """

    def complete(self, request: ChatRequest) -> ChatResponse:
        """Send one request and wait for the answer."""
        ...

    async def acomplete(self, request: ChatRequest) -> ChatResponse:
        """Send one request from asyncio."""
        ...

    def close(self) -> None:
        """Release connections held for synchronous use."""
        ...

    async def aclose(self) -> None:
        """Release every connection, sync and async."""
        ...
