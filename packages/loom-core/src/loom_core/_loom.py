"""``TaskLoom``: the facade. Every public method is a thin shell over one async scheduler."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import os
import threading
import warnings
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sized
from typing import Any, Generic, TypeVar

from loom_backends import DEFAULT_TIMEOUT, resolve_backend
from loom_protocol import (
    MAX_TIMEOUT,
    Backend,
    BatchResult,
    LoomUsageError,
    StreamEvent,
    TaskResult,
    check_int,
    check_positive_number,
    redact_url,
)
from loom_store import ResultStore, StoreWriter

from ._batch import BatchRun
from ._bridge import LoomClosedError, LoopThread
from ._config import (
    LoomConfig,
    check_param_names,
    check_param_ranges,
    refuse_batch_args,
    split_generation_params,
)
from ._defaults import DEFAULT_DB, DEFAULT_MAX_WORKERS
from ._delivery import BatchEvents, ResultCollector
from ._inputs import records_of
from ._lifetime import ABORT_WAIT, end_runs
from ._output import OutputSpec
from ._persist import ResultCache
from ._ratelimit import RateLimiter
from ._render import PromptTemplate
from ._retry import DEFAULT_MAX_RETRY_WAIT, check_max_retry_wait
from ._task import TaskRunner

__all__ = ["LoomConfigWarning", "TaskLoom"]

T = TypeVar("T")

Inputs = Iterable[Any] | AsyncIterable[Any]


@functools.cache
def _loom_args() -> frozenset[str]:
    """TaskLoom's own argument names, for a did-you-mean on a misspelled one."""
    names = inspect.signature(TaskLoom.__init__).parameters
    return frozenset(n for n in names if n not in ("self", "llm_kwargs"))


