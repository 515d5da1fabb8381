"""One task's way through the engine: normalise, render, images, call with retries, parse.

Everything here runs on whichever event loop calls it; shared state (the rate limiter, the
backend's per-loop clients, the store writer) is safe across loops and threads.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import traceback
from collections.abc import Mapping
from typing import Any

from loom_protocol import (
    Backend,
    BackendError,
    ChatRequest,
    ChatResponse,
    Error,
    ErrorCode,
    ImagePart,
    Message,
    TaskResult,
    TextPart,
    Usage,
)

from ._images import ImageError, aload_image_url, image_refs
from ._inputs import PreparedInput, failed_result, prepare_input
from ._output import OutputError, OutputSpec, split_reasoning
from ._ratelimit import RateLimiter, estimate_tokens
from ._render import PromptTemplate, TemplateRenderError
from ._retry import DEFAULT_MAX_RETRY_WAIT, asked_wait, backoff_delay

__all__ = ["PreparedInput", "TaskRunner", "failed_result", "prepare_input"]


# What the engine does on its own is logged (never an input's content, never a credential).
_retry_log = logging.getLogger("loom.retry")
_pause_log = logging.getLogger("loom.ratelimit")


class _Status:
    """`` (HTTP 429)``, or nothing without a status: formatted only if the record is emitted."""

    __slots__ = ("status",)

    def __init__(self, status: int | None) -> None:
        self.status = status

    def __str__(self) -> str:
        return "" if self.status is None else f" (HTTP {self.status})"


class _Attempts:
    """Usage and attempt counts accumulated over one task's calls."""

    __slots__ = ("calls", "usage")

    def __init__(self) -> None:
        self.calls = 0
        self.usage: Usage | None = None

    def add(self, usage: Usage | None) -> None:
        self.calls += 1
        if usage is not None:
            self.usage = usage if self.usage is None else self.usage + usage


