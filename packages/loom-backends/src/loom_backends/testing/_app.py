"""The request handling of FakeLLMServer: an aiohttp app run on one event loop.

It runs on a background thread's loop (thread mode) or in a child process (process mode);
``_server.FakeLLMServer`` owns the lifecycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import random
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from typing import Any

from aiohttp import web

from loom_backends._errors import parse_retry_after

from ._batch_app import BatchRoutes
from ._batch_jobs import BatchPlan
from ._limits import LimitState, ServerLimits
from ._replies import (
    FakeReply,
    FaultPlan,
    RecordedRequest,
    break_json,
    default_handler,
    handler_reply,
    render_error,
    reply_payload,
)

__all__ = ["HOST", "Config", "Handler", "ServerCore", "child_main"]

#: A handler receives the recorded request and returns the answer text or a FakeReply.
Handler = Callable[[RecordedRequest], "str | FakeReply | Awaitable[str | FakeReply]"]

HOST = "127.0.0.1"
_THINK_TEXT = "Let me think about this step by step."
_MAX_BODY = 256 * 1024 * 1024  # requests carry base64 images; aiohttp's default is 1 MB


@dataclass(frozen=True)
class Config:
    handler: Handler | None
    latency: float
    jitter: float
    rpm_limit: int | None
    faults: FaultPlan | None
    seed: int | None
    model: str
    batch: BatchPlan = field(default_factory=BatchPlan)
    limits: ServerLimits | None = None


class ServerCore:
    """The request handling, run on one event loop (a thread's or a child process's)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.handler: Handler = config.handler or default_handler
        self.rng = random.Random(config.seed)
        self.lock = threading.Lock()
        self.records: list[RecordedRequest] = []
        self.status_counts: dict[int, int] = {}
        self.generation = 0
        self.serial = 0
        rate = (config.rpm_limit or 0) / 60.0
        self.refill = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.last_refill = time.monotonic()
        self.limits = LimitState(config.limits) if config.limits is not None else None
        self.runner: web.AppRunner | None = None
        self.batch = BatchRoutes(self, config.batch)

    # -- bookkeeping --------------------------------------------------------------------------

    def _record(self, record: RecordedRequest) -> tuple[int, int]:
        with self.lock:
            self.records.append(record)
            return self.generation, len(self.records) - 1

    def _answered(
        self, where: tuple[int, int], status: int, headers: dict[str, str] | None = None
    ) -> None:
        retry_after = parse_retry_after(headers) if headers else None
        with self.lock:
            generation, index = where
            if generation == self.generation:
                self.records[index] = replace(
                    self.records[index], status=status, retry_after=retry_after
                )
                self.status_counts[status] = self.status_counts.get(status, 0) + 1

    def snapshot(self) -> list[RecordedRequest]:
        with self.lock:
            return list(self.records)

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"request_count": len(self.records), "status_counts": dict(self.status_counts)}

    def clear(self) -> None:
        with self.lock:
            self.records = []
            self.status_counts = {}
            self.generation += 1

    def _take_token(self) -> float | None:
        """Take one token from the rpm bucket; the wait until one is free when it is empty."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.last_refill) * self.refill)
        self.last_refill = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return max(1.0, math.ceil((1.0 - self.tokens) / self.refill))

    # -- the app ------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/chat/completions", self.chat)
        app.router.add_post("/v1/messages", self.chat)
        app.router.add_get("/v1/models", self.models)
        self.batch.add_routes(app)
        app.router.add_get("/_fake/requests", self.admin_requests)
        app.router.add_get("/_fake/stats", self.admin_stats)
        app.router.add_post("/_fake/clear", self.admin_clear)
        return app

    async def start(self, port: int = 0) -> int:
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, HOST, port)
        await site.start()
        self.runner = runner
        for address in runner.addresses:
            if isinstance(address, tuple):
                return int(address[1])
        raise RuntimeError("FakeLLMServer: the listening socket has no port")  # pragma: no cover

    async def cleanup(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.config.model}]})

    async def admin_requests(self, request: web.Request) -> web.Response:
        return web.json_response([r.to_json() for r in self.snapshot()])

    async def admin_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def admin_clear(self, request: web.Request) -> web.Response:
        self.clear()
        return web.json_response({"cleared": True})

    async def chat(self, request: web.Request) -> web.Response:
        anthropic = request.path == "/v1/messages"
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        record = RecordedRequest(
            path=request.path,
            query=request.raw_path.partition("?")[2],
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body if isinstance(body, dict) else {},
            received_at=time.time(),
        )
        where = self._record(record)
        if not isinstance(body, dict):
            return self._send(where, anthropic, 400, {}, "the request body is not a JSON object")
        if self.config.rpm_limit is not None:
            wait = self._take_token()
            if wait is not None:
                headers = {"Retry-After": str(int(wait))}
                return self._send(where, anthropic, 429, headers, "rpm limit reached")
        if self.limits is None:
            return await self._answer(where, anthropic, body, record)
        refusal, limit_headers = await self.limits.admit(body)
        if refusal is not None:
            return self._send(where, anthropic, 429, refusal.headers, refusal.message)
        try:
            response = await self._answer(where, anthropic, body, record)
        finally:
            self.limits.leave()
        response.headers.update(limit_headers)
        return response

    async def _answer(
        self,
        where: tuple[int, int],
        anthropic: bool,
        body: dict[str, Any],
        record: RecordedRequest,
    ) -> web.Response:
        # Every random draw happens here, before any await: with a seed, the n-th request to
        # arrive always meets the same fate, whatever the handler does.
        faults = self.config.faults
        roll, broken, cut = self.rng.random(), self.rng.random(), self.rng.random()
        pause = self.config.latency + (
            self.rng.uniform(0.0, self.config.jitter) if self.config.jitter else 0.0
        )
        if faults is not None:
            wait_429 = self.rng.uniform(*faults.retry_after)
            if roll < faults.rate_429:
                headers = {
                    "Retry-After": f"{wait_429:.3f}",
                    "retry-after-ms": str(round(wait_429 * 1000)),
                }
                return self._send(where, anthropic, 429, headers, "fake rate limit")
            if roll < faults.rate_429 + faults.rate_500:
                await self._pause(pause)
                return self._send(where, anthropic, 500, {}, "fake internal error")
            if roll < faults.rate_429 + faults.rate_500 + faults.rate_503:
                await self._pause(pause)
                return self._send(where, anthropic, 503, {}, "fake overload")
        try:
            reply = await handler_reply(self.handler, record)
        except Exception as exc:
            detail = "".join(traceback.format_exception(exc))
            return self._send(
                where, anthropic, 500, {}, f"the FakeLLMServer handler raised:\n{detail}"
            )
        if faults is not None and reply.status == 200 and reply.body is None:
            reply = self._apply_faults(reply, faults, broken, cut)
        await self._pause(pause + reply.delay)
        serial = 0
        if reply.status == 200 and reply.body is None:
            with self.lock:
                self.serial += 1
                serial = self.serial
        return self._respond(
            where, *reply_payload(anthropic, body, reply, self.config.model, serial)
        )

    @staticmethod
    def _apply_faults(reply: FakeReply, faults: FaultPlan, broken: float, cut: float) -> FakeReply:
        content = reply.content or ""
        finish = reply.finish_reason
        if broken < faults.rate_broken_json:
            content = break_json(content)
        if cut < faults.rate_truncated:
            content, finish = content[: len(content) // 2], "length"
        if faults.think_prefix:
            content = f"<think>{faults.reasoning_content or _THINK_TEXT}</think>{content}"
        reasoning = reply.reasoning_content
        if reasoning is None and faults.reasoning_content is not None:
            reasoning = faults.reasoning_content
        if reply.content is None and content == "":
            return replace(reply, reasoning_content=reasoning)
        return replace(reply, content=content, finish_reason=finish, reasoning_content=reasoning)

    @staticmethod
    async def _pause(seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)

    def _send(
        self,
        where: tuple[int, int],
        anthropic: bool,
        status: int,
        headers: dict[str, str],
        message: str,
    ) -> web.Response:
        text = json.dumps(render_error(anthropic, status, message))
        return self._respond(where, status, headers, text, "application/json")

    def _respond(
        self,
        where: tuple[int, int],
        status: int,
        headers: dict[str, str],
        text: str,
        content_type: str,
    ) -> web.Response:
        self._answered(where, status, headers)
        headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        return web.Response(
            status=status, text=text, headers=headers, content_type=content_type, charset="utf-8"
        )


def child_main(config: Config, conn: Connection, port: int = 0) -> None:
    """Entry point of the server process (``process=True``)."""
    # The process only serves and records. Every recorded request stays alive, and with the
    # collector's default thresholds its full collections, walking all of them again and
    # again, slowed the server down run after run (measured: -30 % after 20,000 requests).
    # Nothing here makes reference cycles worth collecting quickly.
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    core = ServerCore(config)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        port = loop.run_until_complete(core.start(port))
    except BaseException as exc:  # report a start failure to the parent, then exit
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        raise
    conn.send(("port", port))

    def wait_for_stop() -> None:
        with contextlib.suppress(EOFError, OSError):
            conn.recv()  # "stop", or EOF when the parent went away
        loop.call_soon_threadsafe(loop.stop)

    threading.Thread(target=wait_for_stop, daemon=True).start()
    try:
        loop.run_forever()
    finally:
        loop.run_until_complete(core.cleanup())
        loop.close()
        conn.close()
