"""EndpointPool.adapt(pace=...): each endpoint paced to its own rate limits, on 127.0.0.1.

The pacers here are plain test objects satisfying :class:`EndpointPacer` (loom-backends is
tested without loom-core); loom-core's RateLimiter as a pacer is tested in
tests/core/test_endpoint_pacing.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from loom_backends import EndpointLimit, EndpointPacer, EndpointPool
from loom_backends.testing import FakeLLMServer, FakeReply, RecordedRequest
from loom_protocol import ChatRequest, LoomUsageError, Message, RateLimitInfo

from .test_pool_adapt import Recording


def request(text: str = "hi") -> ChatRequest:
    return ChatRequest(model="m", messages=[Message(role="user", content=text)])


class Pacer:
    """A budget spent until ``free_at`` (monotonic), then one request every ``every`` s."""

    def __init__(self, free_at: float = 0.0, every: float = 0.0, tokens: int = 0) -> None:
        self.free_at = free_at
        self.every = every
        self.tokens = tokens
        self.taken: list[int] = []
        self.reports: list[tuple[RateLimitInfo, int]] = []
        self.usage: list[tuple[int, int]] = []

    def tokens_for(self, request: ChatRequest) -> int:
        return self.tokens

    def delay(self, tokens: int = 0) -> float:
        return max(0.0, self.free_at - time.monotonic())

    def try_acquire(self, tokens: int = 0) -> float:
        wait = self.delay(tokens)
        if wait > 0.0:
            return wait
        self.taken.append(tokens)
        self.free_at = time.monotonic() + self.every
        return 0.0

    def learn(self, info: RateLimitInfo, age: float = 0.0, later: int = 0) -> str | None:
        self.reports.append((info, later))
        return "learned" if len(self.reports) == 1 else None

    def record_usage(self, estimated: int, actual: int) -> None:
        self.usage.append((estimated, actual))

    def learned(self) -> str:
        return "10 requests/min" if self.reports else ""


def ok(req: RecordedRequest) -> FakeReply:
    return FakeReply(
        content="ok",
        headers={"x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "3"},
    )


@pytest.fixture
def two() -> Iterator[tuple[FakeLLMServer, FakeLLMServer]]:
    with FakeLLMServer(ok) as a, FakeLLMServer(ok) as b:
        yield a, b


def paced(pool: EndpointPool, *pacers: Pacer) -> None:
    limits = iter([Recording("a", 64), Recording("b", 64)])
    given = iter(pacers)

    def make(name: str) -> EndpointLimit:
        return next(limits)

    def pace(name: str) -> EndpointPacer:
        return next(given)

    assert pool.adapt(make, pace)


async def test_a_spent_endpoint_is_passed_over_for_one_whose_budget_holds(two) -> None:  # type: ignore[no-untyped-def]
    a, b = two
    pool = EndpointPool([a.base_url, b.base_url])
    spent, fresh = Pacer(free_at=time.monotonic() + 60), Pacer(tokens=7)
    paced(pool, spent, fresh)
    try:
        await asyncio.gather(*(pool.acomplete(request(str(i))) for i in range(20)))
    finally:
        await pool.aclose()
    assert (a.request_count, b.request_count) == (0, 20)
    assert spent.taken == [] and fresh.taken == [7] * 20
    # Each answer's headers went to the endpoint that sent them, with its real usage.
    assert len(fresh.reports) == 20 and spent.reports == []
    assert fresh.reports[0][0].requests is not None
    assert fresh.reports[0][0].requests.limit == 10
    assert len(fresh.usage) == 20 and all(e == 7 for e, _ in fresh.usage)
    assert [s.limits for s in pool.status()] == ["", "10 requests/min"]


async def test_requests_wait_for_the_first_budget_to_refill(two) -> None:  # type: ignore[no-untyped-def]
    a, b = two
    pool = EndpointPool([a.base_url, b.base_url])
    start = time.monotonic()
    paced(pool, Pacer(free_at=start + 0.3, every=0.3), Pacer(free_at=start + 0.2, every=0.3))
    try:
        await pool.ready(request())
        readied = time.monotonic() - start
        await asyncio.gather(*(pool.acomplete(request(str(i))) for i in range(4)))
    finally:
        await pool.aclose()
    took = time.monotonic() - start
    assert readied >= 0.19  # the sooner of the two budgets
    # Two at each endpoint, 0.3 s apart: never two at once to one endpoint.
    assert (a.request_count, b.request_count) == (2, 2)
    assert took >= 0.49
    assert not pool._waiters


async def test_a_request_cancelled_while_paced_leaves_nothing_behind(two) -> None:  # type: ignore[no-untyped-def]
    a, b = two
    pool = EndpointPool([a.base_url, b.base_url])
    later = time.monotonic() + 60
    pacers = (Pacer(free_at=later), Pacer(free_at=later))
    paced(pool, *pacers)
    try:
        call = asyncio.ensure_future(pool.acomplete(request()))
        await asyncio.sleep(0.1)
        assert not call.done()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    finally:
        await pool.aclose()
    assert not pool._waiters
    assert all(s.in_flight == 0 and s.sent == 0 for s in pool.status())
    assert a.request_count == b.request_count == 0
    assert all(p.taken == [] for p in pacers)


async def test_an_unpaced_pool_is_ready_at_once_and_bad_pacers_are_refused(two) -> None:  # type: ignore[no-untyped-def]
    a, b = two
    pool = EndpointPool([a.base_url, b.base_url])
    assert not pool.paced
    await asyncio.wait_for(pool.ready(request()), 1.0)
    with pytest.raises(LoomUsageError, match="pace returned str, which is not an EndpointPacer"):
        pool.adapt(lambda name: Recording(name, 4), lambda name: "nope")  # type: ignore[arg-type,return-value]
    assert not pool.adaptive and not pool.paced  # a refused adapt changes nothing
    paced(pool, Pacer(), Pacer())
    assert pool.paced and pool.adaptive
    assert not pool.adapt(lambda name: Recording(name, 4), lambda name: Pacer())
