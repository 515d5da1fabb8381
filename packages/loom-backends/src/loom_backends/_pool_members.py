"""An :class:`~._pool.EndpointPool`'s endpoints: their bookkeeping and what is shown of them."""

from __future__ import annotations

import math
from dataclasses import dataclass

from loom_protocol import Backend

from ._admission import EndpointLimit, EndpointPacer
from ._breaker import BreakerState, CircuitBreaker

__all__ = ["EndpointStatus", "Member", "Slot", "limit_of", "pick", "status_of"]


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    """One endpoint as the pool sees it (a snapshot; see :meth:`EndpointPool.status`).

    Attributes:
        name: The URL, secrets masked.
        weight: Its weight.
        state: ``"closed"`` (taking traffic), ``"open"`` (out) or ``"half_open"`` (probing).
        in_flight: Requests being answered there now.
        limit: Its concurrency limit (the lower of :meth:`EndpointPool.set_limit`'s and the
            learned one), or ``None`` for none.
        sent: Requests sent there.
        failed: Of those, failures of the endpoint (refused, 5xx, timeout...).
        rate_limited: Of those, 429 answers.
        opened: How many times its breaker opened.
        limits: The rate limits its server reported and it is paced to
            (``"600 requests/min, 150000 tokens/min"``), or ``""``.
    """

    name: str
    weight: float
    state: str
    in_flight: int
    limit: int | None
    sent: int
    failed: int
    rate_limited: int
    opened: int
    limits: str = ""


class Member:
    """One endpoint's backend and bookkeeping (guarded by the pool's lock)."""

    __slots__ = (
        "backend",
        "breaker",
        "control",
        "failed",
        "in_flight",
        "index",
        "last_error",
        "limit",
        "limited_until",
        "name",
        "pacer",
        "rate_limited",
        "sent",
        "weight",
    )

    def __init__(
        self, index: int, backend: Backend, name: str, weight: float, breaker: CircuitBreaker
    ) -> None:
        self.index = index
        self.backend = backend
        self.name = name
        self.weight = weight
        self.breaker = breaker
        self.in_flight = 0
        self.sent = 0
        self.failed = 0
        self.rate_limited = 0
        self.limit: int | None = None
        self.control: EndpointLimit | None = None  # its learned concurrency (adaptive looms)
        self.pacer: EndpointPacer | None = None  # its learned rate limits (adaptive looms)
        self.limited_until = 0.0
        self.last_error: str | None = None


class Slot:
    """One attempt's place at an endpoint: what its release and its learning need."""

    __slots__ = ("epoch", "learning", "member", "probe", "serial", "tokens")

    def __init__(
        self,
        member: Member,
        probe: bool,
        epoch: int,
        learning: int | None,
        serial: int,
        tokens: int,
    ) -> None:
        self.member = member
        #: Whether it is its breaker's probe.
        self.probe = probe
        #: Its breaker's epoch when it was sent.
        self.epoch = epoch
        #: The epoch of its learned limit's slot; ``None`` when it holds none (no learned
        #: limit, or a probe sent past it).
        self.learning = learning
        #: Its number among the endpoint's requests (``sent`` when it was sent).
        self.serial = serial
        #: The tokens its paced budget was debited (0: none).
        self.tokens = tokens


def limit_of(m: Member) -> int | None:
    """``m``'s concurrency limit: the lower of its set one and its learned one."""
    if m.control is None:
        return m.limit
    learned = m.control.limit
    return learned if m.limit is None else min(m.limit, learned)


def status_of(m: Member) -> EndpointStatus:
    """``m`` as shown (called under the pool's lock)."""
    return EndpointStatus(
        name=m.name,
        weight=m.weight,
        state=m.breaker.state.value,
        in_flight=m.in_flight,
        limit=limit_of(m),
        sent=m.sent,
        failed=m.failed,
        rate_limited=m.rate_limited,
        opened=m.breaker.opened,
        limits="" if m.pacer is None else m.pacer.learned(),
    )


def pick(members: list[Member], tried: set[int], now: float, tokens: int) -> Member | float | None:
    """The endpoint for the next attempt (its paced budget taken); else the seconds to
    wait before picking again (``math.inf``: until a slot frees); ``None`` when none is left.

    See the pool's module docstring for the order (called under the pool's lock).
    """
    wait: float | None = None
    ranked: list[tuple[tuple[bool, float, float, int], Member]] = []
    for m in members:
        if m.index in tried:
            continue
        admitted = m.breaker.admits(now)
        if admitted is None:
            continue
        if admitted is BreakerState.HALF_OPEN:
            # The probe goes first: the sooner it answers, the sooner it is back.
            paced = _paced(m, tokens)
            if paced <= 0.0:
                return m
            wait = paced if wait is None else min(wait, paced)
            continue
        limit = limit_of(m)
        if limit is not None and m.in_flight >= limit:
            wait = math.inf if wait is None else wait
            continue
        key = (m.limited_until > now, m.in_flight / m.weight, m.sent / m.weight, m.index)
        ranked.append((key, m))
    ranked.sort(key=_rank)
    for _, m in ranked:
        paced = _paced(m, tokens)
        if paced <= 0.0:
            return m
        # Its budget is spent until then: the next one by rank, if its own holds.
        wait = paced if wait is None else min(wait, paced)
    return wait


def _rank(item: tuple[tuple[bool, float, float, int], Member]) -> tuple[bool, float, float, int]:
    return item[0]


def _paced(m: Member, tokens: int) -> float:
    """0.0 when ``m``'s paced budget held one request and ``tokens`` (now taken); else the
    seconds until it will."""
    return 0.0 if m.pacer is None else m.pacer.try_acquire(tokens)
