"""The timing of a provider batch job: how often to poll, how long a submit may take.

Providers finish a batch within 24 hours, usually much sooner; polling every few seconds for
hours would only spend requests. The interval therefore starts short (a small batch is often
done within a minute) and grows by ``poll_factor`` while nothing changes, up to
``poll_max``; it starts short again after something finished or was submitted.
"""

from __future__ import annotations

from dataclasses import dataclass

from loom_protocol import LoomUsageError, check_non_negative_number, check_positive_number

__all__ = ["DEFAULT_POLL_MAX", "BatchPolicy", "PollBackoff"]

#: The longest wait between two polls by default, seconds.
DEFAULT_POLL_MAX = 300.0


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """How a loom waits on a provider's Batch API (``TaskLoom(..., batch_policy=...)``).

    Attributes:
        poll_interval: Seconds before the first poll of a job, and after any progress.
        poll_max: The longest wait between two polls, seconds.
        poll_factor: How much the wait grows after a poll that found nothing new.
        submit_timeout: The longest a submit call (upload and create) may take, seconds. A
            submit whose outcome is unknown (the process died, the call timed out) is
            resubmitted only when no batch of it can be found once this much time (plus
            ``clock_skew``) has passed since the call started.
        clock_skew: How far this machine's clock and the provider's may disagree, seconds:
            the window in which a lost submission is looked for.
    """

    poll_interval: float = 5.0
    poll_max: float = DEFAULT_POLL_MAX
    poll_factor: float = 1.5
    submit_timeout: float = 600.0
    clock_skew: float = 300.0

    def __post_init__(self) -> None:
        check_positive_number("poll_interval", self.poll_interval, " of seconds")
        check_positive_number("poll_max", self.poll_max, " of seconds")
        check_positive_number("submit_timeout", self.submit_timeout, " of seconds")
        check_non_negative_number("clock_skew", self.clock_skew, " of seconds")
        check_positive_number("poll_factor", self.poll_factor)
        if self.poll_factor < 1:
            raise LoomUsageError(f"poll_factor must be at least 1, got {self.poll_factor!r}")
        if self.poll_max < self.poll_interval:
            raise LoomUsageError(
                f"poll_max ({self.poll_max!r}) must not be below poll_interval "
                f"({self.poll_interval!r})"
            )


class PollBackoff:
    """The wait before the next poll: grows while nothing happens, resets on progress."""

    __slots__ = ("_policy", "delay")

    def __init__(self, policy: BatchPolicy) -> None:
        self._policy = policy
        self.delay = policy.poll_interval

    def next(self, progressed: bool) -> float:
        """The wait before the next poll, after a poll that ``progressed`` or not."""
        policy = self._policy
        if progressed:
            self.delay = policy.poll_interval
        else:
            self.delay = min(policy.poll_max, self.delay * policy.poll_factor)
        return self.delay
