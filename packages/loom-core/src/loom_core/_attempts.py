"""One task's record of its calls, shared by the parts that make and judge them."""

from __future__ import annotations

from loom_protocol import Usage

__all__ = ["Attempts"]


class Attempts:
    """One task's record of its calls: their count and usage, its failures and re-asks.

    Attributes:
        calls: Calls made, whatever their outcome.
        usage: The usage of every answered call, summed; ``None`` before the first.
        transport_failures: Calls that failed (up to ``max_retries`` are made again).
        reasks: Answers that could not be used (up to ``max_retries`` are asked again, a
            budget apart from the transport failures').
    """

    __slots__ = ("calls", "reasks", "transport_failures", "usage")

    def __init__(self) -> None:
        self.calls = 0
        self.usage: Usage | None = None
        self.transport_failures = 0
        self.reasks = 0

    def add(self, usage: Usage | None) -> None:
        """Count one call and its usage (``None``: the call failed or the backend did not say)."""
        self.calls += 1
        if usage is not None:
            self.usage = usage if self.usage is None else self.usage + usage
