"""The loom's configuration and its fingerprint (the cache key's config part)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from loom_protocol import ChatRequest, LoomUsageError, Message, fingerprint

__all__ = ["LoomConfig", "split_generation_params"]

#: Bumped when the way results are produced from a config changes incompatibly.
_CONFIG_VERSION = 1


def split_generation_params(
    llm_kwargs: dict[str, Any],
) -> tuple[float | None, int | None, dict[str, Any]]:
    """Split ``**llm_kwargs`` into (temperature, max_tokens, the other provider params).

    Raises:
        LoomUsageError: a value the chat contract refuses (temperature outside [0, 2],
            max_tokens <= 0) or parameters that are not JSON (they go into the fingerprint).
    """
    params = dict(llm_kwargs)
    temperature = params.pop("temperature", None)
    max_tokens = params.pop("max_tokens", None)
    try:
        # A probe request validates the values once, at construction, not per task.
        ChatRequest(
            model="probe",
            messages=[Message(role="user", content="probe")],
            temperature=temperature,
            max_tokens=max_tokens,
        )
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise LoomUsageError(f"invalid generation parameter: {problems}") from None
    try:
        fingerprint(params)
    except (TypeError, ValueError) as exc:
        raise LoomUsageError(f"generation parameters must be JSON values: {exc}") from None
    return temperature, max_tokens, params


@dataclass(frozen=True, slots=True)
class LoomConfig:
    """Everything that decides what a task's answer is; its fingerprint keys the cache.

    The fingerprint covers the model, both templates, the output schema and the generation
    parameters. It leaves out what does not change an answer's meaning: retries, timeouts,
    rate limits, the backend's URL and credentials (never part of it, so never stored).
    """

    model: str
    prompt_template: str
    system_prompt: str | None
    output: dict[str, Any]
    temperature: float | None
    max_tokens: int | None
    params: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The JSON description stored in the run registry."""
        return {
            "version": _CONFIG_VERSION,
            "model": self.model,
            "prompt_template": self.prompt_template,
            "system_prompt": self.system_prompt,
            "output": self.output,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "params": self.params,
        }

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON of :meth:`as_dict`."""
        return fingerprint(self.as_dict())