class TaskRunner:
    """Runs one prepared input to a :class:`TaskResult` (no caching, no persistence).

    Attributes:
        retries: Calls made beyond each task's first (provider retries and re-asks), over
            the runner's life: the progress bar shows how many a batch added.
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
        retry_base_delay: float = 0.5,
        max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
    ) -> None:
        self.backend = backend
        self.model = model
        self.prompt = prompt
        self.system = system
        self.output = output
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.params = dict(params)
        self.auto_repair_json = auto_repair_json
        self.max_retries = max_retries
        self.limiter = limiter
        self.timeout = timeout
        self.image_root = image_root
        self.retry_base_delay = retry_base_delay
        self.max_retry_wait = max_retry_wait
        self.retries = 0
        self._rng = random.Random()

    async def build_messages(self, data: dict[str, Any]) -> list[Message]:
        """Render the templates and load the images (raises TemplateRenderError/ImageError)."""
        messages: list[Message] = []
        if self.system is not None:
            messages.append(Message(role="system", content=self.system.render(data)))
        text = self.prompt.render(data)
        refs = image_refs(data.get("images"))
        if not refs:
            messages.append(Message(role="user", content=text))
            return messages
        urls = [await aload_image_url(ref, image_root=self.image_root) for ref in refs]
        parts: list[TextPart | ImagePart] = [TextPart(text=text)]
        parts.extend(ImagePart(url=url) for url in urls)
        messages.append(Message(role="user", content=parts))
        return messages

    async def run(self, prepared: PreparedInput) -> TaskResult[Any]:
        """Run one task. Never raises, except ``asyncio.CancelledError``."""
        started = time.perf_counter()
        try:
            return await self._run(prepared, started)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of ours or a contract breach: keep the batch going
            return failed_result(
                prepared.task_id,
                ErrorCode.INTERNAL,
                f"internal error: {type(exc).__name__}: {exc}",
                input_data=prepared.data,
                detail=traceback.format_exc(),
                latency_ms=(time.perf_counter() - started) * 1000,
                model=self.model,
            )

    async def _run(self, prepared: PreparedInput, started: float) -> TaskResult[Any]:
        task_id, data = prepared.task_id, prepared.data
        try:
            messages = await self.build_messages(data)
        except TemplateRenderError as exc:
            return failed_result(
                task_id, ErrorCode.TEMPLATE_ERROR, exc.message, input_data=data, model=self.model
            )
        except ImageError as exc:
            return failed_result(
                task_id, ErrorCode.IMAGE_UNREADABLE, exc.message, input_data=data, model=self.model
            )

        attempts = _Attempts()
        transport_failures = 0
        reasks = 0
        while True:
            request = ChatRequest(
                model=self.model,
                messages=messages,
                temperature=self.temperature,
                max_tokens=self.max_tokens,
                response_format=self.output.response_format,
                params=self.params,
            )
            try:
                response = await self._call(request, attempts)
            except BackendError as exc:
                transport_failures += 1
                if not exc.retryable:
                    return self._failed_call(task_id, data, exc, attempts, started)
                asked = asked_wait(exc.retry_after)
                if asked is not None and asked > self.max_retry_wait:
                    # Waiting that long would stall the task (and, for a 429, the whole loom):
                    # this task fails now, saying what was asked; a later run retries it.
                    return self._refused_wait(task_id, data, exc, asked, attempts, started)
                if transport_failures > self.max_retries:
                    _retry_log.warning(
                        "task %s failed after %d attempts: %s%s; giving up",
                        task_id[:12],
                        attempts.calls,
                        exc.code.value,
                        _Status(exc.status),
                    )
                    return self._failed_call(task_id, data, exc, attempts, started)
                # One 429 with Retry-After pauses every worker of the loom, not only this one
                # (reported by the 429 that starts or extends the pause).
                if (
                    exc.code is ErrorCode.PROVIDER_RATE_LIMITED
                    and asked
                    and self.limiter.pause(asked)
                ):
                    _pause_log.warning(
                        "rate limited%s with Retry-After %.3g s: every worker of this loom "
                        "pauses that long before its next call",
                        _Status(exc.status),
                        asked,
                    )
                delay = backoff_delay(
                    transport_failures,
                    base=self.retry_base_delay,
                    retry_after=asked,
                    rng=self._rng,
                    max_wait=self.max_retry_wait,
                )
                self.retries += 1
                _retry_log.info(
                    "task %s: %s%s; retry %d of %d in %.2f s",
                    task_id[:12],
                    exc.code.value,
                    _Status(exc.status),
                    transport_failures,
                    self.max_retries,
                    delay,
                )
                await asyncio.sleep(delay)
                continue

            answer, reasoning = split_reasoning(response.content, response.reasoning)
            try:
                value = self._parse(answer, response)
            except OutputError as exc:
                reasks += 1
                if reasks > self.max_retries:
                    _retry_log.warning(
                        "task %s: the answer still fails (%s) after %d re-asks; giving up",
                        task_id[:12],
                        exc.error.code.value,
                        self.max_retries,
                    )
                    return failed_result(
                        task_id,
                        exc.error.code,
                        exc.error.message,
                        input_data=data,
                        detail=exc.error.detail,
                        raw_output=response.content,
                        reasoning=reasoning,
                        attempts=attempts.calls,
                        usage=attempts.usage,
                        latency_ms=(time.perf_counter() - started) * 1000,
                        model=response.model or self.model,
                    )
                # Ask again with the model's own answer and what was wrong with it.
                self.retries += 1
                _retry_log.info(
                    "task %s: the answer fails (%s); re-ask %d of %d",
                    task_id[:12],
                    exc.error.code.value,
                    reasks,
                    self.max_retries,
                )
                messages = [
                    *messages,
                    Message(role="assistant", content=response.content or ""),
                    Message(role="user", content=self.output.feedback_message(exc.error)),
                ]
                continue
            return TaskResult(
                task_id=task_id,
                is_success=True,
                data=value,
                input_data=data,
                raw_output=response.content,
                reasoning=reasoning,
                attempts=attempts.calls,
                usage=attempts.usage,
                latency_ms=(time.perf_counter() - started) * 1000,
                model=response.model or self.model,
            )

    async def _call(self, request: ChatRequest, attempts: _Attempts) -> ChatResponse:
        # Estimating tokens serialises the request: only worth it under a tpm limit.
        estimate = estimate_tokens(request) if self.limiter.tpm is not None else 0
        await self.limiter.acquire(estimate)
        # A safety net for backends without a timeout of their own (callables, SDK clients);
        # HTTP backends time out first, with their own, more precise error.
        limit = None if self.timeout is None else self.timeout + 5.0
        try:
            async with asyncio.timeout(limit):
                response = await self.backend.acomplete(request)
        except TimeoutError:
            attempts.add(None)
            raise BackendError(
                Error(
                    code=ErrorCode.PROVIDER_TIMEOUT,
                    message=f"no answer within {limit:g} s",
                    retryable=True,
                )
            ) from None
        except BackendError:
            attempts.add(None)
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Backends must raise BackendError; anything else is the backend's bug, not retried.
            attempts.add(None)
            raise BackendError(
                Error(
                    code=ErrorCode.PROVIDER_ERROR,
                    message=f"backend raised {type(exc).__name__}: {exc}",
                    detail=traceback.format_exc(),
                )
            ) from exc
        attempts.add(response.usage)
        if estimate and response.usage is not None:
            self.limiter.record_usage(estimate, response.usage.total_tokens)
        return response

    def _parse(self, answer: str, response: ChatResponse) -> Any:
        if response.finish_reason == "length":
            structured = self.output.kind != "text"
            raise OutputError(
                Error(
                    code=ErrorCode.JSON_INVALID if structured else ErrorCode.VALIDATION_FAILED,
                    message="the answer was cut off at the token limit (finish_reason=length)",
                    detail=(
                        "The previous answer was truncated because it reached the maximum "
                        "number of tokens. Answer again, more concisely, so that the whole "
                        "answer fits."
                    ),
                )
            )
        return self.output.parse(answer, repair=self.auto_repair_json)

    def _refused_wait(
        self,
        task_id: str,
        data: dict[str, Any],
        exc: BackendError,
        asked: float,
        attempts: _Attempts,
        started: float,
    ) -> TaskResult[Any]:
        wait = f"{asked:g} s" if math.isfinite(asked) else "without limit"
        said = (
            f"the provider asked to wait {wait}, more than "
            f"max_retry_wait={self.max_retry_wait:g} s; not waiting"
        )
        _retry_log.warning("task %s: %s%s; giving up", task_id[:12], said, _Status(exc.status))
        error = exc.error.model_copy(update={"message": f"{said} ({exc.error.message})"})
        return self._failed_call(task_id, data, BackendError(error), attempts, started)

    def _failed_call(
        self,
        task_id: str,
        data: dict[str, Any],
        exc: BackendError,
        attempts: _Attempts,
        started: float,
    ) -> TaskResult[Any]:
        error = exc.error
        return failed_result(
            task_id,
            error.code,
            error.message,
            input_data=data,
            detail=error.detail,
            retryable=error.retryable,
            status=error.status,
            attempts=attempts.calls,
            usage=attempts.usage,
            latency_ms=(time.perf_counter() - started) * 1000,
            model=self.model,
        )
