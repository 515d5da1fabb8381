"""Reading an answer into the requested value, and asking again when it cannot be used.

An unusable answer (not JSON, the wrong shape, cut off at the token limit) is sent back to the
model with what was wrong with it, up to ``max_retries`` re-asks per task; then the task fails
with the last answer's error.
"""

from __future__ import annotations

import logging
from typing import Any

from loom_protocol import ChatResponse, Error, Message

from ._attempts import Attempts
from ._output import OutputSpec

__all__ = ["AnswerReader"]

_retry_log = logging.getLogger("loom.retry")


class AnswerReader:
    """Parses answers with the loom's output spec and decides the re-asks.

    Args:
        output: The loom's output spec.
        repair: Whether dirty JSON may be repaired.
        max_retries: Re-asks allowed per task.

    Attributes:
        retries: Re-asks made, over the reader's life.
    """

    __slots__ = ("max_retries", "output", "repair", "retries")

    def __init__(self, *, output: OutputSpec, repair: bool, max_retries: int) -> None:
        self.output = output
        self.repair = repair
        self.max_retries = max_retries
        self.retries = 0

    def parse(self, answer: str, finish_reason: str | None) -> Any:
        """The value of ``answer`` (its reasoning already split off).

        Raises:
            OutputError: The answer cannot be used, or was cut off at the token limit.
        """
        if finish_reason == "length":
            raise self.output.cut_off()
        return self.output.parse(answer, repair=self.repair)

    def reask(self, error: Error, attempts: Attempts, task_id: str) -> bool:
        """Whether to ask again after an unusable answer (counted in ``attempts``)."""
        attempts.reasks += 1
        if attempts.reasks > self.max_retries:
            _retry_log.warning(
                "task %s: the answer still fails (%s) after %d re-asks; giving up",
                task_id[:12],
                error.code.value,
                self.max_retries,
            )
            return False
        self.retries += 1
        _retry_log.info(
            "task %s: the answer fails (%s); re-ask %d of %d",
            task_id[:12],
            error.code.value,
            attempts.reasks,
            self.max_retries,
        )
        return True

    def feedback(
        self, messages: list[Message], response: ChatResponse, error: Error
    ) -> list[Message]:
        """The conversation that asks again: the model's own answer, then what was wrong."""
        return [
            *messages,
            Message(role="assistant", content=response.content or ""),
            Message(role="user", content=self.output.feedback_message(error)),
        ]
