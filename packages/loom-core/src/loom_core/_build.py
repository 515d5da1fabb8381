"""Building a loom's engine from TaskLoom's arguments: every check, then the parts.

Everything that can be wrong with the arguments is found here, before anything is opened: a
template that does not parse, an unusable response_model, a backend that cannot be resolved,
an unknown or out-of-range generation parameter.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from loom_backends import EndpointPool, resolve_backend
from loom_protocol import (
    MAX_TIMEOUT,
    Backend,
    LoomUsageError,
    check_int,
    check_positive_number,
    check_prices,
)

from ._adaptive import METHODS, ConcurrencyLimit
from ._config import (
    LoomConfig,
    check_param_names,
    check_param_ranges,
    refuse_batch_args,
    split_generation_params,
)
from ._fallback import check_fallback_models, fallbacks
from ._output import OutputSpec
from ._pool_limit import PoolLimit, adapt_pool
from ._pricing import Pricer
from ._ratelimit import RateLimiter
from ._render import PromptTemplate
from ._retry import check_max_retry_wait
from ._task import TaskRunner

__all__ = ["Engine", "build_engine", "concurrency_limit"]


@dataclass(frozen=True, slots=True)
class Engine:
    """What runs a loom's tasks, and what identifies its results."""

    runner: TaskRunner
    config: LoomConfig
    output: OutputSpec
    backend: Backend
    #: Whether the loom made the backend (and so closes it), or was given it.
    owns_backend: bool
    limiter: RateLimiter
    #: The loom's prices (``prices=`` first, then the bundled table).
    pricer: Pricer
    #: The adaptive concurrency limit, or ``None`` with ``adaptive=False``.
    concurrency: ConcurrencyLimit | None
    #: Backends the loom made for fallback models of another provider (it closes them).
    fallback_backends: tuple[Backend, ...] = ()

    def owned_backends(self) -> list[Backend]:
        """Every backend the loom made, to close with the loom."""
        return [*([self.backend] if self.owns_backend else []), *self.fallback_backends]


def build_engine(
    model: str,
    prompt_template: str,
    system_prompt: str | None,
    response_model: Any,
    *,
    auto_repair_json: bool,
    max_retries: int,
    client: Any | None,
    backend: Backend | None,
    base_url: Any,
    api_key: str | None,
    endpoints: Any,
    fallback_models: Any,
    rpm: float | None,
    tpm: float | None,
    adaptive: bool | str,
    timeout: float,
    max_retry_wait: float,
    image_root: str | os.PathLike[str] | None,
    llm_kwargs: dict[str, Any],
    loom_args: Collection[str],
    prices: Any = None,
) -> Engine:
    """Check TaskLoom's arguments and build its engine (see ``TaskLoom`` for each one).

    ``loom_args`` are TaskLoom's own argument names, for a did-you-mean on a misspelled one.

    Raises:
        LoomUsageError: the first argument found wrong, named.
    """
    check_int("max_retries", max_retries, 0)
    seconds = check_positive_number("timeout", timeout, " of seconds", MAX_TIMEOUT)
    # Arguments of map()/stream() given here are refused before anything else is built.
    refuse_batch_args(llm_kwargs)
    max_retry_wait = check_max_retry_wait(max_retry_wait)
    # Prices change no result: they are not part of the configuration's fingerprint.
    pricer = Pricer(check_prices(prices), model)
    concurrency = concurrency_limit(adaptive)
    prompt = PromptTemplate(prompt_template, name="prompt_template")
    system = (
        PromptTemplate(system_prompt, name="system_prompt") if system_prompt is not None else None
    )
    output = OutputSpec.from_response_model(response_model)
    temperature, max_tokens, params = split_generation_params(llm_kwargs)
    resolved = resolve_backend(
        model,
        client=client,
        backend=backend,
        base_url=base_url,
        api_key=api_key,
        timeout=seconds,
        endpoints=endpoints,
    )
    name = type(resolved.backend).__name__
    known = getattr(resolved.backend, "generation_params", None)
    check_param_names(
        llm_kwargs,
        known if isinstance(known, frozenset | set | tuple | list) else None,
        name,
        loom_args,
    )
    check_param_ranges(
        {**llm_kwargs, "temperature": temperature},
        getattr(resolved.backend, "parameter_ranges", None),
        name,
    )
    fallback_names = check_fallback_models(fallback_models, model)
    chain = fallbacks(
        fallback_names,
        resolved.backend,
        model=model,
        explicit=client is not None or backend is not None,
        base_url=base_url,
        api_key=api_key,
        endpoints=endpoints,
        timeout=seconds,
    )
    if concurrency is not None:
        # Several endpoints learn their limits one by one; the loom's limit is their sum
        # (docs/limits.md "Several endpoints").
        for pooled in (resolved.backend, *(f.backend for f in chain)):
            if isinstance(pooled, EndpointPool):
                adapt_pool(pooled, concurrency.method)
        if isinstance(resolved.backend, EndpointPool):
            concurrency = PoolLimit(concurrency.method, resolved.backend)
    limiter = RateLimiter(rpm=rpm, tpm=tpm)
    config = LoomConfig(
        model=model,
        prompt_template=prompt_template,
        system_prompt=system_prompt,
        output=output.fingerprint_source,
        temperature=temperature,
        max_tokens=max_tokens,
        params=params,
        fallback_models=fallback_names,
    )
    runner = TaskRunner(
        backend=resolved.backend,
        model=resolved.model,
        prompt=prompt,
        system=system,
        output=output,
        temperature=temperature,
        max_tokens=max_tokens,
        params=params,
        auto_repair_json=auto_repair_json,
        max_retries=max_retries,
        limiter=limiter,
        timeout=seconds,
        image_root=os.fspath(image_root) if image_root is not None else None,
        max_retry_wait=max_retry_wait,
        fallbacks=[(f.model, f.backend) for f in chain],
        pricer=pricer,
        concurrency=concurrency,
    )
    return Engine(
        runner=runner,
        config=config,
        output=output,
        backend=resolved.backend,
        owns_backend=client is None and backend is None,
        limiter=limiter,
        pricer=pricer,
        concurrency=concurrency,
        fallback_backends=tuple(f.backend for f in chain if f.own),
    )


def concurrency_limit(adaptive: object) -> ConcurrencyLimit | None:
    """The concurrency limit ``adaptive`` asks for: ``True`` (AIMD), a method's name, or
    ``False`` (none: fixed ``max_workers``, the providers' headers ignored).

    Raises:
        LoomUsageError: ``adaptive`` is none of these.
    """
    if adaptive is False:
        return None
    if adaptive is True:
        return ConcurrencyLimit()
    if isinstance(adaptive, str):
        return ConcurrencyLimit(adaptive)  # an unknown name is refused there
    raise LoomUsageError(
        f"adaptive must be True, False or one of {', '.join(map(repr, METHODS))}; "
        f"got {type(adaptive).__name__} {adaptive!r}"
    )
