"""``EndpointPool``: one Backend over several servers of the same model.

Each request goes to one endpoint, chosen among those that take traffic (breaker closed, below
their concurrency limit) by the lowest ``in flight / weight``, ties to the lowest
``sent / weight``: under load the requests in flight split by weight and a faster endpoint,
freed sooner, gets more; one at a time it is a weighted round robin. An endpoint whose breaker
lets a probe through (see ``_breaker``) gets that probe before anyone else.

A call that fails *because of the endpoint* (refused, reset, 5xx, a garbled body) is sent at
once to another endpoint that was not tried for it: this is routing, not a retry (the engine
owns retries and their budget), so a dead server costs its in-flight requests a failover,
not a backoff nor one of ``max_retries``. A 429 does the same when another endpoint is not
rate limited itself (the one that said 429 is passed over for its ``Retry-After``). A timeout
is not failed over (it used the call's time; the engine retries it), and neither is a 4xx (any
endpoint would answer the same). When no endpoint is left, the last failure, or a
``provider_unavailable`` naming each endpoint when every breaker is open, goes to the engine,
which retries (logged by ``loom.retry``) or fails the task: never a hang.

An adaptive loom gives the pool one learned limit per endpoint (:meth:`EndpointPool.adapt`,
an :class:`~._admission.EndpointLimit` each): every call tells its endpoint's limit how it
went (latency, or a 429/503/529/timeout), so a slow or overloaded server gets fewer
requests and a 429-ing endpoint backs off alone while the others keep their pace.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from loom_protocol import (
    Backend,
    BackendError,
    ChatRequest,
    ChatResponse,
    ErrorCode,
    LoomUsageError,
    RateLimitInfo,
    check_int,
)

from ._admission import EndpointLimit, EndpointPacer, is_overload
from ._breaker import (
    DEFAULT_COOLDOWN,
    DEFAULT_FAILURE_THRESHOLD,
    DEFAULT_MAX_COOLDOWN,
    BreakerState,
    CircuitBreaker,
    Outcome,
    outcome_of,
)
from ._defaults import DEFAULT_MAX_CONNECTIONS, DEFAULT_TIMEOUT
from ._endpoints import Endpoint, check_endpoints
from ._openai import OpenAIChatBackend
from ._pool_errors import named, none_left, said
from ._pool_members import EndpointStatus, Member, Slot, pick, status_of

__all__ = ["EndpointPool", "EndpointStatus"]

_log = logging.getLogger("loom.endpoints")
_rate_log = logging.getLogger("loom.ratelimit")

#: How long a 429 without Retry-After passes its endpoint over, in seconds.
_RATE_LIMIT_PASS = 1.0

#: Builds one endpoint's backend: ``factory(base_url=..., api_key=..., timeout=...,
#: max_connections=...)`` (the signature of the built-in backends and of entry points).
BackendFactory = Callable[..., Backend]


class EndpointPool:
    """A :class:`~loom_protocol.Backend` that spreads requests over several endpoints.

    Each endpoint gets its own backend (its own connection pool per event loop), built by
    ``factory``; the pool chooses, fails over and keeps a circuit breaker per endpoint (see
    the module docstring). Safe to use from several event loops and threads at once.

    Example::

        pool = EndpointPool(["http://gpu-1:8000/v1", {"url": "http://gpu-2:8000/v1", "weight": 2}])
        loom = TaskLoom("Qwen/Qwen2.5-7B-Instruct", "...", backend=pool)

    Args:
        endpoints: :class:`Endpoint` objects, URL strings or dicts of Endpoint's fields.
        api_key: The key of every endpoint that has none of its own (``None``: the factory's
            default, e.g. ``OPENAI_API_KEY``).
        factory: Builds each endpoint's backend; :class:`OpenAIChatBackend` by default.
        timeout: Seconds per network phase of each call (given to the factory).
        max_connections: Each endpoint's connection pool size (given to the factory).
        failure_threshold: Failures in a row that take an endpoint out.
        cooldown: Seconds an endpoint stays out before its first probe.
        max_cooldown: The cool-down's ceiling (it doubles at every failed probe).

    Raises:
        LoomUsageError: A bad endpoint list (see :func:`check_endpoints`), a key variable that
            is not set, a bad breaker setting, or what the factory refuses.
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint | str | dict[str, Any]],
        *,
        api_key: str | None = None,
        factory: BackendFactory | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        cooldown: float = DEFAULT_COOLDOWN,
        max_cooldown: float = DEFAULT_MAX_COOLDOWN,
    ) -> None:
        specs = check_endpoints(endpoints)
        CircuitBreaker(failure_threshold, cooldown, max_cooldown)  # checks the settings once
        make = factory or OpenAIChatBackend
        self._members: list[Member] = []
        secrets: list[str] = [api_key] if api_key else []
        for i, spec in enumerate(specs):
            key = spec.key(f"endpoints[{i}]") or api_key
            if key:
                secrets.append(key)
            try:
                backend = make(
                    base_url=spec.url, api_key=key, timeout=timeout, max_connections=max_connections
                )
            except LoomUsageError as exc:
                raise LoomUsageError(f"endpoints[{i}] ({spec.name}): {exc}") from None
            if isinstance(backend, type) or not isinstance(backend, Backend):
                raise LoomUsageError(
                    f"endpoints[{i}] ({spec.name}): the factory returned "
                    f"{type(backend).__name__}, which is not a Backend (acomplete, aclose)"
                )
            breaker = CircuitBreaker(failure_threshold, cooldown, max_cooldown)
            self._members.append(Member(i, backend, spec.name, float(spec.weight), breaker))
        self._secrets = tuple(secrets)
        # What the engine checks generation parameters against: the members' (one factory).
        first = self._members[0].backend
        for attr in ("generation_params", "parameter_ranges"):
            if hasattr(first, attr):
                setattr(self, attr, getattr(first, attr))
        self._lock = threading.Lock()
        # Requests waiting for a slot while every usable endpoint is at its limit, with the
        # loop each waits on (the pool serves several loops).
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        #: Requests sent again to another endpoint after their endpoint failed them.
        self.failovers = 0

    # -- what the engine's adaptation reads and sets --------------------------------------------

    def status(self) -> tuple[EndpointStatus, ...]:
        """A snapshot of every endpoint, in the order given."""
        now = time.monotonic()
        with self._lock:
            for m in self._members:
                m.breaker.admits(now)  # an open breaker whose cool-down is over: half-open
            return tuple(status_of(m) for m in self._members)

    def set_limit(self, index: int, limit: int | None) -> None:
        """Cap the requests in flight at endpoint ``index`` (``None``: no cap of its own).

        The seam of adaptive concurrency: whatever learns an endpoint's capacity (429s,
        latency, rate-limit headers) sets it here; requests beyond every usable endpoint's
        limit wait for a slot. A lower limit takes effect for new requests only.

        Raises:
            LoomUsageError: No such endpoint, or a limit that is not an int >= 1.
        """
        check_int("index", index, 0)
        if index >= len(self._members):
            raise LoomUsageError(f"index {index} is past the pool's {len(self._members)} endpoints")
        if limit is not None:
            check_int("limit", limit, 1)
        with self._lock:
            self._members[index].limit = limit
            self._wake(all_waiters=True)

    @property
    def adaptive(self) -> bool:
        """Whether each endpoint has a learned limit (see :meth:`adapt`)."""
        return self._members[0].control is not None

    @property
    def paced(self) -> bool:
        """Whether each endpoint is paced to its own reported rate limits (see :meth:`adapt`)."""
        return self._members[0].pacer is not None

    def adapt(
        self,
        make: Callable[[str], EndpointLimit],
        pace: Callable[[str], EndpointPacer] | None = None,
    ) -> bool:
        """Give each endpoint a learned concurrency limit, ``make(endpoint_name)``, and a
        pacing to the rate limits its server reports, ``pace(endpoint_name)``.

        With ``pace``, every answer's rate-limit headers are learned by the endpoint that sent
        them, and a request goes only to an endpoint whose learned budget holds it (waiting
        for the first one that will): endpoints with keys of their own are paced each to its
        own limits. Whoever adapts the pool no longer learns those headers itself.

        The first call wins: a pool shared by several looms learns each server's capacity
        once, for all of them (the capacity is the server's, not a loom's); later calls
        change nothing and return ``False``.

        Raises:
            LoomUsageError: ``make`` returned something that is not an EndpointLimit, or
                ``pace`` something that is not an EndpointPacer.
        """
        with self._lock:
            if self._members[0].control is not None:
                return False
            made: list[tuple[EndpointLimit, EndpointPacer | None]] = []
            for m in self._members:
                control = make(m.name)
                if not isinstance(control, EndpointLimit):
                    raise LoomUsageError(
                        f"adapt(): the factory returned {type(control).__name__}, which is not "
                        "an EndpointLimit (limit, epoch, try_enter, leave)"
                    )
                pacer = None if pace is None else pace(m.name)
                if pacer is not None and not isinstance(pacer, EndpointPacer):
                    raise LoomUsageError(
                        f"adapt(): pace returned {type(pacer).__name__}, which is not an "
                        "EndpointPacer (tokens_for, delay, try_acquire, learn, record_usage, "
                        "learned)"
                    )
                made.append((control, pacer))
            for m, (control, pacer) in zip(self._members, made, strict=True):
                m.control, m.pacer = control, pacer
            return True

    async def ready(self, request: ChatRequest) -> None:
        """Wait until some endpoint's pacing would let ``request`` go (at once if unpaced).

        The engine awaits this before a call's timeout starts, so that waiting for a
        provider's budget to refill is not counted as the call's time. Nothing is taken:
        :meth:`acomplete` takes the budget of the endpoint it picks (and may wait a little
        more, when another request took it first).
        """
        if not self.paced:
            return
        tokens = self._tokens_for(request)
        while True:
            now = time.monotonic()
            with self._lock:
                waits = [
                    m.pacer.delay(tokens)
                    for m in self._members
                    if m.pacer is not None and m.breaker.admits(now) is not None
                ]
            # Every endpoint out: the call is told so at once, not held here.
            wait = min(waits, default=0.0)
            if wait <= 0.0:
                return
            await asyncio.sleep(wait)

    def _tokens_for(self, request: ChatRequest) -> int:
        """The token estimate of ``request`` (0 unless an endpoint learned a token budget)."""
        for m in self._members:
            if m.pacer is not None:
                tokens = m.pacer.tokens_for(request)
                if tokens:
                    return tokens  # the same estimate for every endpoint
        return 0

    # -- the Backend protocol ------------------------------------------------------------------

    async def acomplete(self, request: ChatRequest) -> ChatResponse:
        """Send ``request`` to one endpoint, failing over as the module docstring says.

        Raises:
            BackendError: The answer's error (naming the endpoint), or provider_unavailable
                when every endpoint is out or failed this request.
        """
        tried: set[int] = set()
        failures: list[tuple[Member, BackendError]] = []
        tokens = self._tokens_for(request)
        while True:
            slot = await self._acquire(tried, failures, tokens)
            member = slot.member
            if failures:
                with self._lock:
                    self.failovers += 1
            started = time.perf_counter()
            try:
                response = await member.backend.acomplete(request)
            except BaseException as exc:
                outcome = outcome_of(exc)
                if isinstance(exc, BackendError):
                    # Learned before the slot is freed: a request it wakes is paced by it.
                    self._learn(slot, exc.rate_limit, started)
                self._release(slot, outcome, exc, None)
                if not isinstance(exc, BackendError):
                    raise
                failed = named(member, exc, self._secrets)
                if not self._fails_over(member, outcome, exc, tried):
                    raise failed from None
                tried.add(member.index)
                failures.append((member, failed))
                _log.info(
                    "endpoint %s: %s%s; trying another endpoint for the request",
                    member.name,
                    exc.code.value,
                    f" (HTTP {exc.status})" if exc.status else "",
                )
                continue
            latency = time.perf_counter() - started
            self._learn(slot, response.rate_limit, started)
            self._release(slot, Outcome.ALIVE, None, latency)
            if slot.tokens and response.usage is not None and member.pacer is not None:
                member.pacer.record_usage(slot.tokens, response.usage.total_tokens)
            return response

    async def aclose(self) -> None:
        """Close every endpoint's connections held by the running loop."""
        errors: list[BaseException] = []
        for member in self._members:
            try:
                await member.backend.aclose()
            except Exception as exc:  # close the others anyway
                errors.append(exc)
        if errors:
            raise errors[0]

    # -- choosing ------------------------------------------------------------------------------

    async def _acquire(
        self, tried: set[int], failures: list[tuple[Member, BackendError]], tokens: int
    ) -> Slot:
        """An endpoint for the next attempt (its in-flight slot and its paced budget taken),
        waiting for a slot, or for a budget to refill, when no usable endpoint has one now;
        raises when none is left."""
        while True:
            with self._lock:
                picked = pick(self._members, tried, time.monotonic(), tokens)
                if picked is None:
                    raise none_left(self._members, failures, self._secrets)
                if isinstance(picked, Member):
                    return self._take(picked, tokens)
                loop = asyncio.get_running_loop()
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, waiter))
            # A budget refills in time (no call's end announces it): a timer wakes this one.
            timer = None if picked == math.inf else loop.call_later(picked, _settle, waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                with self._lock:
                    if (loop, waiter) in self._waiters:
                        self._waiters.remove((loop, waiter))
                    else:  # it was woken for a free slot: pass the slot on
                        self._wake(all_waiters=False)
                raise
            finally:
                if timer is not None:
                    timer.cancel()
                    with self._lock:  # woken by its timer: still listed
                        if (loop, waiter) in self._waiters:
                            self._waiters.remove((loop, waiter))

    def _take(self, picked: Member, tokens: int) -> Slot:
        """Send the next attempt to ``picked`` (called with the lock held)."""
        probe = picked.breaker.state is BreakerState.HALF_OPEN
        if probe:
            picked.breaker.start_probe()
            _log.info("endpoint %s: sending a probe", picked.name)
        picked.in_flight += 1
        picked.sent += 1
        control = picked.control
        learning = control.epoch if control is not None and control.try_enter() else None
        taken = tokens if picked.pacer is not None else 0
        return Slot(picked, probe, picked.breaker.epoch, learning, picked.sent, taken)

    def _fails_over(
        self, member: Member, outcome: Outcome, exc: BackendError, tried: set[int]
    ) -> bool:
        """Whether the request goes to another endpoint after ``exc`` from ``member``."""
        if outcome is Outcome.FAILED:
            return exc.code is not ErrorCode.PROVIDER_TIMEOUT
        if outcome is Outcome.RATE_LIMITED:
            # Only to an endpoint that is not rate limited itself; else the engine's handling
            # of a 429 (its retry, its pause) is the right one.
            now = time.monotonic()
            with self._lock:
                return any(
                    m is not member
                    and m.index not in tried
                    and m.limited_until <= now
                    and m.breaker.state is BreakerState.CLOSED
                    for m in self._members
                )
        return False

    def _release(
        self, slot: Slot, outcome: Outcome, exc: BaseException | None, latency: float | None
    ) -> None:
        member, probe, epoch, learning = slot.member, slot.probe, slot.epoch, slot.learning
        now = time.monotonic()
        grew = False
        with self._lock:
            member.in_flight -= 1
            control = member.control
            if control is not None and learning is not None:
                before = control.limit
                control.leave(learning, latency, is_overload(exc) if exc is not None else False)
                grew = control.limit > before
            if outcome is Outcome.FAILED:
                member.failed += 1
                member.last_error = said(exc, self._secrets)
            elif outcome is Outcome.RATE_LIMITED and isinstance(exc, BackendError):
                member.rate_limited += 1
                wait = exc.retry_after if exc.retry_after is not None else _RATE_LIMIT_PASS
                member.limited_until = max(member.limited_until, now + min(wait, 3600.0))
            changed = member.breaker.record(outcome, epoch, probe, now)
            self._wake(all_waiters=changed is not None or grew)
        if changed is BreakerState.OPEN:
            _log.warning(
                "endpoint %s is out (%s); no traffic until a probe in %.1f s",
                member.name,
                member.last_error or "failing",
                member.breaker.retry_in(now),
            )
        elif changed is BreakerState.CLOSED:
            _log.warning("endpoint %s is back: its probe was answered", member.name)

    def _learn(self, slot: Slot, info: RateLimitInfo | None, started: float) -> None:
        """Have ``slot``'s endpoint learn what its answer's headers said of its limits."""
        pacer = slot.member.pacer
        if info is None or pacer is None:
            return
        later = slot.member.sent - slot.serial  # sent there since: the report predates them
        said = pacer.learn(info, time.perf_counter() - started, later)
        if said is not None:
            _rate_log.info(
                "endpoint %s reports its limits: %s; pacing to them", slot.member.name, said
            )

    def _wake(self, *, all_waiters: bool) -> None:
        """Let one waiting request (or all) pick again; called with the lock held."""
        while self._waiters:
            loop, waiter = self._waiters.pop(0)
            if waiter.done() or loop.is_closed():
                continue
            loop.call_soon_threadsafe(_settle, waiter)
            if not all_waiters:
                return

    def __repr__(self) -> str:
        # The members' reprs never show a key.
        shown = ", ".join(f"{m.backend!r} (weight {m.weight:g})" for m in self._members)
        return f"EndpointPool([{shown}])"


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
