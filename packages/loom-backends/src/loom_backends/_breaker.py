"""The circuit breaker of one endpoint, and what a call's outcome means to it.

States:

* **closed** — the endpoint takes traffic. ``failure_threshold`` failures *in a row* (a
  connection refused or reset, a 5xx, a timeout, a body that is no answer) open it. Any answer
  in between (a success, a 4xx, a 429) resets the count: an endpoint that answers is up.
* **open** — no traffic for a cool-down (``cooldown`` seconds, doubled at every failed probe, at
  most ``max_cooldown``).
* **half-open** — the cool-down is over: the next request is the *probe*, and the only one sent
  there; its success closes the breaker (and resets the cool-down), its failure opens it again.

Outcomes of calls that started before the breaker last changed state are ignored (an *epoch*
counts the changes): the stragglers of a dead endpoint do not re-open a breaker that a
successful probe just closed, and late successes do not close one that just opened.

A breaker is not thread-safe on its own: :class:`~._pool.EndpointPool` holds its lock around
every use.
"""

from __future__ import annotations

import enum

from loom_protocol import BackendError, ErrorCode, LoomUsageError, check_int, check_positive_number

__all__ = [
    "DEFAULT_COOLDOWN",
    "DEFAULT_FAILURE_THRESHOLD",
    "DEFAULT_MAX_COOLDOWN",
    "BreakerState",
    "CircuitBreaker",
    "Outcome",
    "outcome_of",
]

#: Failures in a row that take an endpoint out.
DEFAULT_FAILURE_THRESHOLD = 3
#: Seconds an endpoint stays out before its first probe.
DEFAULT_COOLDOWN = 1.0
#: The longest cool-down, however often the probes fail.
DEFAULT_MAX_COOLDOWN = 30.0


class BreakerState(enum.Enum):
    """Where a breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Outcome(enum.Enum):
    """What one call says about the endpoint that answered it."""

    #: It answered (a success, a 4xx, a bad answer the provider meant): the endpoint is up.
    ALIVE = "alive"
    #: It answered 429 (or 408/409): up, but asking for less. No breaker trip: a rate signal.
    RATE_LIMITED = "rate_limited"
    #: Refused, reset, 5xx, timed out or garbled: a failure of the endpoint.
    FAILED = "failed"
    #: Cancelled, or the backend broke its contract: says nothing about the endpoint.
    UNKNOWN = "unknown"


def outcome_of(exc: BaseException) -> Outcome:
    """The outcome of a call that raised ``exc``.

    ``provider_unavailable`` (5xx, refused, reset) and ``provider_timeout`` are failures, and so
    is a retryable ``provider_error`` (a body that is not JSON: a proxy or a dying server).
    ``provider_rate_limited`` is a rate signal. Everything else the provider answered (auth,
    bad request, an answer without choices) says the endpoint is up: the request is at fault,
    and another endpoint would answer the same.
    """
    if not isinstance(exc, BackendError):
        return Outcome.UNKNOWN
    code = exc.error.code
    if code in (ErrorCode.PROVIDER_UNAVAILABLE, ErrorCode.PROVIDER_TIMEOUT):
        return Outcome.FAILED
    if code is ErrorCode.PROVIDER_ERROR and exc.retryable:
        return Outcome.FAILED
    if code is ErrorCode.PROVIDER_RATE_LIMITED:
        return Outcome.RATE_LIMITED
    return Outcome.ALIVE


class CircuitBreaker:
    """One endpoint's breaker (see the module docstring).

    Args:
        failure_threshold: Failures in a row that open it (an int >= 1).
        cooldown: Seconds before the first probe (a finite number > 0).
        max_cooldown: The cool-down's ceiling as it doubles (>= ``cooldown``).

    Attributes:
        state: The state as last changed (an open breaker whose cool-down is over becomes
            half-open at the next :meth:`admits`).
        epoch: Incremented at every change of state.
        failures: Failures in a row while closed.
        opened: How many times it opened.
    """

    __slots__ = (
        "_base",
        "_cooldown",
        "_max",
        "_reopen_at",
        "epoch",
        "failures",
        "opened",
        "probing",
        "state",
        "threshold",
    )

    def __init__(
        self,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        cooldown: float = DEFAULT_COOLDOWN,
        max_cooldown: float = DEFAULT_MAX_COOLDOWN,
    ) -> None:
        self.threshold = check_int("failure_threshold", failure_threshold, 1)
        self._base = check_positive_number("cooldown", cooldown, " of seconds", 86_400.0)
        self._max = check_positive_number("max_cooldown", max_cooldown, " of seconds", 86_400.0)
        if self._max < self._base:
            raise LoomUsageError(
                f"max_cooldown ({max_cooldown!r}) must be at least cooldown ({cooldown!r})"
            )
        self._cooldown = self._base
        self._reopen_at = 0.0
        self.state = BreakerState.CLOSED
        self.epoch = 0
        self.failures = 0
        self.opened = 0
        #: A probe is in flight (half-open only).
        self.probing = False

    def admits(self, now: float) -> BreakerState | None:
        """Whether a new request may go to the endpoint at ``now``.

        Returns:
            ``CLOSED`` (send it), ``HALF_OPEN`` (send it as the probe: call
            :meth:`start_probe`), or ``None`` (not now).
        """
        if self.state is BreakerState.OPEN and now >= self._reopen_at:
            self._move(BreakerState.HALF_OPEN)
        if self.state is BreakerState.CLOSED:
            return BreakerState.CLOSED
        if self.state is BreakerState.HALF_OPEN and not self.probing:
            return BreakerState.HALF_OPEN
        return None

    def start_probe(self) -> None:
        """Mark the probe sent (after :meth:`admits` returned ``HALF_OPEN``)."""
        self.probing = True

    def retry_in(self, now: float) -> float:
        """Seconds until an open breaker lets its probe through (0 when it is not open)."""
        return max(0.0, self._reopen_at - now) if self.state is BreakerState.OPEN else 0.0

    def record(self, outcome: Outcome, epoch: int, probe: bool, now: float) -> BreakerState | None:
        """Take the outcome of a call that started at ``epoch`` (as a probe or not).

        Returns:
            The new state when this outcome changed it (for the log), else ``None``.
        """
        if probe:
            self.probing = False
        if outcome is Outcome.UNKNOWN or epoch != self.epoch:
            return None  # a cancelled probe leaves the breaker half-open for the next request
        if outcome is Outcome.FAILED:
            if self.state is BreakerState.HALF_OPEN:
                self._cooldown = min(self._max, self._cooldown * 2)
                return self._open(now)
            if self.state is BreakerState.CLOSED:
                self.failures += 1
                if self.failures >= self.threshold:
                    return self._open(now)
            return None
        # Any answer: the endpoint is up.
        self.failures = 0
        if self.state is BreakerState.HALF_OPEN:
            self._cooldown = self._base
            self._move(BreakerState.CLOSED)
            return BreakerState.CLOSED
        return None

    def _open(self, now: float) -> BreakerState:
        self._reopen_at = now + self._cooldown
        self.opened += 1
        self.failures = 0
        self._move(BreakerState.OPEN)
        return BreakerState.OPEN

    def _move(self, state: BreakerState) -> None:
        self.state = state
        self.epoch += 1
        self.probing = False
