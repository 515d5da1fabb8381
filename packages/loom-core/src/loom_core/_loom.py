"""``TaskLoom``: the facade. Every public method is a thin shell over one async scheduler."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import os
import threading
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar

from loom_backends import DEFAULT_TIMEOUT, Endpoint
from loom_protocol import (
    Backend,
    BatchResult,
    LoomUsageError,
    StreamEvent,
    TaskResult,
    redact_url,
)
from loom_store import ResultStore

from ._batch_policy import BatchPolicy
from ._bridge import LoomClosedError, LoopThread
from ._budget import budget_limits
from ._build import build_engine
from ._calls import BatchCall, LoomConfigWarning, batch_call
from ._defaults import DEFAULT_DB, default_workers
from ._delivery import BatchEvents, ResultCollector
from ._drive import Driver
from ._estimate import CostEstimate, estimate_batch
from ._lease import DEFAULT_LEASE_S, check_lease
from ._lifetime import ABORT_WAIT, end_runs
from ._loom_batch import ProviderBatchMethods
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


class TaskLoom(ProviderBatchMethods, Generic[T]):
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
        base_url: The provider's base URL (else ``OPENAI_BASE_URL`` / ``ANTHROPIC_BASE_URL``),
            or a list of servers of the same model: requests spread over them (see
            ``endpoints``).
        api_key: The provider's key (else ``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY``); with
            several endpoints, the key of those without their own.
        endpoints: Several servers of the same model, each an ``Endpoint(url, api_key=... or
            api_key_env=..., weight=...)``, a URL or a dict of those fields: requests spread
            by weight and load, a server that fails is taken out (circuit breaker) and its
            requests go to the others. Not with ``base_url``. The list is not part of the
            config fingerprint: the same model on other servers gives the same results.
        fallback_models: Models a task turns to, in order, when its model's provider is out
            (``provider_unavailable`` after the retries); one routed like ``model`` shares its
            backend and endpoints, another gets its own from its provider's environment. They
            are part of the config fingerprint; the result's ``model`` says which answered.
        store: A ``ResultStore`` or a store URL (``postgresql+psycopg://…``); overrides db_path.
        rpm: Requests per minute, at most, for this loom.
        tpm: Tokens per minute, at most, for this loom (estimated before, corrected after).
        adaptive: Adapt to the provider (the default, ``True``): pace to the rate limits its
            headers report, and find the concurrency it takes from its 429s and latency,
            ``max_workers`` being the ceiling and ``rpm``/``tpm`` caps. ``False``: exactly
            ``max_workers`` calls in flight (default 5) and only ``rpm``/``tpm``, as before
            Loom adapted. ``"aimd"`` (what ``True`` means) or ``"gradient"`` choose the method
            (docs/limits.md).
        timeout: Seconds for one provider call.
        max_retry_wait: The longest wait, in seconds, before a retry: a backoff, or the pause
            of the whole loom after a 429. A task whose provider asks (``Retry-After``) for
            longer fails at once, with a message saying what was asked.
        image_root: When set, local image paths must lie inside this folder.
        prices: Prices per model, in dollars per million tokens:
            ``{"my-model": {"input": 0.5, "output": 1.5, "cached_input": 0.25}}``
            (``cached_input`` optional). They win over the bundled table
            (``loom_protocol.BUNDLED_PRICES``) and price ``TaskResult.cost_usd``, the
            summaries and ``max_cost``. See docs/cost.md.
        batch_policy: How provider batches (``map(..., batch=True)``, ``submit_batch``…) are
            polled and how long a submit may take; see ``docs/batch.md``.
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
            URL that is malformed or names a database the store does not run on, or
            ``prices`` that are not a table of finite, non-negative prices.
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
        base_url: str | Sequence[str | Endpoint | dict[str, Any]] | None = None,
        api_key: str | None = None,
        endpoints: Sequence[str | Endpoint | dict[str, Any]] | None = None,
        fallback_models: Sequence[str] | None = None,
        store: ResultStore | str | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
        adaptive: bool | str = True,
        timeout: float = DEFAULT_TIMEOUT,
        max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
        image_root: str | os.PathLike[str] | None = None,
        prices: Mapping[str, Any] | None = None,
        batch_policy: BatchPolicy | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        **llm_kwargs: Any,
    ) -> None:
        if batch_policy is not None and not isinstance(batch_policy, BatchPolicy):
            raise LoomUsageError(
                f"batch_policy must be a BatchPolicy, got {type(batch_policy).__name__}"
            )
        self._batch_policy = batch_policy or BatchPolicy()
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
            endpoints=endpoints,
            fallback_models=fallback_models,
            rpm=rpm,
            tpm=tpm,
            adaptive=adaptive,
            timeout=timeout,
            max_retry_wait=max_retry_wait,
            image_root=image_root,
            llm_kwargs=llm_kwargs,
            loom_args=_loom_args(),
            prices=prices,
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
            pricer=engine.pricer,
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
        max_workers: int | None,
        ordered: bool = False,
        max_cost: float | None = None,
        max_tokens_total: int | None = None,
        *,
        streamed: bool = True,
    ) -> BatchCall:
        """The checked call of a public batch method."""
        self._session.check_open()
        if max_workers is None:
            max_workers = default_workers(self._engine.concurrency is not None)
        budget = budget_limits(max_cost, max_tokens_total, self._engine.pricer)
        return batch_call(
            sequence, task_name, max_workers, ordered, streamed=streamed, budget=budget
        )

    def _collector(self, progress: bool, call: BatchCall) -> ResultCollector:
        engine = self._engine
        return ResultCollector(
            progress, call.total, engine.runner, engine.limiter, engine.concurrency
        )

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
        max_workers: int | None = None,
        progress: bool = False,
        *,
        max_cost: float | None = None,
        max_tokens_total: int | None = None,
        batch: bool = False,
    ) -> BatchResult[T]:
        """Run every input; results in input order.

        Args:
            sequence: Dicts or strings (a string ``s`` is ``{"text": s}``), any iterable.
            task_name: Store results under this name and serve them from the store next time.
            max_workers: Calls in flight at most: the ceiling of an adaptive loom (default
                64), the fixed concurrency of one with ``adaptive=False`` (default 5).
            progress: Show a tqdm progress bar (its postfix shows the concurrency reached
                and the limits the provider reported).
            max_cost: Dollars this call may spend on new calls: no call starts once what
                was spent plus the estimate of what is in flight would pass it; the inputs
                left end ``budget_exceeded`` (not stored: a run with a higher cap calls
                them). Needs a known price for the model (else ``LoomUsageError``).
            max_tokens_total: The same cap in tokens (prompt + completion).
            batch: Run the inputs that have no stored result through the provider's Batch
                API (half the price, within 24 hours): submit, poll, collect. Needs a
                ``task_name``; Ctrl-C or a crash loses nothing, and the same call resumes
                the job without submitting anything twice (``docs/batch.md``). The caps
                ``max_cost``/``max_tokens_total`` do not apply to it (``LoomUsageError``).
        """
        if _check_batch(batch, max_cost, max_tokens_total):
            return self._driver.run(self._batch_map(sequence, task_name, progress))
        call = self._call(
            sequence, task_name, max_workers, False, max_cost, max_tokens_total, streamed=False
        )
        with self._collector(progress, call) as collector:
            # Collected on the loop thread, in one call: handing results over to this thread
            # a batch at a time would cost a thread switch per batch and contend for the GIL.
            self._driver.run(self._driver.collect(call, collector))
        return collector.batch()

    async def amap(
        self,
        sequence: Inputs,
        task_name: str | None = None,
        max_workers: int | None = None,
        progress: bool = False,
        *,
        max_cost: float | None = None,
        max_tokens_total: int | None = None,
        batch: bool = False,
    ) -> BatchResult[T]:
        """Async twin of :meth:`map` (also takes an async iterable)."""
        if _check_batch(batch, max_cost, max_tokens_total):
            return await self._batch_map(sequence, task_name, progress)
        call = self._call(
            sequence, task_name, max_workers, False, max_cost, max_tokens_total, streamed=False
        )
        with self._collector(progress, call) as collector:
            await self._driver.collect(call, collector)
        return collector.batch()

    def stream(
        self,
        sequence: Iterable[Any],
        task_name: str | None = None,
        max_workers: int | None = None,
        ordered: bool = False,
        *,
        max_cost: float | None = None,
        max_tokens_total: int | None = None,
    ) -> Iterator[TaskResult[T]]:
        """Yield results as they finish (in input order with ``ordered=True``).

        Leaving the loop early cancels the calls in flight; every result already yielded
        (and so committed) stays in the store. ``max_cost`` and ``max_tokens_total`` cap the
        spending as in :meth:`map`. An iterator kept but not read starts no new
        call once ``2 * max_workers`` results wait for it; reading again resumes the batch.
        Closing the loom meanwhile raises ``LoomUsageError`` from the iterator.
        """
        call = self._call(sequence, task_name, max_workers, ordered, max_cost, max_tokens_total)
        return (result for _, result in self._driver.iterate(self._driver.pairs(call)))

    def astream(
        self,
        sequence: Inputs,
        task_name: str | None = None,
        max_workers: int | None = None,
        ordered: bool = False,
        *,
        max_cost: float | None = None,
        max_tokens_total: int | None = None,
    ) -> AsyncIterator[TaskResult[T]]:
        """Async twin of :meth:`stream`; close it (or cancel its task) to stop early."""
        call = self._call(sequence, task_name, max_workers, ordered, max_cost, max_tokens_total)
        return _results(self._driver.flat(self._driver.pairs(call)))

    def stream_events(
        self,
        sequence: Iterable[Any],
        task_name: str | None = None,
        max_workers: int | None = None,
        ordered: bool = False,
        *,
        max_cost: float | None = None,
        max_tokens_total: int | None = None,
    ) -> Iterator[StreamEvent]:
        """Typed events: ``batch_start``, one ``task_result`` per input, ``batch_end``.

        Once started, an event stream does not raise: what ends the batch early (the store
        cannot be opened, the loom is closed, the input iterable raises) is its last event,
        ``batch_error``. Misuse (a bad argument, a closed loom) raises at the call.
        """
        call = self._call(sequence, task_name, max_workers, ordered, max_cost, max_tokens_total)
        events = BatchEvents(task_name, call.total)
        return self._driver.iterate(
            self._driver.events(call, events), closed=lambda exc: [events.error(exc)]
        )

    def astream_events(
        self,
        sequence: Inputs,
        task_name: str | None = None,
        max_workers: int | None = None,
        ordered: bool = False,
        *,
        max_cost: float | None = None,
        max_tokens_total: int | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Async twin of :meth:`stream_events` (what an SSE endpoint sends)."""
        call = self._call(sequence, task_name, max_workers, ordered, max_cost, max_tokens_total)
        return self._driver.flat(self._driver.events(call, BatchEvents(task_name, call.total)))

    # -- estimating --------------------------------------------------------------------------

    def estimate(self, sequence: Iterable[Any], task_name: str | None = None) -> CostEstimate:
        """What ``map(sequence, task_name)`` would call and cost, without calling.

        Reads the inputs and the store (this configuration's results under ``task_name``,
        registering nothing and creating no store file), renders the prompts of the inputs
        the store does not answer and estimates their tokens and cost range (docs/cost.md).
        """
        return self._driver.run(self.aestimate(sequence, task_name))

    async def aestimate(self, sequence: Inputs, task_name: str | None = None) -> CostEstimate:
        """Async twin of :meth:`estimate` (also takes an async iterable)."""
        call = self._call(sequence, task_name, 1, streamed=False)
        cache, _others = await asyncio.to_thread(
            self._session.cache_for, call.task_name, register=False
        )
        return await estimate_batch(
            call.sequence,
            requests=self._engine.runner.requests,
            cache=cache,
            pricer=self._engine.pricer,
        )

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
        for backend in self._engine.owned_backends():
            # This loop's connections, closed on this loop.
            await backend.aclose()
        if self._bridge.on_loop_thread():
            threading.Thread(target=self._release, name="loom-close", daemon=True).start()
            return
        await asyncio.to_thread(self._release)

    def _release(self) -> None:
        """Drain the writer, release the store and the backend, stop the loop thread."""
        try:
            self._session.release()
            for backend in self._engine.owned_backends():
                with contextlib.suppress(LoomClosedError):
                    self._bridge.run(backend.aclose())
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


def _check_batch(batch: Any, max_cost: Any, max_tokens_total: Any) -> bool:
    if not isinstance(batch, bool):
        raise LoomUsageError(f"batch must be True or False, got {batch!r}")
    if batch and (max_cost is not None or max_tokens_total is not None):
        # A provider batch is paid when the provider runs it, hours after the submit: a cap
        # checked per call cannot stop it part-way (docs/cost.md).
        raise LoomUsageError(
            "max_cost and max_tokens_total do not apply to batch=True: a provider batch is "
            "priced when it runs; use loom.estimate(...) before submitting"
        )
    return batch


async def _results(pairs: AsyncIterator[Pair]) -> AsyncIterator[TaskResult[Any]]:
    """The results of ``pairs``, without their input index."""
    try:
        async for _, result in pairs:
            yield result
    finally:
        await pairs.aclose()  # type: ignore[attr-defined]
