"""FakeLLMServer's Batch APIs: OpenAI's files and batches, Anthropic's Message Batches.

The routes record every call in ``server.requests`` (with its path) like the chat routes, and
answer each request of a batch with the server's handler, through the same rendering as an
online answer (``_replies.reply_payload``). State lives in a ``BatchBook``; the JSON shapes
are the providers' own (``_batch_render``).
"""

from __future__ import annotations

import json
import time
import traceback
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ._batch_jobs import BatchBook, BatchPlan, FakeBatch, FakeFile, Provider
from ._batch_parse import (
    after_cursor,
    anthropic_lines,
    good_metadata,
    json_body,
    loads,
    openai_lines,
    origin,
)
from ._batch_render import (
    anthropic_batch,
    anthropic_results,
    openai_batch,
    openai_file,
    write_files,
)
from ._replies import FakeReply, RecordedRequest, handler_reply, reply_payload

if TYPE_CHECKING:
    from ._app import ServerCore

__all__ = ["BatchRoutes"]

_OPENAI_ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/responses", "/v1/embeddings"})
_ERROR_TYPES = {
    400: "invalid_request_error",
    404: "not_found_error",
    413: "request_too_large",
    500: "api_error",
    503: "overloaded_error",
}


class BatchRoutes:
    """The Batch API routes of one ServerCore."""

    def __init__(self, core: ServerCore, plan: BatchPlan) -> None:
        self.core = core
        self.book = BatchBook(plan, core.config.seed)

    def add_routes(self, app: web.Application) -> None:
        add = app.router
        add.add_post("/v1/files", self.upload)
        add.add_get("/v1/files/{file_id}", self.get_file)
        add.add_get("/v1/files/{file_id}/content", self.file_content)
        add.add_post("/v1/batches", self.openai_create)
        add.add_get("/v1/batches", self.openai_list)
        add.add_get("/v1/batches/{batch_id}", self.openai_get)
        add.add_post("/v1/batches/{batch_id}/cancel", self.openai_cancel)
        add.add_post("/v1/messages/batches", self.anthropic_create)
        add.add_get("/v1/messages/batches", self.anthropic_list)
        add.add_get("/v1/messages/batches/{batch_id}", self.anthropic_get)
        add.add_post("/v1/messages/batches/{batch_id}/cancel", self.anthropic_cancel)
        add.add_get("/v1/messages/batches/{batch_id}/results", self.anthropic_results)

    # -- plumbing -----------------------------------------------------------------------------

    def _record(self, request: web.Request, body: dict[str, Any]) -> tuple[int, int]:
        return self.core._record(
            RecordedRequest(
                path=request.path,
                method=request.method,
                query=request.raw_path.partition("?")[2],
                headers={k.lower(): v for k, v in request.headers.items()},
                body=body,
                received_at=time.time(),
            )
        )

    def _json(self, where: tuple[int, int], status: int, data: Any) -> web.Response:
        return self.core._respond(where, status, {}, json.dumps(data), "application/json")

    def _error(
        self, where: tuple[int, int], provider: Provider, status: int, message: str
    ) -> web.Response:
        kind = _ERROR_TYPES.get(status, "api_error")
        if provider == "anthropic":
            data: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
        else:
            code = "request_too_large" if status == 413 else None
            data = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return self._json(where, status, data)

    def _failing_read(self, where: tuple[int, int], provider: Provider) -> web.Response | None:
        status = self.book.take_failure()
        if status is None:
            return None
        return self._error(where, provider, status, f"fake failure while polling (HTTP {status})")

    async def _answer(
        self, path: str, body: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, Any]:
        """One request of a batch, answered by the online handler and rendering."""
        core = self.core
        anthropic = path == "/v1/messages"
        record = RecordedRequest(path=path, headers=headers, body=body, received_at=time.time())
        try:
            reply = await handler_reply(core.handler, record)
        except Exception as exc:
            detail = "".join(traceback.format_exception(exc))
            reply = FakeReply(status=500, content=f"the FakeLLMServer handler raised:\n{detail}")
        faults = core.config.faults
        if faults is not None and reply.status == 200 and reply.body is None:
            reply = core._apply_faults(
                reply, faults, self.book.rng.random(), self.book.rng.random()
            )
        serial = 0
        if reply.status == 200 and reply.body is None:
            with core.lock:
                core.serial += 1
                serial = core.serial
        status, _, text, content_type = reply_payload(
            anthropic, body, reply, core.config.model, serial
        )
        if content_type == "application/json":
            return status, json.loads(text)
        return status, text

    async def _advance(self, batch: FakeBatch) -> None:
        async with batch.guard:
            await batch.advance(time.time(), self._answer)

    def _find(self, request: web.Request, provider: Provider) -> FakeBatch | None:
        batch = self.book.batches.get(request.match_info["batch_id"])
        return batch if batch is not None and batch.provider == provider else None

    async def _open(
        self, request: web.Request, provider: Provider, *, read: bool = True
    ) -> tuple[tuple[int, int], FakeBatch | web.Response]:
        """Record the call; then the batch it names, advanced to now, or the answer to send
        instead (a scripted failing poll, a 404)."""
        where = self._record(request, {})
        failing = self._failing_read(where, provider) if read else None
        if failing is not None:
            return where, failing
        batch = self._find(request, provider)
        if batch is None:
            return where, self._error(where, provider, 404, f"no such batch in {provider}'s API")
        await self._advance(batch)
        return where, batch

    @staticmethod
    def _limit(request: web.Request, default: int, most: int) -> int | None:
        raw = request.query.get("limit", str(default))
        try:
            value = int(raw)
        except ValueError:
            return None
        return value if 1 <= value <= most else None

    # -- OpenAI files -------------------------------------------------------------------------

    async def upload(self, request: web.Request) -> web.Response:
        _, most = self.book.plan.limits("openai")
        size = request.content_length or 0
        where = self._record(request, {"content_length": size})
        # Refuse before reading: a client sending 300 MB should not make the fake hold it.
        if size > most + 64 * 1024:
            return self._error(where, "openai", 413, f"the file is larger than {most} bytes")
        try:
            form = await request.post()
        except (ValueError, web.HTTPException) as exc:
            return self._error(where, "openai", 400, f"the body is not multipart form data: {exc}")
        purpose, upload = form.get("purpose"), form.get("file")
        if not isinstance(upload, web.FileField):
            return self._error(where, "openai", 400, "the form has no 'file' part")
        data = upload.file.read()
        if not isinstance(purpose, str) or purpose != "batch":
            return self._error(where, "openai", 400, f"purpose must be 'batch', got {purpose!r}")
        if len(data) > most:
            return self._error(
                where, "openai", 413, f"the file has {len(data)} bytes, more than {most}"
            )
        item = self.book.add_file(upload.filename, purpose, data, time.time())
        return self._json(where, 200, openai_file(item))

    def _open_file(self, request: web.Request) -> tuple[tuple[int, int], FakeFile | web.Response]:
        where = self._record(request, {})
        failing = self._failing_read(where, "openai")
        if failing is not None:
            return where, failing
        item = self.book.files.get(request.match_info["file_id"])
        if item is None:
            return where, self._error(where, "openai", 404, "no such file")
        return where, item

    async def get_file(self, request: web.Request) -> web.Response:
        where, item = self._open_file(request)
        if isinstance(item, web.Response):
            return item
        return self._json(where, 200, openai_file(item))

    async def file_content(self, request: web.Request) -> web.Response:
        where, item = self._open_file(request)
        if isinstance(item, web.Response):
            return item
        self.core._answered(where, 200)
        return web.Response(body=item.data, content_type="application/octet-stream")

    # -- OpenAI batches -----------------------------------------------------------------------

    async def openai_create(self, request: web.Request) -> web.Response:
        body = await json_body(request)
        where = self._record(request, body or {})
        if body is None:
            return self._error(where, "openai", 400, "the body is not a JSON object")
        item = self.book.files.get(str(body.get("input_file_id")))
        endpoint = body.get("endpoint")
        metadata = body.get("metadata") or {}
        if item is None:
            return self._error(where, "openai", 400, "input_file_id names no uploaded file")
        if endpoint not in _OPENAI_ENDPOINTS:
            return self._error(where, "openai", 400, f"unsupported endpoint {endpoint!r}")
        if body.get("completion_window") != "24h":
            return self._error(where, "openai", 400, "completion_window must be '24h'")
        if not good_metadata(metadata):
            return self._error(
                where, "openai", 400, "metadata: at most 16 string pairs (keys 64, values 512)"
            )
        lines, errors = openai_lines(item.data, str(endpoint), self.book.plan)
        headers = {k.lower(): v for k, v in request.headers.items()}
        batch = self.book.add_batch(
            "openai",
            lines,
            headers,
            "/v1/chat/completions" if endpoint == "/v1/chat/completions" else str(endpoint),
            time.time(),
            input_file_id=item.id,
            metadata=dict(metadata),
        )
        if errors:
            batch.fail(errors, time.time())
        return self._json(where, 200, openai_batch(batch, validating=True))

    async def openai_get(self, request: web.Request) -> web.Response:
        seen = self._find(request, "openai")
        validating = seen is not None and not seen.seen
        where, batch = await self._open(request, "openai")
        if isinstance(batch, web.Response):
            return batch
        if batch.final:
            write_files(self.book, batch)
        return self._json(where, 200, openai_batch(batch, validating=validating))

    async def _openai_view(self, batch: FakeBatch) -> dict[str, Any]:
        seen = batch.seen
        await self._advance(batch)
        if batch.final:
            write_files(self.book, batch)
        return openai_batch(batch, validating=not seen)

    async def openai_cancel(self, request: web.Request) -> web.Response:
        where, batch = await self._open(request, "openai", read=False)
        if isinstance(batch, web.Response):
            return batch
        if batch.status in ("completed", "expired", "failed"):
            write_files(self.book, batch)
            return self._error(
                where, "openai", 400, f"cannot cancel a batch whose status is {batch.status!r}"
            )
        batch.cancel(time.time())
        return self._json(where, 200, openai_batch(batch))

    async def openai_list(self, request: web.Request) -> web.Response:
        where = self._record(request, {})
        failing = self._failing_read(where, "openai")
        if failing is not None:
            return failing
        limit = self._limit(request, 20, 100)
        if limit is None:
            return self._error(where, "openai", 400, "limit must be an integer in [1, 100]")
        batches = after_cursor(self.book.listed("openai"), request.query.get("after"))
        page = batches[:limit]
        data = [await self._openai_view(b) for b in page]
        return self._json(
            where,
            200,
            {
                "object": "list",
                "data": data,
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": len(batches) > limit,
            },
        )

    # -- Anthropic Message Batches ------------------------------------------------------------

    async def anthropic_create(self, request: web.Request) -> web.Response:
        most_requests, most_bytes = self.book.plan.limits("anthropic")
        size = request.content_length or 0
        if size > most_bytes:
            where = self._record(request, {"content_length": size})
            return self._error(
                where, "anthropic", 413, f"the request body is larger than {most_bytes} bytes"
            )
        raw = await request.read()
        body = loads(raw)
        where = self._record(request, body or {})
        if len(raw) > most_bytes:
            return self._error(
                where, "anthropic", 413, f"the body has {len(raw)} bytes, more than {most_bytes}"
            )
        if body is None:
            return self._error(where, "anthropic", 400, "the body is not a JSON object")
        lines, problem = anthropic_lines(body.get("requests"), most_requests)
        if problem is not None:
            return self._error(where, "anthropic", 400, problem)
        headers = {k.lower(): v for k, v in request.headers.items()}
        batch = self.book.add_batch("anthropic", lines, headers, "/v1/messages", time.time())
        return self._json(where, 200, anthropic_batch(batch, origin(request)))

    async def anthropic_get(self, request: web.Request) -> web.Response:
        where, batch = await self._open(request, "anthropic")
        if isinstance(batch, web.Response):
            return batch
        return self._json(where, 200, anthropic_batch(batch, origin(request)))

    async def anthropic_cancel(self, request: web.Request) -> web.Response:
        where, batch = await self._open(request, "anthropic", read=False)
        if isinstance(batch, web.Response):
            return batch
        batch.cancel(time.time())
        return self._json(where, 200, anthropic_batch(batch, origin(request)))

    async def anthropic_results(self, request: web.Request) -> web.Response:
        where, batch = await self._open(request, "anthropic")
        if isinstance(batch, web.Response):
            return batch
        if not batch.final:
            return self._error(
                where, "anthropic", 404, "the message batch has not ended: no results yet"
            )
        self.core._answered(where, 200)
        return web.Response(body=anthropic_results(batch), content_type="application/binary")

    async def anthropic_list(self, request: web.Request) -> web.Response:
        where = self._record(request, {})
        failing = self._failing_read(where, "anthropic")
        if failing is not None:
            return failing
        limit = self._limit(request, 20, 1000)
        if limit is None:
            return self._error(where, "anthropic", 400, "limit must be an integer in [1, 1000]")
        batches = after_cursor(self.book.listed("anthropic"), request.query.get("after_id"))
        page = batches[:limit]
        for batch in page:
            await self._advance(batch)
        here = origin(request)
        return self._json(
            where,
            200,
            {
                "data": [anthropic_batch(b, here) for b in page],
                "has_more": len(batches) > limit,
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
            },
        )
