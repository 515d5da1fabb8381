"""The loom's configuration, its fingerprint (the cache key's config part) and its checks."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from loom_protocol import (
    LoomUsageError,
    check_int,
    check_number,
    fingerprint,
    redact_value,
)

__all__ = [
    "EXTRA_BODY",
    "LoomConfig",
    "check_param_names",
    "check_param_ranges",
    "refuse_batch_args",
    "split_generation_params",
]

#: Bumped when the way results are produced from a config changes incompatibly.
_CONFIG_VERSION = 1

#: How deep generation parameters (``extra_body`` included) may nest.
MAX_PARAM_DEPTH = 64

#: The keyword that carries provider-specific extras (merged into the request body last).
EXTRA_BODY = "extra_body"

# Arguments of the batch methods that users pass to the constructor by mistake.
_BATCH_ARGS = {
    "max_workers": "map()/amap()/stream()/astream()",
    "task_name": "map()/amap()/stream()/astream()/process()",
    "progress": "map()/amap()",
    "ordered": "stream()/astream()",
    "max_cost": "map()/amap()/stream()/astream()/stream_events()",
    "max_tokens_total": "map()/amap()/stream()/astream()/stream_events()",
}
# Request fields Loom builds or cannot read, whatever the backend.
_RESERVED = {
    "model": "Loom sends the model given as TaskLoom's first argument",
    "messages": "Loom builds the messages from prompt_template and system_prompt",
    "system": "Loom builds the system prompt from system_prompt",
    "stream": "Loom reads each answer whole; streaming responses are not supported",
    "stream_options": "Loom reads each answer whole; streaming responses are not supported",
    "n": "Loom keeps one answer per input (n > 1 pays for answers never read)",
}
# What a backend without a declared set is checked against, for typos only.
_COMMON_PARAMS = frozenset(
    {
        "temperature",
        "max_tokens",
        "max_completion_tokens",
        "top_p",
        "top_k",
        "seed",
        "stop",
        "stop_sequences",
        "frequency_penalty",
        "presence_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "reasoning_effort",
        "response_format",
        "service_tier",
        "metadata",
        "thinking",
        "user",
        EXTRA_BODY,
    }
)
# Value checks of the portable parameters the engine understands itself.
_RANGES = {"top_p": (0.0, 1.0), "frequency_penalty": (-2.0, 2.0), "presence_penalty": (-2.0, 2.0)}


def split_generation_params(
    llm_kwargs: Mapping[str, Any],
) -> tuple[float | None, int | None, dict[str, Any]]:
    """Split ``**llm_kwargs`` into (temperature, max_tokens, the other provider params).

    Values are checked here, once, at construction; names are checked against the backend
    by :func:`check_param_names`.

    Raises:
        LoomUsageError: ``temperature`` not a finite number in [0, 2], ``max_tokens`` (or
            ``max_completion_tokens``, ``seed``) not an int >= 1, ``top_p`` outside [0, 1], an
            ``extra_body`` that is not a JSON object, parameters nested deeper than
            :data:`MAX_PARAM_DEPTH`, or parameters that are not JSON (they go into the
            fingerprint).
    """
    params = dict(llm_kwargs)
    temperature = params.pop("temperature", None)
    max_tokens = params.pop("max_tokens", None)
    if temperature is not None:
        check_number("temperature", temperature, 0.0, 2.0)
    if max_tokens is not None:
        check_int("max_tokens", max_tokens, 1)
    if params.get("max_completion_tokens") is not None:
        check_int("max_completion_tokens", params["max_completion_tokens"], 1)
    if params.get("seed") is not None:
        check_int("seed", params["seed"])
    for name, (low, high) in _RANGES.items():
        if params.get(name) is not None:
            check_number(name, params[name], low, high)
    if EXTRA_BODY in params:
        _check_extra_body(params, llm_kwargs)
    _check_depth(params)
    try:
        fingerprint(params)
    except (TypeError, ValueError, RecursionError) as exc:
        raise LoomUsageError(f"generation parameters must be JSON values: {exc}") from None
    return temperature, max_tokens, params


def _check_depth(params: dict[str, Any]) -> None:
    # Walked without recursion: a hostile nesting (or a cycle) gets this message, not a
    # RecursionError from the fingerprint or the redaction.
    stack: list[tuple[Any, int]] = [(params, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_PARAM_DEPTH:
            raise LoomUsageError(
                f"generation parameters nest deeper than {MAX_PARAM_DEPTH} levels "
                "(or hold a cycle); a request body never needs that"
            )
        if isinstance(value, Mapping):
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list | tuple):
            stack.extend((item, depth + 1) for item in value)


def _check_extra_body(params: dict[str, Any], given: Collection[str]) -> None:
    extra = params[EXTRA_BODY]
    if extra is None:
        del params[EXTRA_BODY]
        return
    if not isinstance(extra, Mapping):
        raise LoomUsageError(
            f"extra_body must be a dict of JSON values (merged into the request body), "
            f"got {type(extra).__name__}"
        )
    bad = [key for key in extra if not isinstance(key, str)]
    if bad:
        raise LoomUsageError(f"extra_body keys must be strings, got {bad[0]!r}")
    for key in sorted(extra):
        if key in ("model", "messages"):
            raise LoomUsageError(f"extra_body may not set {key!r}: {_RESERVED[key]}")
        if key in given:
            raise LoomUsageError(
                f"{key!r} is given both as a keyword argument and in extra_body; give it once"
            )
    params[EXTRA_BODY] = dict(extra)


def _suggest(name: str, names: Iterable[str], cutoff: float) -> str | None:
    close = difflib.get_close_matches(name, sorted(set(names)), n=1, cutoff=cutoff)
    return close[0] if close else None


def refuse_batch_args(names: Iterable[str]) -> None:
    """Refuse an argument of the batch methods given to the constructor.

    Raises:
        LoomUsageError: ``max_workers``, ``task_name``, ``progress`` or ``ordered`` among
            ``names``, saying where it belongs.
    """
    for name in sorted(n for n in names if n in _BATCH_ARGS):
        raise LoomUsageError(
            f"{name} is an argument of {_BATCH_ARGS[name]}, not of TaskLoom(...): "
            f"pass it to the call, e.g. loom.map(inputs, {name}=...)"
        )


def check_param_names(
    names: Iterable[str],
    known: Collection[str] | None,
    backend: str,
    loom_args: Collection[str] = (),
) -> None:
    """Refuse keyword arguments the backend would not understand, before any request.

    Args:
        names: The names of ``**llm_kwargs`` (temperature and max_tokens included).
        known: The backend's declared ``generation_params``; ``None`` when it declares none
            (a function, a third-party backend): then every name passes except the reserved
            ones and close misspellings of a common parameter or a TaskLoom argument.
        backend: The backend's class name, for the message.
        loom_args: TaskLoom's own argument names, for a did-you-mean.

    Raises:
        LoomUsageError: Naming the argument, with a did-you-mean when one is close.
    """
    refuse_batch_args(names)
    for name in sorted(names):
        if known is not None and name in known:
            continue
        if name in _RESERVED:
            raise LoomUsageError(f"TaskLoom cannot take {name}=: {_RESERVED[name]}")
        if known is None and name in _COMMON_PARAMS:
            continue
        vocabulary = known if known is not None else _COMMON_PARAMS
        param = _suggest(name, vocabulary, 0.8 if known is not None else 0.85)
        arg = _suggest(name, loom_args, 0.8)
        if known is None:
            if param is None and arg is None:
                continue  # the default rule: a backend without a declared set gets it as is
            guess = param or arg
            raise LoomUsageError(
                f"TaskLoom got {name}=, which looks like a misspelling of {guess!r}"
                f"{' (a TaskLoom argument)' if guess == arg else ''}; to pass {name!r} to "
                f"{backend} anyway, put it in extra_body={{{name!r}: ...}}"
            )
        if param is not None:
            hint = f" (did you mean {param!r}?)"
        elif arg is not None:
            hint = f" (did you mean {arg!r}, a TaskLoom argument?)"
        else:
            hint = ""
        listed = ", ".join(sorted(n for n in known if n != EXTRA_BODY))
        raise LoomUsageError(
            f"unknown generation parameter {name!r}{hint}. {backend} accepts: {listed}; "
            f"provider-specific parameters go in extra_body={{...}}"
        )


def check_param_ranges(values: Mapping[str, Any], ranges: object, backend: str) -> None:
    """Check values against a backend's narrower ``parameter_ranges`` (name → (low, high)).

    Raises:
        LoomUsageError: ``"{name} must be a finite number in [low, high] for {backend}, …"``.
    """
    if not isinstance(ranges, Mapping):
        return
    for name, bounds in ranges.items():
        value = values.get(name)
        if value is None or not isinstance(bounds, tuple) or len(bounds) != 2:
            continue
        check_number(f"{name} (for {backend})", value, bounds[0], bounds[1])


@dataclass(frozen=True, slots=True, repr=False)
class LoomConfig:
    """Everything that decides what a task's answer is; its fingerprint keys the cache.

    The fingerprint covers the model (and the fallback models, when there are some), both
    templates, the output schema and the generation parameters (``extra_body`` included). It
    leaves out what does not change an answer's meaning: retries, timeouts, rate limits, the
    backend's URL or list of endpoints, and credentials. A credential
    passed as a parameter (a value under ``api_key``, ``subscription_key``, ``token``… at any
    depth) is masked in :meth:`as_dict`, and the fingerprint is computed from that masked
    form: a secret never reaches the store (not even hashed), and rotating a key keeps the cache.
    """

    model: str
    prompt_template: str
    system_prompt: str | None
    output: dict[str, Any]
    temperature: float | None
    max_tokens: int | None
    params: dict[str, Any] = field(default_factory=dict)
    #: The models a task turns to when its model's provider is out, in order.
    fallback_models: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The JSON description stored in the run registry, credentials masked (``***``).

        ``fallback_models`` appear only when there are some: a config without them keeps the
        fingerprint it had before they existed (its stored results stay served).
        """
        described = {
            "version": _CONFIG_VERSION,
            "model": self.model,
            "prompt_template": self.prompt_template,
            "system_prompt": self.system_prompt,
            "output": self.output,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "params": redact_value(self.params) if self.params else {},
        }
        if self.fallback_models:
            described["fallback_models"] = list(self.fallback_models)
        return described

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON of :meth:`as_dict` (credentials masked)."""
        return fingerprint(self.as_dict())

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items() if k != "version")
        return f"LoomConfig({shown})"