class LoomConfigWarning(UserWarning):
    """A task_name holds results of another configuration; they are not served, but recomputed."""


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
        **llm_kwargs: Any,
    ) -> None:
        check_int("max_retries", max_retries, 0)
        seconds = check_positive_number("timeout", timeout, " of seconds", MAX_TIMEOUT)
        # Arguments of map()/stream() given here are refused before anything else is built.
        refuse_batch_args(llm_kwargs)
        max_retry_wait = check_max_retry_wait(max_retry_wait)
        self._prompt = PromptTemplate(prompt_template, name="prompt_template")
        self._system = (
            PromptTemplate(system_prompt, name="system_prompt")
            if system_prompt is not None
            else None
        )
        self._output = OutputSpec.from_response_model(response_model)
        temperature, max_tokens, params = split_generation_params(llm_kwargs)
        resolved = resolve_backend(
            model,
            client=client,
            backend=backend,
            base_url=base_url,
            api_key=api_key,
            timeout=seconds,
        )
        known = getattr(resolved.backend, "generation_params", None)
        check_param_names(
            llm_kwargs,
            known if isinstance(known, frozenset | set | tuple | list) else None,
            type(resolved.backend).__name__,
            _loom_args(),
        )
        check_param_ranges(
            {**llm_kwargs, "temperature": temperature},
            getattr(resolved.backend, "parameter_ranges", None),
            type(resolved.backend).__name__,
        )
        self._backend = resolved.backend
        self._owns_backend = client is None and backend is None
        self._limiter = RateLimiter(rpm=rpm, tpm=tpm)
        self.config = LoomConfig(
            model=model,
            prompt_template=prompt_template,
            system_prompt=system_prompt,
            output=self._output.fingerprint_source,
            temperature=temperature,
            max_tokens=max_tokens,
            params=params,
        )
        self.config_fp = self.config.fingerprint
        self._runner = TaskRunner(
            backend=self._backend,
            model=resolved.model,
            prompt=self._prompt,
            system=self._system,
            output=self._output,
            temperature=temperature,
            max_tokens=max_tokens,
            params=params,
            auto_repair_json=auto_repair_json,
            max_retries=max_retries,
            limiter=self._limiter,
            timeout=seconds,
            image_root=os.fspath(image_root) if image_root is not None else None,
            max_retry_wait=max_retry_wait,
        )
        self._bridge = LoopThread()
        self._lock = threading.Lock()
        self._closed = False
        self._warned: set[str] = set()
        self._registered: set[str] = set()
        self._runs: set[BatchRun] = set()
        self._ending: set[asyncio.Future[None]] = set()
        self._writer: StoreWriter | None = None
        self._store: ResultStore | None = None
        self._owns_store = False
        self._store_target: str | os.PathLike[str] = db_path
        if isinstance(store, ResultStore):
            self._store = store
        elif store is not None:
            if not isinstance(store, str):
                raise LoomUsageError(
                    f"store must be a ResultStore or a URL string, got {type(store).__name__}"
                )
            # An explicit store is opened now, so a wrong URL fails at construction.
            self._store_target = store
            self._open_store()

    # -- plumbing ----------------------------------------------------------------------------

    def __repr__(self) -> str:
        # Never a secret: the backend's repr and the store URL are masked.
        store = self._store.url if self._store is not None else os.fspath(self._store_target)
        return (
            f"TaskLoom(model={self.config.model!r}, output={self._output.name!r}, "
            f"backend={self._backend!r}, store={redact_url(store)!r})"
        )

    def _check_open(self) -> None:
        if self._closed:
            raise LoomClosedError("this TaskLoom is closed")

    def _enter_run(self, run: BatchRun) -> None:
        """Start ``run`` on the running loop, known to close() (which ends it) until it ends."""
        with self._lock:
            if self._closed:
                raise LoomClosedError("this TaskLoom is closed")
            self._runs.add(run)
        run.start()

    async def _leave_run(self, run: BatchRun) -> None:
        try:
            await run.aclose()
        finally:
            with self._lock:
                self._runs.discard(run)

    def _open_store(self) -> tuple[ResultStore, StoreWriter]:
        with self._lock:
            if self._closed:  # close() may have released the store already
                raise LoomClosedError("this TaskLoom is closed")
            if self._store is None:
                # A StoreError (the database cannot be opened or fails) reaches the caller as
                # it is: a dead database is not misuse. A target the store cannot use at all
                # (a malformed URL, an unsupported dialect) is the store's LoomUsageError.
                self._store = ResultStore(self._store_target)
                self._owns_store = True
            if self._writer is None:
                self._writer = StoreWriter(self._store)
            return self._store, self._writer

    def _cache_for(self, task_name: str | None) -> tuple[ResultCache | None, list[str]]:
        """The cache of ``task_name`` (``None``: no store) and its other config fingerprints."""
        if task_name is None:
            return None, []
        store, writer = self._open_store()
        others: list[str] = []
        if task_name not in self._registered:
            others = store.other_configs(task_name, self.config_fp)
            store.register_run(task_name, self.config_fp, self.config.as_dict())
            self._registered.add(task_name)
        return ResultCache(store, writer, task_name, self.config_fp, self._output), others

    def _warn_other_configs(self, task_name: str | None, others: list[str]) -> None:
        if task_name is None or not others or task_name in self._warned:
            return
        self._warned.add(task_name)
        warnings.warn(
            f"task_name {task_name!r} holds results of {len(others)} other configuration(s) "
            "(model, templates, schema or generation parameters differ); their rows are kept "
            "and served again if you switch back. Inputs this configuration has no result "
            "for are computed.",
            LoomConfigWarning,
            stacklevel=4,
        )

    @staticmethod
    def _check_batch_args(task_name: str | None, max_workers: int) -> None:
        if task_name is not None and (not isinstance(task_name, str) or not task_name):
            raise LoomUsageError(f"task_name must be a non-empty string or None, got {task_name!r}")
        if not isinstance(max_workers, int) or isinstance(max_workers, bool) or max_workers < 1:
            raise LoomUsageError(f"max_workers must be an int >= 1, got {max_workers!r}")

    def _new_run(
        self,
        sequence: Inputs,
        cache: ResultCache | None,
        max_workers: int,
        ordered: bool,
        streamed: bool,
    ) -> BatchRun:
        sequence = records_of(sequence)  # a DataFrame: its rows, not its column names
        if isinstance(sequence, str | bytes | dict):
            raise LoomUsageError(
                f"map/stream take an iterable of inputs, got a single {type(sequence).__name__}; "
                "use process() for one input, or wrap it in a list"
            )
        if not isinstance(sequence, Iterable | AsyncIterable):
            raise LoomUsageError(f"inputs must be iterable, got {type(sequence).__name__}")
        # A stream's consumer may stop pulling and keep the iterator: its workers then stop
        # once 2 x max_workers results wait for it (enough to keep every worker busy while
        # the consumer takes the previous ones). map collects on the loop and never stops.
        hold = 2 * max_workers if streamed else None
        return BatchRun(
            self._runner,
            sequence,
            cache=cache,
            max_workers=max_workers,
            ordered=ordered,
            hold=hold,
        )

    def _open_run(
        self,
        sequence: Inputs,
        task_name: str | None,
        max_workers: int,
        ordered: bool,
        *,
        streamed: bool = True,
    ) -> BatchRun:
        """A new run, its store opened and registered (blocking I/O: call off the loop)."""
        cache, others = self._cache_for(task_name)
        self._warn_other_configs(task_name, others)
        return self._new_run(sequence, cache, max_workers, ordered, streamed)

    async def _aopen_run(
        self,
        sequence: Inputs,
        task_name: str | None,
        max_workers: int,
        ordered: bool,
        *,
        streamed: bool = True,
    ) -> BatchRun:
        cache, others = await asyncio.to_thread(self._cache_for, task_name)
        # Warned here, in the caller's context, not on the helper thread.
        self._warn_other_configs(task_name, others)
        return self._new_run(sequence, cache, max_workers, ordered, streamed)

    # -- sync driving of a run on the loom's loop thread -------------------------------------

    def _sync_pairs(self, run: BatchRun) -> Iterator[tuple[int, TaskResult[Any]]]:
        async def start() -> None:
            self._enter_run(run)

        self._bridge.run(start())
        try:
            while True:
                batch = self._bridge.run(run.next_batch())
                if not batch:
                    return
                yield from batch
        finally:
            # Once the loom is closed, close() has ended the run and stopped the loop.
            with contextlib.suppress(LoomClosedError):
                self._bridge.run(self._leave_run(run))

    async def _collect(self, run: BatchRun, collector: ResultCollector) -> None:
        self._enter_run(run)
        # The bar also moves while no result arrives (a 429 pause, retries under way).
        ticker = asyncio.ensure_future(collector.tick()) if collector.bar is not None else None
        try:
            while batch := await run.next_batch():
                collector.add_many(batch)
        finally:
            if ticker is not None:
                ticker.cancel()
            await self._leave_run(run)

    async def _async_pairs(self, run: BatchRun) -> AsyncIterator[tuple[int, TaskResult[Any]]]:
        self._enter_run(run)
        try:
            while batch := await run.next_batch():
                for pair in batch:
                    yield pair
        finally:
            await self._leave_run(run)

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
        self._check_open()
        self._check_batch_args(task_name, max_workers)
        run = self._open_run(sequence, task_name, max_workers, ordered=False, streamed=False)
        with ResultCollector(progress, run.total, self._runner, self._limiter) as collector:
            # Collected on the loop thread, in one call: handing results over to this thread
            # a batch at a time would cost a thread switch per batch and contend for the GIL.
            self._bridge.run(self._collect(run, collector))
        return collector.batch()

    async def amap(
        self,
        sequence: Inputs,
        task_name: str | None = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        progress: bool = False,
    ) -> BatchResult[T]:
        """Async twin of :meth:`map` (also takes an async iterable)."""
        self._check_open()
        self._check_batch_args(task_name, max_workers)
        run = await self._aopen_run(sequence, task_name, max_workers, ordered=False, streamed=False)
        with ResultCollector(progress, run.total, self._runner, self._limiter) as collector:
            await self._collect(run, collector)
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
        self._check_open()
        self._check_batch_args(task_name, max_workers)
        run = self._open_run(sequence, task_name, max_workers, ordered)
        return (result for _, result in self._sync_pairs(run))

    def astream(
        self,
        sequence: Inputs,
        task_name: str | None = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        ordered: bool = False,
    ) -> AsyncIterator[TaskResult[T]]:
        """Async twin of :meth:`stream`; close it (or cancel its task) to stop early."""
        self._check_open()
        self._check_batch_args(task_name, max_workers)

        async def results() -> AsyncIterator[TaskResult[T]]:
            run = await self._aopen_run(sequence, task_name, max_workers, ordered)
            async for _, result in self._async_pairs(run):
                yield result

        return results()

    def stream_events(
        self,
        sequence: Iterable[Any],
        task_name: str | None = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        ordered: bool = False,
    ) -> Iterator[StreamEvent]:
        """Typed events: ``batch_start``, one ``task_result`` per input, ``batch_end``."""
        self._check_open()
        self._check_batch_args(task_name, max_workers)
        run = self._open_run(sequence, task_name, max_workers, ordered)
        events = BatchEvents(task_name, run.total)

        def generate() -> Iterator[StreamEvent]:
            yield events.start()
            try:
                for index, result in self._sync_pairs(run):
                    yield events.result(index, result)
            except Exception as exc:
                yield events.error(exc)
                return
            yield events.end()

        return generate()

    def astream_events(
        self,
        sequence: Inputs,
        task_name: str | None = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        ordered: bool = False,
    ) -> AsyncIterator[StreamEvent]:
        """Async twin of :meth:`stream_events` (what an SSE endpoint sends)."""
        self._check_open()
        self._check_batch_args(task_name, max_workers)

        async def generate() -> AsyncIterator[StreamEvent]:
            run_total = len(sequence) if isinstance(sequence, Sized) else None
            events = BatchEvents(task_name, run_total)
            yield events.start()
            try:
                run = await self._aopen_run(sequence, task_name, max_workers, ordered)
                async for index, result in self._async_pairs(run):
                    yield events.result(index, result)
            except Exception as exc:
                yield events.error(exc)
                return
            yield events.end()

        return generate()

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
        runs = self._begin_close()
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
        runs = self._begin_close()
        if runs is None:
            return
        waits, local = end_runs(runs)
        for run in local:
            await run.aclose()
        if waits:
            await asyncio.wait([asyncio.wrap_future(w) for w in waits], timeout=ABORT_WAIT)
        if self._owns_backend:
            # This loop's connections, closed on this loop.
            await self._backend.aclose()
        if self._bridge.on_loop_thread():
            threading.Thread(target=self._release, name="loom-close", daemon=True).start()
            return
        await asyncio.to_thread(self._release)

    def _begin_close(self) -> list[BatchRun] | None:
        """Mark the loom closed; the runs to end, or ``None`` when it was already closed."""
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            return list(self._runs)

    def _release(self) -> None:
        """Drain the writer, release the store and the backend, stop the loop thread."""
        try:
            if self._writer is not None:
                self._writer.close()
            if self._owns_store and self._store is not None:
                self._store.close()
            if self._owns_backend:
                with contextlib.suppress(LoomClosedError):
                    self._bridge.run(self._backend.aclose())
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
