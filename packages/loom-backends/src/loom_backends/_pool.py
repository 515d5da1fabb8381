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
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from loom_protocol import (
    Backend,
    BackendError,
    ChatRequest,
    ChatResponse,
    Error,
    ErrorCode,
    LoomUsageError,
    check_int,
    redact_text,
)

from ._admission import EndpointLimit, is_overload
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
from ._errors import one_line
from ._openai import OpenAIChatBackend

__all__ = ["EndpointPool", "EndpointStatus"]

_log = logging.getLogger("loom.endpoints")

#: How long a 429 without Retry-After passes its endpoint over, in seconds.
_RATE_LIMIT_PASS = 1.0

#: Builds one endpoint's backend: ``factory(base_url=..., api_key=..., timeout=...,
#: max_connections=...)`` (the signature of the built-in backends and of entry points).
BackendFactory = Callable[..., Backend]


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


class _Member:
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
        self.control: EndpointLimit | None = None  # its learned limit (adaptive looms)
        self.limited_until = 0.0
        self.last_error: str | None = None


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
        self._members: list[_Member] = []
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
            self._members.append(_Member(i, backend, spec.name, float(spec.weight), breaker))
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
            return tuple(
                EndpointStatus(
                    name=m.name,
                    weight=m.weight,
                    state=m.breaker.state.value,
                    in_flight=m.in_flight,
                    limit=_limit_of(m),
                    sent=m.sent,
                    failed=m.failed,
                    rate_limited=m.rate_limited,
                    opened=m.breaker.opened,
                )
                for m in self._members
            )

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

    def adapt(self, make: Callable[[str], EndpointLimit]) -> bool:
        """Give each endpoint a learned concurrency limit, ``make(endpoint_name)``.

        The first call wins: a pool shared by several looms learns each server's capacity
        once, for all of them (the capacity is the server's, not a loom's); later calls
        change nothing and return ``False``.

        Raises:
            LoomUsageError: ``make`` returned something that is not an EndpointLimit.
        """
        with self._lock:
            if self._members[0].control is not None:
                return False
            controls = []
            for m in self._members:
                control = make(m.name)
                if not isinstance(control, EndpointLimit):
                    raise LoomUsageError(
                        f"adapt(): the factory returned {type(control).__name__}, which is not "
                        "an EndpointLimit (limit, epoch, try_enter, leave)"
                    )
                controls.append(control)
            for m, control in zip(self._members, controls, strict=True):
                m.control = control
            return True

    # -- the Backend protocol ------------------------------------------------------------------

    async def acomplete(self, request: ChatRequest) -> ChatResponse:
        """Send ``request`` to one endpoint, failing over as the module docstring says.

        Raises:
            BackendError: The answer's error (naming the endpoint), or provider_unavailable
                when every endpoint is out or failed this request.
        """
        tried: set[int] = set()
        failures: list[tuple[_Member, BackendError]] = []
        while True:
            member, probe, epoch, learning = await self._acquire(tried, failures)
            if failures:
                with self._lock:
                    self.failovers += 1
            started = time.perf_counter()
            try:
                response = await member.backend.acomplete(request)
            except BaseException as exc:
                outcome = outcome_of(exc)
                self._release(member, probe, epoch, outcome, exc, (learning, None))
                if not isinstance(exc, BackendError):
                    raise
                failed = self._named(member, exc)
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
            self._release(member, probe, epoch, Outcome.ALIVE, None, (learning, latency))
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
        self, tried: set[int], failures: list[tuple[_Member, BackendError]]
    ) -> tuple[_Member, bool, int, int | None]:
        """An endpoint for the next attempt (its in-flight slot taken), waiting for a slot when
        every usable endpoint is at its limit; raises when none is left. Also the epoch of
        its learned limit's slot, or ``None`` when it holds none (no learned limit, or a
        probe sent past it)."""
        while True:
            with self._lock:
                picked = self._pick(tried, time.monotonic())
                if picked is None:
                    raise self._none_left(failures)
                if isinstance(picked, _Member):
                    probe = picked.breaker.state is BreakerState.HALF_OPEN
                    if probe:
                        picked.breaker.start_probe()
                        _log.info("endpoint %s: sending a probe", picked.name)
                    picked.in_flight += 1
                    picked.sent += 1
                    control = picked.control
                    learning = (
                        control.epoch if control is not None and control.try_enter() else None
                    )
                    return picked, probe, picked.breaker.epoch, learning
                loop = asyncio.get_running_loop()
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, waiter))
            try:
                await waiter
            except asyncio.CancelledError:
                with self._lock:
                    if (loop, waiter) in self._waiters:
                        self._waiters.remove((loop, waiter))
                    else:  # it was woken for a free slot: pass the slot on
                        self._wake(all_waiters=False)
                raise

    def _pick(self, tried: set[int], now: float) -> _Member | bool | None:
        """The endpoint to use; ``True`` to wait for a slot; ``None`` when none is left."""
        best: tuple[bool, float, float, int] | None = None
        chosen: _Member | None = None
        full = False
        for m in self._members:
            if m.index in tried:
                continue
            admitted = m.breaker.admits(now)
            if admitted is None:
                continue
            if admitted is BreakerState.HALF_OPEN:
                return m  # the probe goes first: the sooner it answers, the sooner it is back
            limit = _limit_of(m)
            if limit is not None and m.in_flight >= limit:
                full = True
                continue
            key = (m.limited_until > now, m.in_flight / m.weight, m.sent / m.weight, m.index)
            if best is None or key < best:
                best, chosen = key, m
        if chosen is not None:
            return chosen
        return True if full else None

    def _fails_over(
        self, member: _Member, outcome: Outcome, exc: BackendError, tried: set[int]
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
        self,
        member: _Member,
        probe: bool,
        epoch: int,
        outcome: Outcome,
        exc: BaseException | None,
        learned: tuple[int | None, float | None],
    ) -> None:
        now = time.monotonic()
        grew = False
        with self._lock:
            member.in_flight -= 1
            control, (learning, latency) = member.control, learned
            if control is not None and learning is not None:
                before = control.limit
                control.leave(learning, latency, is_overload(exc) if exc is not None else False)
                grew = control.limit > before
            if outcome is Outcome.FAILED:
                member.failed += 1
                member.last_error = self._said(exc)
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

    def _wake(self, *, all_waiters: bool) -> None:
        """Let one waiting request (or all) pick again; called with the lock held."""
        while self._waiters:
            loop, waiter = self._waiters.pop(0)
            if waiter.done() or loop.is_closed():
                continue
            loop.call_soon_threadsafe(_settle, waiter)
            if not all_waiters:
                return

    # -- errors --------------------------------------------------------------------------------

    def _said(self, exc: BaseException | None) -> str:
        if isinstance(exc, BackendError):
            return redact_text(one_line(exc.error.message, 200), self._secrets)
        return "failed"

    def _named(self, member: _Member, exc: BackendError) -> BackendError:
        """``exc`` with the endpoint named in its message (the detail kept)."""
        # Every endpoint's key is masked: a server may echo another endpoint's key.
        message = redact_text(f"{member.name}: {exc.error.message}", self._secrets)
        detail = redact_text(exc.error.detail, self._secrets) if exc.error.detail else None
        named = exc.error.model_copy(update={"message": message, "detail": detail})
        return BackendError(named, retry_after=exc.retry_after)

    def _none_left(self, failures: list[tuple[_Member, BackendError]]) -> BackendError:
        """The error of a request with no endpoint left to try (called with the lock held)."""
        now = time.monotonic()
        tried = {m.index for m, _ in failures}
        parts = [str(exc.error.message) for _, exc in failures]
        out = [m for m in self._members if m.index not in tried]
        for m in out:
            wait = m.breaker.retry_in(now)
            state = f"out, next probe in {wait:.1f} s" if wait else "out, probe in flight"
            last = f"; last: {m.last_error}" if m.last_error else ""
            parts.append(f"{m.name}: {state}{last}")
        if failures and failures[-1][1].code is ErrorCode.PROVIDER_RATE_LIMITED:
            return failures[-1][1]  # the engine's handling of a 429 (retry, Retry-After)
        what = (
            "every endpoint failed this request or is out" if failures else "every endpoint is out"
        )
        status = failures[-1][1].status if failures else None
        return BackendError(
            Error(
                code=ErrorCode.PROVIDER_UNAVAILABLE,
                message=redact_text(f"{what}: " + "; ".join(parts), self._secrets),
                detail=failures[-1][1].error.detail if failures else None,
                retryable=True,
                status=status,
            )
        )

    def __repr__(self) -> str:
        # The members' reprs never show a key.
        shown = ", ".join(f"{m.backend!r} (weight {m.weight:g})" for m in self._members)
        return f"EndpointPool([{shown}])"


def _limit_of(m: _Member) -> int | None:
    """``m``'s concurrency limit: the lower of its set one and its learned one."""
    if m.control is None:
        return m.limit
    learned = m.control.limit
    return learned if m.limit is None else min(m.limit, learned)


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
