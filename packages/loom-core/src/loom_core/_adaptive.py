"""Adaptive concurrency: how many calls a loom keeps in flight, learned from the provider.

Servers that send no rate-limit headers (vLLM, Ollama, DeepSeek, a proxy) still say when they
have too much: a 429, a 503 or 529 (overloaded), a timeout — or answers that slow down as
their queue grows. :class:`ConcurrencyLimit` is the loom-wide limit on calls in flight, moved
by those signals; ``max_workers`` stays the ceiling of each batch.

Two methods, chosen by measurement (``scripts/bench.py hidden-limits``, docs/limits.md):

* ``"aimd"`` (the default): slow start (one more per answer, so the limit doubles each round
  trip) until the first overload, which halves it (then one more per answer again up to 70 %
  of where slow start ended); later, an overload — or the recent latency
  at twice its baseline — multiplies the limit by 0.9. Then one more per round trip up to
  the highest limit not refused, held there for 20 round trips, then one probe higher.
* ``"gradient"`` (after Netflix's concurrency-limits Gradient2): each answer moves the limit
  toward ``limit * clamp(1.5 * long_latency / recent_latency, 0.5, 1) + sqrt(limit)``,
  smoothed; an overload cuts it as AIMD's does.

Both grow only while the limit is what holds calls back (as many in flight as it allows),
and both ignore what calls started before the last backoff report: those were sent under
the old limit, and counting them would back off once per call of a burst instead of once.

The state is plain arithmetic under a ``threading.Lock``: a loom is used from its own loop
thread and from users' loops. A call waiting for a slot waits on its own loop, and is woken
by whichever thread frees one.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import statistics
import threading
import time
from collections.abc import Callable
from typing import Literal

from loom_protocol import BackendError, ErrorCode, LoomUsageError

__all__ = ["METHODS", "ConcurrencyLimit", "is_overload"]

Method = Literal["aimd", "gradient"]
METHODS: tuple[Method, ...] = ("aimd", "gradient")

_log = logging.getLogger("loom.adaptive")

#: The limit a loom starts from: slow start reaches 64 in three round trips.
INITIAL_LIMIT = 8
#: The limit never exceeds this, whatever the batches' ceilings.
MAX_LIMIT = 4096
_BACKOFF = 0.9
_SLOW_START_BACKOFF = 0.5
# After that halving, growth stays one per answer up to this fraction of where slow start
# ended (TCP's slow-start threshold): halving spares refusals, regrowing fast spares time.
_RECOVERY = 0.7
# AIMD holds just below the limit it was last refused at for this many round trips, then
# probes one higher: few refusals, and a server that got bigger is still found.
_HOLD_ROUND_TRIPS = 20
# Latency: the recent average moves fast, the long-run one slowly.
_SHORT_WEIGHT = 0.1
_LONG_WEIGHT = 0.01
# AIMD: the recent latency at this multiple of the long-run one is an overload.
_LATENCY_OVERLOAD = 2.0
# Gradient2's constants (Netflix concurrency-limits' defaults).
_TOLERANCE = 1.5
_SMOOTHING = 0.2
# The baseline latency is the median of this many first answers.
_CALIBRATION = 20
# Below this (seconds) latency says nothing: an instant local server, a scheduler hiccup.
_LATENCY_FLOOR = 0.002
# One log line per this many seconds at most (backoffs at INFO, growth at DEBUG).
_LOG_EVERY = 5.0
# HTTP statuses that mean "too much": 503 (vLLM, proxies) and Anthropic's 529 "overloaded".
_OVERLOAD_STATUS = frozenset({503, 529})


def is_overload(error: BackendError) -> bool:
    """Whether a failed call says the server has too much: 429, 503/529, or a timeout."""
    code = error.code
    return (
        code is ErrorCode.PROVIDER_RATE_LIMITED
        or code is ErrorCode.PROVIDER_TIMEOUT
        or (error.status is not None and error.status in _OVERLOAD_STATUS)
    )


class ConcurrencyLimit:
    """The calls a loom may have in flight, adapted to what the provider shows it can take.

    Args:
        method: ``"aimd"`` or ``"gradient"`` (see the module docstring).
        initial: The limit to start from.
        clock: A monotonic clock in seconds (for the pace of log lines).
        name: Whose limit this is, for the log lines (an endpoint of a pool); ``None`` for
            the loom's.

    Raises:
        LoomUsageError: An unknown ``method``.

    Attributes:
        method: The method in use.
        epoch: How many backoffs so far; a call remembers the epoch it started in.
    """

    def __init__(
        self,
        method: str = "aimd",
        *,
        initial: int = INITIAL_LIMIT,
        clock: Callable[[], float] = time.monotonic,
        name: str | None = None,
    ) -> None:
        if method not in METHODS:
            raise LoomUsageError(
                f"adaptive must be True, False or one of {', '.join(map(repr, METHODS))}; "
                f"got {method!r}"
            )
        self.method: Method = "aimd" if method == "aimd" else "gradient"
        self._clock = clock
        self._what = f"endpoint {name}: concurrency" if name else "concurrency"
        self._lock = threading.Lock()
        self._limit = float(max(1, initial))
        self._in_flight = 0
        self.epoch = 0
        self._slow_start = True
        self._safe = math.inf  # the highest limit not refused since the last backoff
        self._held = 0
        self._probing = False
        self._ceiling_known = False
        self._recover_to = 0.0
        self._short = 0.0
        self._long = 0.0
        self._first: list[float] | None = []  # the first answers' latencies (calibration)
        self._waiters: collections.deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = (
            collections.deque()
        )
        self._logged_limit = int(self._limit)
        self._logged_at = -math.inf
        self._unlogged_backoffs = 0
        self._why = ""
        self.backoffs = 0

    # -- what the progress bar and the logs show ---------------------------------------------

    @property
    def limit(self) -> int:
        """The calls allowed in flight now."""
        return int(self._limit)

    @property
    def in_flight(self) -> int:
        """The calls in flight now (holding a slot)."""
        return self._in_flight

    def __repr__(self) -> str:
        return (
            f"ConcurrencyLimit(method={self.method!r}, limit={self.limit}, "
            f"in_flight={self._in_flight})"
        )

    # -- slots --------------------------------------------------------------------------------

    def try_enter(self) -> bool:
        """Take a slot if one is free now (the fast path: no coroutine, no future)."""
        with self._lock:
            if self._in_flight < int(self._limit) and not self._waiters:
                self._in_flight += 1
                return True
            return False

    async def enter(self) -> None:
        """Wait for a slot and take it (first come, first served). Cancellable."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        waiter = (loop, future)
        with self._lock:
            if self._in_flight < int(self._limit) and not self._waiters:
                self._in_flight += 1
                return
            self._waiters.append(waiter)
        try:
            await future
        except asyncio.CancelledError:
            with self._lock:
                try:
                    self._waiters.remove(waiter)
                    granted = False
                except ValueError:  # already handed a slot (or about to be)
                    granted = future.done() and not future.cancelled()
            if granted:
                self._release()
            raise

    def leave(self, epoch: int, latency: float | None, overload: bool) -> None:
        """Free the slot of a call that started in ``epoch``, learning from its outcome.

        Args:
            epoch: :attr:`epoch` when the call started.
            latency: Seconds the answer took, for an answered call; else ``None``.
            overload: Whether the call failed with an overload (:func:`is_overload`).
        """
        with self._lock:
            before = self._limit
            if overload:
                self._back_off(epoch)
            elif latency is not None:
                self._on_answer(epoch, latency)
            self._in_flight -= 1
            granted = self._grant()
            after = self._limit
        if int(after) != int(before):
            self._log_change(int(before), int(after), overload)
        _wake(granted, self)

    def _release(self) -> None:
        """Give back a slot without learning anything (a waiter cancelled once granted)."""
        with self._lock:
            self._in_flight -= 1
            granted = self._grant()
        _wake(granted, self)

    def _grant(self) -> list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]:
        """Hand free slots to waiters, in order (under the lock; woken after it)."""
        granted = []
        allowed = int(self._limit)
        while self._waiters and self._in_flight < allowed:
            granted.append(self._waiters.popleft())
            self._in_flight += 1
        return granted

    # -- learning (under the lock) ------------------------------------------------------------

    def _back_off(self, epoch: int) -> None:
        if epoch != self.epoch:
            return  # started under an older, higher limit: that backoff already happened
        if self._slow_start or not self._ceiling_known or self._probing:
            # The first refusals (leaving slow start, which overshoots, then the first one
            # after it), or a probe above the ceiling refused: the limit below it is the
            # ceiling to hold. Other refusals (below the ceiling: a burst, a random 429)
            # leave the ceiling as it is: lowering it at each would ratchet the limit down to
            # 1 under a steady trickle of 429s (the chaos scenario of scripts/bench.py).
            self._safe = max(1.0, math.floor(self._limit) - 1.0)
            self._ceiling_known = not self._slow_start
        self._probing = False
        self._held = 0
        # Slow start overshoots by up to a round trip's doubling: leaving it, halve (as TCP
        # does); later, near the ceiling, a tenth is enough.
        if self._slow_start:
            self._recover_to = self._limit * _RECOVERY
            self._limit = max(1.0, self._limit * _SLOW_START_BACKOFF)
        else:
            self._recover_to = 0.0
            self._limit = max(1.0, self._limit * _BACKOFF)
        self._slow_start = False
        self.epoch += 1
        self.backoffs += 1

    def _on_answer(self, epoch: int, latency: float) -> None:
        slow = self._latency_rose(latency)
        # The limit grows only while it is what holds calls back.
        binding = self._in_flight >= int(self._limit)
        if self.method == "aimd":
            if slow:
                self._back_off(epoch)
            elif binding:
                self._limit += self._aimd_step()
        else:
            self._gradient(binding)
        self._limit = min(self._limit, float(MAX_LIMIT))

    def _latency_rose(self, latency: float) -> bool:
        """Take in one answer's latency; whether the recent latency is twice the long-run one.

        Averages, not single answers: an LLM's latency varies with the length of each
        answer. Both start from the median of the first answers (the very first ones pay
        for opening connections, and would set the baseline too high to ever be passed).
        Against a lower baseline (the lowest recent average) this backed off whenever this
        machine's own client was the bottleneck (latency scenario of scripts/bench.py: 1.28
        -> 1.70 of bare aiohttp's time): only a latency that rises faster than the long-run
        average follows is taken for an overload.
        """
        if self._first is not None:
            self._first.append(latency)
            if len(self._first) < _CALIBRATION:
                return False
            self._short = self._long = statistics.median(self._first)
            self._first = None
            return False
        self._short += (latency - self._short) * _SHORT_WEIGHT
        self._long += (latency - self._long) * _LONG_WEIGHT
        return self._short > _LATENCY_FLOOR and self._short > _LATENCY_OVERLOAD * self._long

    def _aimd_step(self) -> float:
        if self._slow_start or self._limit < self._recover_to:
            return 1.0  # one more per answer: the limit doubles each round trip
        if self._limit + 1.0 / self._limit <= self._safe:
            return 1.0 / self._limit  # one more per round trip, up to the safe limit
        if self._limit < self._safe:
            return self._safe - self._limit
        # At the highest limit not refused: hold, then probe one higher. Probing every round
        # trip (plain AIMD) had 2.2 % of calls answered 429 against a hidden cap of 24, and
        # more the smaller the cap (scenario "hidden-limits" of scripts/bench.py).
        self._held += 1
        if self._held < _HOLD_ROUND_TRIPS * self._limit:
            return 0.0
        self._held = 0
        self._safe += 1.0  # unless refused, the probe's limit is safe too
        self._probing = True
        return 1.0

    def _gradient(self, binding: bool) -> None:
        short, long = self._short, self._long
        if short <= _LATENCY_FLOOR:
            gradient = 1.0
        else:
            if long > 2.0 * short:  # the server got faster: let the long-run figure catch up
                self._long = long = long * 0.95
            gradient = max(0.5, min(1.0, _TOLERANCE * long / short))
        target = self._limit * gradient + math.sqrt(self._limit)
        if target > self._limit and not binding:
            return
        self._limit = max(1.0, self._limit * (1 - _SMOOTHING) + target * _SMOOTHING)

    # -- logs ---------------------------------------------------------------------------------

    def _log_change(self, before: int, after: int, overload: bool) -> None:
        # One line per _LOG_EVERY seconds at most: a limit probing its ceiling changes every
        # few round trips, and a log line per change would bury everything else.
        now = self._clock()
        if after < before:
            self._unlogged_backoffs += 1
            self._why = "the server refused or timed out calls" if overload else "answers slowed"
        if now - self._logged_at < _LOG_EVERY:
            return
        backoffs, self._unlogged_backoffs = self._unlogged_backoffs, 0
        if backoffs:
            _log.info(
                "%s %d -> %d (%s; %d backoff(s); method %s)",
                self._what,
                self._logged_limit,
                after,
                self._why,
                backoffs,
                self.method,
            )
        else:
            # Growing is the normal course of a batch: a debug line, not an info one.
            _log.debug(
                "%s %d -> %d (method %s)", self._what, self._logged_limit, after, self.method
            )
        self._logged_limit, self._logged_at = after, now


def _wake(
    granted: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]],
    limit: ConcurrencyLimit,
) -> None:
    if not granted:
        return
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    for loop, future in granted:
        if loop is running:
            _hand_over(future, limit)
        else:
            try:
                loop.call_soon_threadsafe(_hand_over, future, limit)
            except RuntimeError:  # that loop is closed: its waiter is gone with it
                limit._release()


def _hand_over(future: asyncio.Future[None], limit: ConcurrencyLimit) -> None:
    if future.done():  # cancelled meanwhile: the slot goes to the next waiter
        limit._release()
    else:
        future.set_result(None)
