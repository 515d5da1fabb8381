"""FakeLLMServer: a real OpenAI- and Anthropic-compatible HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import pickle
import threading
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

import httpx

from loom_protocol import LoomUsageError, check_int, check_non_negative_number

from ._app import HOST, Config, Handler, ServerCore, child_main
from ._batch_jobs import BatchPlan
from ._limits import ServerLimits
from ._replies import FaultPlan, RecordedRequest, default_handler

__all__ = ["FakeLLMServer", "Handler"]


class FakeLLMServer:
    """A real OpenAI- and Anthropic-compatible HTTP server on 127.0.0.1, for tests.

    It listens on an ephemeral port, in a background thread with its own event loop (or, with
    ``process=True``, in a child process so it has a CPU core of its own), answers
    ``POST /v1/chat/completions`` (OpenAI) and ``POST /v1/messages`` (Anthropic) from one
    ``handler``, and records every request it receives.

    Example::

        with FakeLLMServer(lambda req: '{"ok": true}') as server:
            backend = OpenAIChatBackend(base_url=server.base_url)
            ...
            assert server.request_count == 1

    Args:
        handler: Called with each :class:`RecordedRequest` (``status`` still 0); returns the
            answer text or a :class:`FakeReply`, or an awaitable of either. A sync handler runs
            on the server's loop, so keep it quick. ``None`` answers ``{"echo": <last user
            text>}``. With ``process=True`` it must be picklable (a module-level function).
        latency: Seconds added to every answer except 429s (``asyncio.sleep``: the server
            keeps serving meanwhile).
        jitter: A further uniform(0, jitter) seconds per answer.
        rpm_limit: Requests per minute allowed, a token bucket of capacity
            ``max(1, rpm_limit / 60)`` refilled at ``rpm_limit / 60`` per second; a request
            over the limit gets 429 with ``Retry-After`` (whole seconds, at least 1).
        limits: Provider limits (:class:`ServerLimits`): rpm/tpm buckets reported in
            OpenAI's or Anthropic's rate-limit headers, a hidden cap on requests in flight.
        faults: Faults to inject (:class:`FaultPlan`), decided per request in arrival order.
        seed: Seed of the generator behind faults and jitter, for reproducible runs.
        model: The model name the answers report.
        process: Run the server in a separate process (multiprocessing ``spawn``).
        batch: How the Batch APIs behave (:class:`BatchPlan`): time to complete, expiry
            part-way, shuffled results, size limits, failing polls. The server serves OpenAI's
            ``/v1/files`` and ``/v1/batches`` and Anthropic's ``/v1/messages/batches``; each
            request of a batch is answered by ``handler``, as online.
        port: The port to listen on; 0 (the default) takes a free one. A test that stops a
            server and starts another on its port brings "the same server" back.
    """

    def __init__(
        self,
        handler: Handler | None = None,
        *,
        latency: float = 0.0,
        jitter: float = 0.0,
        rpm_limit: int | None = None,
        faults: FaultPlan | None = None,
        seed: int | None = None,
        model: str = "fake-model",
        process: bool = False,
        batch: BatchPlan | None = None,
        port: int = 0,
        limits: ServerLimits | None = None,
    ) -> None:
        check_int("FakeLLMServer: port", port, 0)
        if port > 65535:
            raise LoomUsageError(f"FakeLLMServer: port must be <= 65535, got {port}")
        self._listen_port = port
        if handler is not None and not callable(handler):
            raise LoomUsageError(
                f"FakeLLMServer: handler must be callable, got {type(handler).__name__}"
            )
        for name, value in (("latency", latency), ("jitter", jitter)):
            check_non_negative_number(f"FakeLLMServer: {name}", value, " of seconds")
        if rpm_limit is not None:
            check_int("FakeLLMServer: rpm_limit", rpm_limit, 1)
        if faults is not None and not isinstance(faults, FaultPlan):
            raise LoomUsageError(
                f"FakeLLMServer: faults must be a FaultPlan, got {type(faults).__name__}"
            )
        if batch is not None and not isinstance(batch, BatchPlan):
            raise LoomUsageError(
                f"FakeLLMServer: batch must be a BatchPlan, got {type(batch).__name__}"
            )
        if limits is not None and not isinstance(limits, ServerLimits):
            raise LoomUsageError(
                f"FakeLLMServer: limits must be a ServerLimits, got {type(limits).__name__}"
            )
        self._config = Config(
            handler, float(latency), float(jitter), rpm_limit, faults, seed, model, limits=limits
        )
        if batch is not None:
            self._config = replace(self._config, batch=batch)
        if process and handler is not None:
            try:
                pickle.dumps(handler)
            except Exception as exc:
                raise LoomUsageError(
                    "FakeLLMServer(process=True) needs a picklable handler (a module-level "
                    f"function), got {handler!r}: {exc}"
                ) from None
        self._process_mode = process
        self._port: int | None = None
        self._lock = threading.Lock()
        # Thread mode.
        self._core: ServerCore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # Process mode.
        self._process: Any = None
        self._conn: Connection | None = None
        self._admin: httpx.Client | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> FakeLLMServer:
        """Start listening; returns the server. Starting a running server does nothing."""
        with self._lock:
            if self._port is not None:
                return self
            if self._process_mode:
                self._start_process()
            else:
                self._start_thread()
        return self

    def _start_thread(self) -> None:
        core = ServerCore(self._config)
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []
        port: list[int] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                port.append(loop.run_until_complete(core.start(self._listen_port)))
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            # Stopped: close the site and every connection, then whatever tasks remain.
            loop.run_until_complete(core.cleanup())
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        thread = threading.Thread(target=run, name="FakeLLMServer", daemon=True)
        thread.start()
        if not ready.wait(30) or failure:
            thread.join(5)
            raise RuntimeError(
                f"FakeLLMServer failed to start: {failure[0] if failure else 'timeout'}"
            )
        self._core, self._loop, self._thread, self._port = core, loop, thread, port[0]

    def _start_process(self) -> None:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(
            target=child_main,
            args=(self._config, child, self._listen_port),
            name="FakeLLMServer",
            daemon=True,
        )
        process.start()
        child.close()
        if not parent.poll(60):
            process.kill()
            process.join(5)
            parent.close()
            raise RuntimeError("FakeLLMServer: the server process did not start within 60 s")
        kind, value = parent.recv()
        if kind != "port":
            process.join(5)
            parent.close()
            raise RuntimeError(f"FakeLLMServer: the server process failed to start: {value}")
        self._process, self._conn, self._port = process, parent, int(value)
        # trust_env=False: an HTTP(S)_PROXY in the environment must not capture 127.0.0.1.
        self._admin = httpx.Client(base_url=f"http://{HOST}:{value}", trust_env=False, timeout=30)

    def stop(self) -> None:
        """Stop the server and close its connections. Stopping twice does nothing."""
        with self._lock:
            if self._port is None:
                return
            self._port = None
            if self._process is not None:
                self._stop_process()
            else:
                self._stop_thread()

    def _stop_thread(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)

    def _stop_process(self) -> None:
        process, conn, admin = self._process, self._conn, self._admin
        self._process = self._conn = self._admin = None
        if admin is not None:
            admin.close()
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.send("stop")
            conn.close()
        process.join(15)
        if process.is_alive():
            process.kill()
            process.join(5)
        process.close()

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __del__(self) -> None:
        # A forgotten server must not keep a thread or a process alive.
        with contextlib.suppress(Exception):
            if self._port is not None:
                self.stop()

    def __repr__(self) -> str:
        where = f"port={self._port}" if self._port is not None else "stopped"
        mode = "process" if self._process_mode else "thread"
        return f"FakeLLMServer({where}, {mode})"

    # -- addresses ----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port (raises when the server is not running)."""
        if self._port is None:
            raise LoomUsageError("FakeLLMServer is not running: call start() or use `with`")
        return self._port

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, ``http://127.0.0.1:<port>/v1``."""
        return f"http://{HOST}:{self.port}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """The Anthropic-style base URL, ``http://127.0.0.1:<port>``."""
        return f"http://{HOST}:{self.port}"

    # -- scripting ----------------------------------------------------------------------------

    @property
    def handler(self) -> Handler:
        """The handler in use; settable while running in thread mode."""
        if self._core is not None:
            return self._core.handler
        return self._config.handler or default_handler

    @handler.setter
    def handler(self, handler: Handler | None) -> None:
        if handler is not None and not callable(handler):
            raise LoomUsageError(
                f"FakeLLMServer: handler must be callable, got {type(handler).__name__}"
            )
        if self._process_mode:
            raise LoomUsageError(
                "FakeLLMServer: the handler of a process=True server is fixed at construction"
            )
        self._config = replace(self._config, handler=handler)
        if self._core is not None:
            self._core.handler = handler or default_handler

    @property
    def batch_plan(self) -> BatchPlan:
        """How the Batch APIs behave; settable while running in thread mode (it applies to
        batches created afterwards, and restarts the count of failing polls)."""
        if self._core is not None:
            return self._core.batch.book.plan
        return self._config.batch

    @batch_plan.setter
    def batch_plan(self, plan: BatchPlan) -> None:
        if not isinstance(plan, BatchPlan):
            raise LoomUsageError(
                f"FakeLLMServer: batch_plan must be a BatchPlan, got {type(plan).__name__}"
            )
        if self._process_mode:
            raise LoomUsageError(
                "FakeLLMServer: the batch plan of a process=True server is fixed at construction"
            )
        self._config = replace(self._config, batch=plan)
        if self._core is not None:
            self._core.batch.book.set_plan(plan)

    # -- what was received --------------------------------------------------------------------

    def _admin_get(self, path: str) -> Any:
        admin = self._admin
        if admin is None:
            raise LoomUsageError("FakeLLMServer is not running: call start() or use `with`")
        response = admin.get(path)
        response.raise_for_status()
        return response.json()

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received, in arrival order (errors included)."""
        if self._core is not None:
            return self._core.snapshot()
        if self._process_mode and self._admin is not None:
            return [RecordedRequest(**item) for item in self._admin_get("/_fake/requests")]
        return []

    @property
    def request_count(self) -> int:
        """How many requests were received."""
        if self._core is not None:
            return len(self._core.snapshot())
        if self._process_mode and self._admin is not None:
            return int(self._admin_get("/_fake/stats")["request_count"])
        return 0

    @property
    def status_counts(self) -> dict[int, int]:
        """How many answers were sent, by HTTP status."""
        if self._core is not None:
            return dict(self._core.stats()["status_counts"])
        if self._process_mode and self._admin is not None:
            counts = self._admin_get("/_fake/stats")["status_counts"]
            return {int(k): int(v) for k, v in counts.items()}
        return {}

    def clear(self) -> None:
        """Forget every recorded request and status count."""
        if self._core is not None:
            self._core.clear()
        elif self._admin is not None:
            self._admin.post("/_fake/clear").raise_for_status()
