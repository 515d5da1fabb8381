"""``TaskLoom``: the facade. Every public method is a thin shell over one async scheduler."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import os
import threading
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from typing import Any, Generic, TypeVar

from loom_backends import DEFAULT_TIMEOUT
from loom_protocol import Backend, BatchResult, StreamEvent, TaskResult, redact_url
from loom_store import ResultStore

from ._bridge import LoomClosedError, LoopThread
from ._build import build_engine
from ._calls import BatchCall, LoomConfigWarning, batch_call
from ._defaults import DEFAULT_DB, DEFAULT_MAX_WORKERS
from ._delivery import BatchEvents, ResultCollector
from ._drive import Driver
from ._lease import DEFAULT_LEASE_S, check_lease
from ._lifetime import ABORT_WAIT, end_runs
from ._outbox import Pair
from ._rateshare import RateShare
from ._retry import DEFAULT_MAX_RETRY_WAIT
from ._session import Session

__all__ = ["LoomConfigWarning", "TaskLoom"]

T = TypeVar("T")

Inputs = Iterable[Any] | AsyncIterable[Any]


@functools.cache
def _loom_args() -> frozenset[str]:
    """TaskLoom's own argument names, for a did-you-mean on a misspelled one."""
    names = inspect.signature(TaskLoom.__init__).parameters
    return frozenset(n for n in names if n not in ("self", "llm_kwargs"))


