"""One task's way through the engine: build the request, call with retries, parse or re-ask.

Each job is its own part: :class:`~._request.RequestBuilder` (templates, images, settings),
:class:`~._backend_call.BackendCaller` (rate limiter, timeout, transport retries) and
:class:`~._reask.AnswerReader` (parsing, re-asks). :class:`TaskRunner` only strings them
together and turns the outcome into a :class:`TaskResult`.

Everything here runs on whichever event loop calls it; shared state (the rate limiter, the
backend's per-loop clients, the store writer) is safe across loops and threads.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from loom_protocol import Backend, BackendError, ChatResponse, Error, ErrorCode, TaskResult

from ._adaptive import ConcurrencyLimit
from ._attempts import Attempts
from ._backend_call import BackendCaller
from ._budget import Budget
from ._extract import split_reasoning
from ._fallback import ModelChain
from ._images import ImageError
from ._inputs import PreparedInput, failed_result, prepare_input
from ._output import OutputSpec
from ._output_errors import OutputError
from ._pricing import Pricer
from ._ratelimit import RateLimiter
from ._reask import AnswerReader
from ._render import PromptTemplate, TemplateRenderError
from ._request import RequestBuilder

__all__ = ["PreparedInput", "TaskRunner", "failed_result", "prepare_input", "task_result"]


class TaskRunner:
    """Runs one prepared input to a :class:`TaskResult` (no caching, no persistence).

    ``max_retries`` bounds the transport retries and, apart, the re-asks of each task.

    Attributes:
        pricer: Prices each result's usage (``cost_usd``).
        requests: Builds each task's request.
        caller: Calls the backend, with transport retries.
        reader: Parses answers and decides re-asks.
    """

    def __init__(
        self,
        *,
        backend: Backend,
        model: str,
        prompt: PromptTemplate,
        system: PromptTemplate | None,
        output: OutputSpec,
        temperature: float | None,
        max_tokens: int | None,
        params: Mapping[str, Any],
        auto_repair_json: bool,
        max_retries: int,
        limiter: RateLimiter,
        timeout: float | None,
        image_root: str | None,
        max_retry_wait: float,
        fallbacks: Sequence[tuple[str, Backend]] = (),
        pricer: Pricer | None = None,
        concurrency: ConcurrencyLimit | None = None,
    ) -> None:
        self.model = model
        self.pricer = pricer if pricer is not None else Pricer({}, model)
        self.requests = RequestBuilder(
            model=model,
            prompt=prompt,
            system=system,
            response_format=output.response_format,
            temperature=temperature,
            max_tokens=max_tokens,
            params=params,
            image_root=image_root,
        )
        self.caller = BackendCaller(
            backend=backend,
            limiter=limiter,
            timeout=timeout,
            max_retries=max_retries,
            max_retry_wait=max_retry_wait,
            concurrency=concurrency,
        )
        self.reader = AnswerReader(output=output, repair=auto_repair_json, max_retries=max_retries)
        #: The primary model then its fallbacks (``None`` without fallbacks: the plain path).
        self.chain: ModelChain | None = None
        if fallbacks:
            others = [
                (
                    name,
                    BackendCaller(
                        backend=other,
                        limiter=limiter,
                        timeout=timeout,
                        max_retries=max_retries,
                        max_retry_wait=max_retry_wait,
                    ),
                )
                for name, other in fallbacks
            ]
            self.chain = ModelChain(self.caller, model, others)

    @property
    def retries(self) -> int:
        """Calls made beyond each task's first (provider retries and re-asks), over the
        runner's life: the progress bar shows how many a batch added."""
        calls = self.caller.retries if self.chain is None else self.chain.retries
        return calls + self.reader.retries

    async def run(self, prepared: PreparedInput, budget: Budget | None = None) -> TaskResult[Any]:
        """Run one task. Never raises, except ``asyncio.CancelledError``.

        With a ``budget``, each call (the first and each re-ask) starts only if the budget
        holds it; otherwise the task ends ``budget_exceeded``, with what it spent so far.
        """
        started = time.perf_counter()
        task_id, data = prepared.task_id, prepared.data
        # Rendering and parsing are plain calls, so that a task makes no coroutine but this one
        # and the backend call's (each costs in scripts/bench.py scenario "overhead").
        try:
            try:
                messages, images = self.requests.messages(data)
                if images:
                    messages = await self.requests.add_images(messages, images)
            except TemplateRenderError as exc:
                return self._failed(prepared, ErrorCode.TEMPLATE_ERROR, exc.message)
            except ImageError as exc:
                return self._failed(prepared, ErrorCode.IMAGE_UNREADABLE, exc.message)
            attempts = Attempts()
            on = [0]  # the model in use: a task that fell back stays on its fallback
            while True:
                request = self.requests.request(messages)
                held = None
                if budget is not None:
                    reserved = await budget.reserve(request)
                    if isinstance(reserved, Error):
                        return self._result(prepared, started, attempts, error=reserved)
                    held = reserved
                try:
                    if self.chain is None:
                        response = await self.caller.call(request, attempts, task_id)
                    else:
                        response = await self.chain.call(request, attempts, task_id, on)
                except BackendError as exc:
                    if budget is not None and held is not None:
                        budget.settle(held, None, answered=False)
                    return self._result(
                        prepared, started, attempts, error=exc.error, model=self._model_at(on[0])
                    )
                if budget is not None and held is not None:
                    budget.settle(held, response.usage, answered=True)
                answer, reasoning = split_reasoning(response.content, response.reasoning)
                try:
                    value = self.reader.parse(answer, response.finish_reason)
                except OutputError as exc:
                    if not self.reader.reask(exc.error, attempts, task_id):
                        return self._result(
                            prepared,
                            started,
                            attempts,
                            response,
                            reasoning,
                            error=exc.error,
                            model=self._model_at(on[0]),
                        )
                    # Ask again with the model's own answer and what was wrong with it.
                    messages = self.reader.feedback(messages, response, exc.error)
                    continue
                return self._result(
                    prepared,
                    started,
                    attempts,
                    response,
                    reasoning,
                    value,
                    model=self._model_at(on[0]),
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of ours or a contract breach: keep the batch going
            return failed_result(
                task_id,
                ErrorCode.INTERNAL,
                f"internal error: {type(exc).__name__}: {exc}",
                input_data=data,
                detail=traceback.format_exc(),
                latency_ms=(time.perf_counter() - started) * 1000,
                model=self.model,
            )

    def _model_at(self, index: int) -> str:
        return self.model if self.chain is None else self.chain.model(index)

    def _failed(self, prepared: PreparedInput, code: ErrorCode, message: str) -> TaskResult[Any]:
        """A task that failed before any call (its prompt or its images)."""
        return failed_result(
            prepared.task_id, code, message, input_data=prepared.data, model=self.model
        )

    def _result(
        self,
        prepared: PreparedInput,
        started: float,
        attempts: Attempts,
        response: ChatResponse | None = None,
        reasoning: str | None = None,
        value: Any = None,
        *,
        error: Error | None = None,
        model: str | None = None,
    ) -> TaskResult[Any]:
        """The result of a task that made calls: its value, or the ``error`` it ended with.

        ``model`` is the model called (a fallback's, when the task fell back); the provider's
        own name for it, when the answer says, wins.
        """
        return task_result(
            model or self.model,
            prepared.task_id,
            prepared.data,
            attempts,
            response,
            reasoning,
            value,
            pricer=self.pricer,
            error=error,
            latency_ms=(time.perf_counter() - started) * 1000,
        )


def task_result(
    model: str,
    task_id: str,
    input_data: dict[str, Any],
    attempts: Attempts,
    response: ChatResponse | None = None,
    reasoning: str | None = None,
    value: Any = None,
    *,
    pricer: Pricer,
    error: Error | None = None,
    latency_ms: float | None = None,
    provider_batch: bool = False,
) -> TaskResult[Any]:
    """The result of a task that made calls (online or in a provider batch): its value, or
    the ``error`` it ended with; its last answer, its calls, their usage and cost.

    ``model`` is the model called; the provider's own name for it, when the answer says,
    wins. A provider batch's calls are priced at the batch price.
    """
    answered = model if response is None else (response.model or model)
    return TaskResult(
        task_id=task_id,
        is_success=error is None,
        data=value,
        error=error,
        input_data=input_data,
        raw_output=None if response is None else response.content,
        reasoning=reasoning,
        attempts=attempts.calls,
        usage=attempts.usage,
        latency_ms=latency_ms,
        model=answered,
        cost_usd=pricer.cost(attempts.usage, answered, batch=provider_batch),
        provider_batch=provider_batch,
    )
