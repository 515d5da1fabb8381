"""A FastAPI service streaming a batch's results as Server-Sent Events.

    uv run python examples/fastapi_sse.py     # on 127.0.0.1:8000; needs OPENAI_API_KEY
    curl -N -X POST localhost:8000/api/batch_extract -H 'content-type: application/json' \\
         -d '[{"text": "Invoice 2024-17 from ACME, total 120.50 EUR"}]'

``POST /api/batch_extract`` takes a JSON list of inputs and answers ``text/event-stream``: one
``batch_start``, one ``task_result`` per input as soon as it finishes (not in input order), then
``batch_end``, each as ``event: <type>`` and ``data: <json>``. A client parses every ``data``
line with ``loom_protocol.parse_stream_event``, with only loom-protocol installed. If the
client disconnects, the calls in flight are cancelled; finished results stay in the store, so
posting the same batch again answers them at once.

``build_app(loom)`` builds the app around a given loom (tests inject one bound to a
FakeLLMServer); the module-level ``app`` makes its own loom when it starts and closes it on
shutdown. Nothing is created or contacted at import time.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from loom_core import TaskLoom

PROMPT = (
    "Extract the key fields of this invoice as a JSON object with the keys number, vendor, "
    "total and currency (null when absent): {{ text }}"
)


def default_loom() -> TaskLoom[Any]:
    """The service's loom: the model from ``LOOM_MODEL``, the store from ``LOOM_DB``."""
    return TaskLoom(
        os.environ.get("LOOM_MODEL", "gpt-4o-mini"),
        PROMPT,
        response_model=dict,
        store=os.environ.get("LOOM_DB", ".loom.db"),
        # Inputs come from the network: local image paths must stay inside this folder.
        image_root=os.environ.get("LOOM_IMAGE_ROOT", "uploads"),
        rpm=float(os.environ["LOOM_RPM"]) if os.environ.get("LOOM_RPM") else None,
    )


def sse(event_type: str, data: str) -> str:
    """One Server-Sent Event (``data`` is one line of JSON, so it needs no splitting)."""
    return f"event: {event_type}\ndata: {data}\n\n"


def build_app(
    loom: TaskLoom[Any] | None = None, *, task_name: str = "invoice_prod", max_workers: int = 20
) -> FastAPI:
    """The FastAPI app.

    Args:
        loom: The loom to serve (``None``: one made by :func:`default_loom` at startup). The
            app owns it and closes it at shutdown, on the server's own event loop: that is
            where the connections it opened for this app live.
        task_name: The store's task name (results are cached and resumed under it).
        max_workers: Calls in flight per request.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        served = loom if loom is not None else default_loom()
        app.state.loom = served
        try:
            yield
        finally:
            await served.aclose()

    app = FastAPI(title="Loom batch extraction", lifespan=lifespan)

    @app.post("/api/batch_extract")
    async def batch_extract(payload: list[dict[str, Any]], request: Request) -> StreamingResponse:
        served: TaskLoom[Any] = request.app.state.loom

        async def event_stream() -> AsyncIterator[str]:
            events = served.astream_events(payload, task_name=task_name, max_workers=max_workers)
            async for event in events:
                yield sse(event.type, event.model_dump_json())

        return StreamingResponse(
            event_stream(),
            media_type="text/event-stream",
            # Proxies must pass each event on at once instead of buffering the stream.
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return app


app = build_app()

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
