"""Fallback models: the models a task turns to when its model's provider is out.

A task calls its model first, with the engine's retries. Only when that ends in
``provider_unavailable`` (every endpoint out, or 5xx and refused connections through every
retry) does it call the next model of ``fallback_models``, with a retry budget of its own, and
so on; any other failure (auth, bad request, rate limited, timeout) is the task's answer, as
without fallbacks. A task that fell back stays on its fallback for its re-asks. The result's
``model`` says which model answered.

A fallback model routed like the primary model (``gpt-4o-mini`` after ``gpt-4o``, another
model on the same vLLM servers) shares its backend: the same endpoints and keys. One routed
elsewhere (``claude-…`` after ``gpt-4o``) gets a backend of its own, configured from its
provider's environment variables (``ANTHROPIC_API_KEY``…), which the loom owns and closes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loom_backends import OPENAI_BASE_URL_ENV, backend_route, resolve_backend
from loom_protocol import (
    Backend,
    BackendError,
    ChatRequest,
    ChatResponse,
    ErrorCode,
    LoomUsageError,
    check_non_empty_string,
)

from ._attempts import Attempts
from ._backend_call import BackendCaller

__all__ = ["MAX_FALLBACK_MODELS", "Fallback", "ModelChain", "check_fallback_models", "fallbacks"]

#: The most fallback models a loom takes.
MAX_FALLBACK_MODELS = 16

_log = logging.getLogger("loom.fallback")


def check_fallback_models(value: object, model: str) -> tuple[str, ...]:
    """``fallback_models`` checked: a list of distinct model names, none the primary model.

    Raises:
        LoomUsageError: Not a list (a single string), an empty or non-string name, a name
            given twice or equal to ``model``, or more than :data:`MAX_FALLBACK_MODELS`.
    """
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise LoomUsageError(
            f"fallback_models must be a list of model names, got {type(value).__name__}"
            + (f" (write [{value!r}])" if isinstance(value, str) else "")
        )
    if len(value) > MAX_FALLBACK_MODELS:
        raise LoomUsageError(
            f"fallback_models has {len(value)} names; at most {MAX_FALLBACK_MODELS} are supported"
        )
    names: list[str] = []
    for i, name in enumerate(value):
        check_non_empty_string(f"fallback_models[{i}]", name, allow_blank=False)
        if name == model:
            raise LoomUsageError(f"fallback_models[{i}] is the model itself ({model!r})")
        if name in names:
            raise LoomUsageError(f"fallback_models[{i}] ({name!r}) is given twice")
        names.append(name)
    return tuple(names)


@dataclass(frozen=True, slots=True)
class Fallback:
    """One fallback model: the name sent, its backend, and whether the loom made it apart."""

    name: str
    model: str
    backend: Backend
    own: bool


def fallbacks(
    names: Sequence[str],
    primary: Backend,
    *,
    model: str,
    explicit: bool,
    base_url: Any,
    api_key: str | None,
    endpoints: Any,
    timeout: float,
) -> list[Fallback]:
    """Resolve each fallback model (see the module docstring for which backend it gets).

    Args:
        names: The checked fallback model names.
        primary: The primary model's backend.
        model: The primary model's name.
        explicit: A ``client`` or ``backend`` was given: every model uses it.
        base_url: TaskLoom's ``base_url`` (one URL or a list).
        api_key: TaskLoom's ``api_key``.
        endpoints: TaskLoom's ``endpoints``.
        timeout: The loom's timeout.

    Raises:
        LoomUsageError: A fallback model that cannot be resolved.
    """
    known = bool(base_url or endpoints or os.environ.get(OPENAI_BASE_URL_ENV))
    route = backend_route(model, base_url_known=known)
    made: list[Fallback] = []
    for name in names:
        if explicit:
            made.append(Fallback(name, name, primary, own=False))
            continue
        try:
            if backend_route(name, base_url_known=known) == route:
                # The same kind of backend: the primary's, with its endpoints and keys (a
                # routing prefix is stripped as it would be for the primary).
                routed = resolve_backend(
                    name,
                    base_url=base_url,
                    api_key=api_key,
                    endpoints=endpoints,
                    timeout=timeout,
                )
                made.append(Fallback(name, routed.model, primary, own=False))
            else:
                other = resolve_backend(name, timeout=timeout)
                made.append(Fallback(name, other.model, other.backend, own=True))
        except LoomUsageError as exc:
            raise LoomUsageError(f"fallback model {name!r}: {exc}") from None
    return made


class ModelChain:
    """Calls a request's model, then its fallbacks while the provider is out.

    Args:
        primary: The primary model's caller.
        model: The primary model's name.
        others: Each fallback's name (as sent) and caller.
    """

    __slots__ = ("_chain",)

    def __init__(
        self, primary: BackendCaller, model: str, others: Sequence[tuple[str, BackendCaller]]
    ) -> None:
        self._chain = [(model, primary), *others]

    @property
    def retries(self) -> int:
        """Calls made again after a transport failure, every model's callers together."""
        return sum(caller.retries for _, caller in self._chain)

    async def call(
        self, request: ChatRequest, attempts: Attempts, task_id: str, at: list[int]
    ) -> ChatResponse:
        """The answer of the model at ``at[0]``, or of the fallbacks after it.

        ``at[0]`` is moved to each model the chain turns to, so that it names the model that
        answered, or whose error is raised.

        Raises:
            BackendError: The last model's error, or any error that is no outage.
        """
        last = len(self._chain) - 1
        for index in range(at[0], last + 1):
            at[0] = index
            model, caller = self._chain[index]
            sent = request if index == 0 else request.model_copy(update={"model": model})
            try:
                return await caller.call(sent, attempts, task_id)
            except BackendError as exc:
                if index == last or exc.code is not ErrorCode.PROVIDER_UNAVAILABLE:
                    raise
                _log.warning(
                    "task %s: model %s is unavailable (%s); trying fallback model %s",
                    task_id[:12],
                    model,
                    exc.code.value,
                    self._chain[index + 1][0],
                )
                attempts.transport_failures = 0  # the next model's own retry budget
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def model(self, index: int) -> str:
        """The name sent for the model at ``index``."""
        return self._chain[index][0]