class TaskLoom(Generic[T]):
    """Run one prompt template over many inputs and get typed results back.

    Args:
        model: The model name; ``anthropic/…`` or ``claude-…`` selects Anthropic, a
            registered ``prefix/…`` a third-party backend, anything else an OpenAI-compatible
            server.
        prompt_template: A Jinja2 template rendered with each input's keys (sandboxed,
            a missing variable fails that task).
        system_prompt: An optional system message, also a Jinja2 template.
        response_model: A pydantic model class (results are instances), ``dict`` (dicts) or
            ``None`` (the answer text).
        auto_repair_json: Repair dirty JSON (trailing commas, quotes, fences…) before validation.
        max_retries: Retries of a retryable provider failure, and separately re-asks after an
            answer that did not parse or validate.
        client: A ready OpenAI SDK client (sync or async) or a ``Backend``.
        db_path: The SQLite file used when a task_name is given and ``store`` is not.
        backend: A ``Backend`` (wins over ``client`` and the model name).
        base_url: The provider's base URL (else ``OPENAI_BASE_URL`` / ``ANTHROPIC_BASE_URL``).
        api_key: The provider's key (else ``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY``).
        store: A ``ResultStore`` or a store URL (``postgresql+psycopg://…``); overrides db_path.
        rpm: Requests per minute, at most, for this loom.
        tpm: Tokens per minute, at most, for this loom (estimated before, corrected after).
        timeout: Seconds for one provider call.
        max_retry_wait: The longest wait, in seconds, before a retry: a backoff, or the pause
            of the whole loom after a 429. A task whose provider asks (``Retry-After``) for
            longer fails at once, with a message saying what was asked.
        image_root: When set, local image paths must lie inside this folder.
        lease_s: Seconds a claim on an input lives without a heartbeat, when several
            processes run one task name on one store (each input is called by one of them;
            a killed worker's inputs are taken over after this long). See ``docs/scale.md``.
        **llm_kwargs: Generation parameters the backend declares (temperature, max_tokens,
            top_p, seed…; see ``generation_params`` of each backend), and
            ``extra_body={...}`` for provider-specific ones, merged into the request body.

    Raises:
        LoomUsageError: A template that does not parse, an unusable response_model, an unknown
            backend prefix, a bad timeout or base_url, no API key for the official OpenAI or
            Anthropic endpoint, an unknown or invalid generation parameter, or a ``store``
            URL that is malformed or names a database the store does not run on.
        StoreError: An explicit ``store`` that cannot be opened (unreachable, failing, or
            written by a newer loom-store).
    """

    def __init__(
        self,
        model: str,
        prompt_template: str,
        system_prompt: str | None = None,
        response_model: type[T] | None = None,
        auto_repair_json: bool = True,
        max_retries: int = 3,
        client: Any | None = None,
        db_path: str | os.PathLike[str] = DEFAULT_DB,
        *,
        backend: Backend | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        store: ResultStore | str | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
        image_root: str | os.PathLike[str] | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        **llm_kwargs: Any,
    ) -> None:
        lease_s = check_lease(lease_s)
        engine = build_engine(
            model,
            prompt_template,
            system_prompt,
            response_model,
            auto_repair_json=auto_repair_json,
            max_retries=max_retries,
            client=client,
            backend=backend,
            base_url=base_url,
            api_key=api_key,
            rpm=rpm,
            tpm=tpm,
            timeout=timeout,
            max_retry_wait=max_retry_wait,
            image_root=image_root,
            llm_kwargs=llm_kwargs,
            loom_args=_loom_args(),
        )
        self.config = engine.config
        self.config_fp = engine.config.fingerprint
        self._engine = engine
        self._bridge = LoopThread()
        self._ending: set[asyncio.Future[None]] = set()
        # An explicit store URL is opened now, so a wrong URL fails at construction.
        self._session = Session(
            store,
            db_path,
            config_fp=self.config_fp,
            config=self.config.as_dict(),
            output=engine.output,
        )
        self._driver = Driver(
            engine.runner,
            self._session,
            self._bridge,
            lease_s=lease_s,
            share=RateShare(engine.limiter),
        )

    def __repr__(self) -> str:
        # Never a secret: the backend's repr and the store URL are masked.
        return (
            f"TaskLoom(model={self.config.model!r}, output={self._engine.output.name!r}, "
            f"backend={self._engine.backend!r}, store={redact_url(self._session.url)!r})"
        )

    def _call(
        self,
        sequence: Inputs,
        task_name: str | None,
        max_workers: int,
        ordered: bool = False,
        *,
        streamed: bool = True,
    ) -> BatchCall:
        """The checked call of a public batch method."""
        self._session.check_open()
        return batch_call(sequence, task_name, max_workers, ordered, streamed=streamed)

    def _collector(self, progress: bool, call: BatchCall) -> ResultCollector:
        return ResultCollector(progress, call.total, self._engine.runner, self._engine.limiter)

    # -- single input ------------------------------------------------------------------------

    def process(self, data: str | dict[str, Any], task_name: str | None = None) -> TaskResult[T]:
        """Run one input and return its result (never raises for a per-task problem)."""
        return self.map([data], task_name=task_name, max_workers=1)[0]

    async def aprocess(
        self, data: str | dict[str, Any], task_name: str | None = None
    ) -> TaskResult[T]:
        """Async twin of :meth:`process`."""
        return (await self.amap([data], task_name=task_name, max_workers=1))[0]

    # -- batches -----------------------------------------------------------------------------

    def map(
        self,
        sequence: Iterable[Any],
        task_name: str | None = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        progress: bool = False,
    ) -> BatchResult[T]:
        """Run every input; results in input order.

        Args:
            sequence: Dicts or strings (a string ``s`` is ``{"text": s}``), any iterable.
            task_name: Store results under this name and serve them from the store next time.
            max_workers: Calls in flight at most.
            progress: Show a tqdm progress bar.
        """
        call = self._call(sequence, task_name, max_workers, streamed=False)
        with self._collector(progress, call) as collector:
            # Collected on the loop thread, in one call: handing results over to this thread
            # a batch at a time would cost a thread switch per batch and contend for the GIL.
            self._driver.run(self._driver.collect(call, collector))
        return collector.batch()

    async def amap(
        self,
        sequence: Inputs,
        task_name: str | None = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        progress: bool = False,
    ) -> BatchResult[T]:
        """Async twin of :meth:`map` (also takes an async iterable)."""
        call = self._call(sequence, task_name, max_workers, streamed=False)
        with self._collector(progress, call) as collector:
            await self._driver.collect(call, collector)
        return collector.batch()

    def stream(
        self,
        sequence: Iterable[Any],
        task_name: str | None = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        ordered: bool = False,
    ) -> Iterator[TaskResult[T]]:
        """Yield results as they finish (in input order with ``ordered=True``).

        Leaving the loop early cancels the calls in flight; every result already yielded
        (and so committed) stays in the store. An iterator kept but not read starts no new
        call once ``2 * max_workers`` results wait for it; reading again resumes the batch.
        Closing the loom meanwhile raises ``LoomUsageError`` from the iterator.
        """
        call = self._call(sequence, task_name, max_workers, ordered)
        return (result for _, result in self._driver.iterate(self._driver.pairs(call)))

    def astream(
        self,
        sequence: Inputs,
        task_name: str | None = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        ordered: bool = False,
    ) -> AsyncIterator[TaskResult[T]]:
        """Async twin of :meth:`stream`; close it (or cancel its task) to stop early."""
        call = self._call(sequence, task_name, max_workers, ordered)
        return _results(self._driver.flat(self._driver.pairs(call)))

    def stream_events(
        self,
        sequence: Iterable[Any],
        task_name: str | None = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        ordered: bool = False,
    ) -> Iterator[StreamEvent]:
        """Typed events: ``batch_start``, one ``task_result`` per input, ``batch_end``.

        Once started, an event stream does not raise: what ends the batch early (the store
        cannot be opened, the loom is closed, the input iterable raises) is its last event,
        ``batch_error``. Misuse (a bad argument, a closed loom) raises at the call.
        """
        call = self._call(sequence, task_name, max_workers, ordered)
        events = BatchEvents(task_name, call.total)
        return self._driver.iterate(
            self._driver.events(call, events), closed=lambda exc: [events.error(exc)]
        )

    def astream_events(
        self,
        sequence: Inputs,
        task_name: str | None = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        ordered: bool = False,
    ) -> AsyncIterator[StreamEvent]:
        """Async twin of :meth:`stream_events` (what an SSE endpoint sends)."""
        call = self._call(sequence, task_name, max_workers, ordered)
        return self._driver.flat(self._driver.events(call, BatchEvents(task_name, call.total)))

    # -- closing -----------------------------------------------------------------------------

    def close(self) -> None:
        """End running batches, drain pending writes, release connections (idempotent).

        A batch still running (``map``, ``stream``… on any thread or loop) ends at once: its
        consumer gets a ``LoomUsageError`` saying the loom was closed (an event stream, a
        ``batch_error`` event). Every result already delivered is committed, and rows being
        written are drained first. Safe from any thread, at the same time as another close(),
        and from inside the loom's own loop (a backend, a callback), where the release of
        connections finishes on a helper thread. Objects the loom did not create (a
        ``client``, ``backend`` or ``ResultStore`` passed in) are left open for their owner.
        """
        runs = self._session.begin_close()
        if runs is None:
            return
        waits, local = end_runs(runs)
        for run in local:  # on this thread's loop, which this call blocks: finish them later
            ending = asyncio.ensure_future(run.aclose())
            self._ending.add(ending)
            ending.add_done_callback(self._ending.discard)
        if self._bridge.on_loop_thread():
            # Stopping the loop from its own thread would wait for itself.
            threading.Thread(target=self._release, name="loom-close", daemon=True).start()
            return
        concurrent.futures.wait(waits, timeout=ABORT_WAIT)
        self._release()

    async def aclose(self) -> None:
        """Async twin of :meth:`close`: await it on the loop that ran the async API."""
        runs = self._session.begin_close()
        if runs is None:
            return
        waits, local = end_runs(runs)
        for run in local:
            await run.aclose()
        if waits:
            await asyncio.wait([asyncio.wrap_future(w) for w in waits], timeout=ABORT_WAIT)
        if self._engine.owns_backend:
            # This loop's connections, closed on this loop.
            await self._engine.backend.aclose()
        if self._bridge.on_loop_thread():
            threading.Thread(target=self._release, name="loom-close", daemon=True).start()
            return
        await asyncio.to_thread(self._release)

    def _release(self) -> None:
        """Drain the writer, release the store and the backend, stop the loop thread."""
        try:
            self._session.release()
            if self._engine.owns_backend:
                with contextlib.suppress(LoomClosedError):
                    self._bridge.run(self._engine.backend.aclose())
        finally:
            self._bridge.close()

    def __enter__(self) -> TaskLoom[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> TaskLoom[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def _results(pairs: AsyncIterator[Pair]) -> AsyncIterator[TaskResult[Any]]:
    """The results of ``pairs``, without their input index."""
    try:
        async for _, result in pairs:
            yield result
    finally:
        await pairs.aclose()  # type: ignore[attr-defined]
