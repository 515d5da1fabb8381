"""The ``Backend`` protocol every provider adapter implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ._chat import ChatRequest, ChatResponse

__all__ = ["Backend"]


@runtime_checkable
class Backend(Protocol):
    """A provider adapter: asyncio only.

    Implementations raise :class:`~loom_protocol.BackendError` for every failure of the call
    (never a transport library's own exception) and do not retry: the engine owns retries.
    There is no synchronous half: a synchronous caller goes through the engine's own loop
    thread (``TaskLoom``), and an adapter around blocking code runs it in a worker thread.
    """

    async def acomplete(self, request: ChatRequest) -> ChatResponse:
        """Send one request and await the answer."""
        ...

    async def aclose(self) -> None:
        """Release what the running event loop holds (connections, worker threads).

        The backend stays usable: a later call opens new resources.
        """
        ...
