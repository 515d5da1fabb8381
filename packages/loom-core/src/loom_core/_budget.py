"""A batch's spending caps: ``max_cost`` (dollars) and ``max_tokens_total`` (tokens).

Before each call (a task's first, and each re-ask) the worker asks the batch's :class:`Budget`
for a :class:`Reservation`: the call's estimated tokens and cost. The call starts only if what
this batch has spent, plus what is in flight, plus this call's estimate stays within every
cap. If it would not, the worker waits for calls in flight to answer (their estimates are then
replaced by what they really cost, usually less) and asks again; when nothing is in flight and
the call still does not fit, the budget is exhausted for good: no later call of the batch
starts, and every task left ends ``budget_exceeded`` (never stored, so a run with a higher
cap calls it). Waiting rather than refusing at once matters when the estimate is cautious
(no ``max_tokens``): refusing would stop the batch a whole in-flight window short of the cap.

The estimate of a call: its prompt by :func:`~._pricing.prompt_tokens`; its answer by
``max_tokens`` when the request sets it, else the mean answer of this batch's calls so far,
else :data:`~._pricing.DEFAULT_OUTPUT_TOKENS`. A transport retry of a call keeps that call's
reservation. A call that fails costs nothing (providers do not bill refused calls); an answer
without usage counts its estimate as spent.

Everything runs on the batch's one event loop: no lock is needed.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from loom_protocol import (
    ChatRequest,
    Error,
    ErrorCode,
    LoomUsageError,
    ModelPrice,
    Usage,
    check_int,
    check_positive_number,
    usage_cost,
)

from ._pricing import DEFAULT_OUTPUT_TOKENS, Pricer, output_tokens, prompt_tokens

__all__ = ["Budget", "BudgetLimits", "Reservation", "budget_limits"]


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    """A batch call's caps, checked at the call.

    Attributes:
        max_cost: Dollars this batch may spend on new calls, or ``None``.
        max_tokens_total: Tokens (prompt + completion) it may spend, or ``None``.
        price: The price of the loom's model (required by ``max_cost``).
    """

    max_cost: float | None
    max_tokens_total: int | None
    price: ModelPrice | None


def budget_limits(
    max_cost: object, max_tokens_total: object, pricer: Pricer
) -> BudgetLimits | None:
    """The checked caps of a batch call (``None`` when it sets none).

    Raises:
        LoomUsageError: ``max_cost`` not a finite number > 0 (or a bool),
            ``max_tokens_total`` not an int >= 1, or ``max_cost`` for a model without a
            known price (give one with ``TaskLoom(prices=...)``).
    """
    if max_cost is None and max_tokens_total is None:
        return None
    cost = None if max_cost is None else check_positive_number("max_cost", max_cost, " of dollars")
    tokens = (
        None if max_tokens_total is None else check_int("max_tokens_total", max_tokens_total, 1)
    )
    found = pricer.find(pricer.model)
    if cost is not None and found is None:
        raise LoomUsageError(
            f"max_cost needs the price of model {pricer.model!r}, which Loom does not know: "
            f"give it with TaskLoom(..., prices={{{pricer.model!r}: {{'input': ..., "
            "'output': ...}}}) (dollars per million tokens), or cap tokens with "
            "max_tokens_total instead"
        )
    return BudgetLimits(cost, tokens, None if found is None else found[0])


@dataclass(frozen=True, slots=True)
class Reservation:
    """One call's estimate, held while the call is in flight."""

    tokens: int
    cost: float


class Budget:
    """What one batch has spent and has in flight, against its :class:`BudgetLimits`."""

    __slots__ = (
        "_answered_tokens",
        "_answers",
        "_calls",
        "_waiters",
        "exhausted",
        "inflight_cost",
        "inflight_tokens",
        "limits",
        "refusal",
        "spent_cost",
        "spent_tokens",
    )

    def __init__(self, limits: BudgetLimits) -> None:
        self.limits = limits
        self.spent_cost = 0.0
        self.spent_tokens = 0
        self.inflight_cost = 0.0
        self.inflight_tokens = 0
        self.exhausted = False
        #: Why the first call was refused (every later refusal says the same).
        self.refusal: Error | None = None
        self._answers = 0
        self._answered_tokens = 0
        self._calls = 0  # calls in flight
        self._waiters: list[asyncio.Future[None]] = []

    def estimate(self, request: ChatRequest) -> Reservation:
        """The estimated tokens and cost of sending ``request`` (see the module docstring)."""
        prompt = prompt_tokens(request.messages, request.response_format)
        answer = output_tokens(request)
        if answer is None:
            answer = (
                math.ceil(self._answered_tokens / self._answers)
                if self._answers
                else DEFAULT_OUTPUT_TOKENS
            )
        price = self.limits.price
        cost = 0.0
        if price is not None:
            cost = usage_cost(Usage(prompt_tokens=prompt, completion_tokens=answer), price)
        return Reservation(prompt + answer, cost)

    async def reserve(self, request: ChatRequest) -> Reservation | Error:
        """Hold ``request``'s estimate, waiting for calls in flight while it does not fit;
        the ``budget_exceeded`` error once it cannot fit (see the module docstring)."""
        while self.refusal is None:
            held = self.estimate(request)
            problem = self._problem(held)
            if problem is None:
                self.inflight_tokens += held.tokens
                self.inflight_cost += held.cost
                self._calls += 1
                return held
            if self._calls == 0:
                self._refuse(problem)
                break
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        assert self.refusal is not None
        return self.refusal

    def _problem(self, held: Reservation) -> str | None:
        """Why ``held`` does not fit (``None``: it does)."""
        limits = self.limits
        if limits.max_cost is not None:
            total = self.spent_cost + self.inflight_cost + held.cost
            if total > limits.max_cost:
                return (
                    f"max_cost=${limits.max_cost:g} reached: spent ${self.spent_cost:.6g}, "
                    f"the next call ~${held.cost:.6g}"
                )
        if limits.max_tokens_total is not None:
            total_tokens = self.spent_tokens + self.inflight_tokens + held.tokens
            if total_tokens > limits.max_tokens_total:
                return (
                    f"max_tokens_total={limits.max_tokens_total} reached: spent "
                    f"{self.spent_tokens}, the next call ~{held.tokens} tokens"
                )
        return None

    def _refuse(self, problem: str) -> None:
        self.exhausted = True
        self.refusal = Error(
            code=ErrorCode.BUDGET_EXCEEDED,
            message=f"not called: {problem}; results so far are kept, and a run with a "
            "higher cap calls the rest",
            retryable=True,
        )
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def settle(self, held: Reservation, usage: Usage | None, *, answered: bool) -> None:
        """Replace ``held`` by what the call really spent.

        Args:
            held: The call's reservation.
            usage: The answer's usage (``None``: none reported, or the call failed).
            answered: Whether the provider answered (a failed call costs nothing).
        """
        self.inflight_tokens -= held.tokens
        self.inflight_cost -= held.cost
        self._calls -= 1
        if answered and usage is None:
            # No usage reported: what we cannot see is counted at its estimate.
            self.spent_tokens += held.tokens
            self.spent_cost += held.cost
        elif answered and usage is not None:
            self.spent_tokens += usage.total_tokens
            self._answers += 1
            self._answered_tokens += usage.completion_tokens
            if self.limits.price is not None:
                self.spent_cost += usage_cost(usage, self.limits.price)
        # Calls waiting for room look again (or learn that the budget is exhausted).
        self._wake()
