"""EndpointPool.adapt: a learned limit per endpoint, against real FakeLLMServers on 127.0.0.1.

The limits here are plain test objects satisfying :class:`EndpointLimit` (loom-backends is
tested without loom-core); loom-core's ConcurrencyLimit is tested in tests/core.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from loom_backends import EndpointLimit, EndpointPool
from loom_backends.testing import FakeLLMServer, FakeReply, RecordedRequest
from loom_protocol import ChatRequest, LoomUsageError, Message


def request(text: str = "hi") -> ChatRequest:
    return ChatRequest(model="m", messages=[Message(role="user", content=text)])


class Peak:
    """Answers after ``delay`` (or ``status``), counting the requests in flight at the server."""

    def __init__(self, delay: float = 0.03) -> None:
        self.delay = delay
        self.status = 200
        self.now = self.peak = 0

    async def __call__(self, req: RecordedRequest) -> FakeReply:
        if self.status != 200:
            return FakeReply(content="no", status=self.status)
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.now -= 1
        return FakeReply(content="ok")


class Recording:
    """A limit of ``limit`` (``grow`` more after each answer), recording every ``leave``."""

    def __init__(self, name: str, limit: int, grow: int = 0) -> None:
        self.name = name
        self._limit = limit
        self.grow = grow
        self.epoch = 0
        self.in_flight = 0
        self.left: list[tuple[int, float | None, bool]] = []

    @property
    def limit(self) -> int:
        return self._limit

    def try_enter(self) -> bool:
        if self.in_flight >= self._limit:
            return False
        self.in_flight += 1
        return True

    def leave(self, epoch: int, latency: float | None, overload: bool) -> None:
        self.in_flight -= 1
        self.left.append((epoch, latency, overload))
        if overload:
            self.epoch += 1
        elif latency is not None:
            self._limit += self.grow


@pytest.fixture
def two() -> Iterator[tuple[FakeLLMServer, FakeLLMServer, Peak, Peak]]:
    pa, pb = Peak(), Peak()
    with FakeLLMServer(pa) as a, FakeLLMServer(pb) as b:
        yield a, b, pa, pb


def adapt(pool: EndpointPool, limits: dict[int, int], grow: int = 0) -> list[Recording]:
    made: list[Recording] = []

    def make(name: str) -> EndpointLimit:
        made.append(Recording(name, limits[len(made)], grow))
        return made[-1]

    assert pool.adapt(make)
    return made


async def test_each_endpoint_is_held_to_its_learned_limit(two) -> None:  # type: ignore[no-untyped-def]
    a, b, pa, pb = two
    pool = EndpointPool([a.base_url, b.base_url])  # equal weights: the limits make the split
    controls = adapt(pool, {0: 2, 1: 6})
    assert pool.adaptive and [c.name for c in controls] == [a.base_url, b.base_url]
    assert [s.limit for s in pool.status()] == [2, 6]
    try:
        await asyncio.gather(*(pool.acomplete(request(str(i))) for i in range(80)))
    finally:
        await pool.aclose()
    assert pa.peak == 2 and pb.peak == 6
    assert a.request_count + b.request_count == 80
    assert b.request_count > 2 * a.request_count
    # Every call told its endpoint's limit how it went, once: an answer and its latency.
    for control, server in ((controls[0], a), (controls[1], b)):
        assert len(control.left) == server.request_count and control.in_flight == 0
        assert all(
            e == 0 and lat is not None and lat >= 0.03 and not o for e, lat, o in control.left
        )


@pytest.mark.parametrize(("status", "overload"), [(429, True), (503, True), (500, False)])
async def test_a_refusal_is_learned_by_its_endpoint_alone(  # type: ignore[no-untyped-def]
    two, status: int, overload: bool
) -> None:
    a, b, pa, _ = two
    pa.status = status
    pool = EndpointPool([a.base_url, b.base_url], failure_threshold=100)
    controls = adapt(pool, {0: 4, 1: 4})
    try:
        for i in range(6):
            await pool.acomplete(request(str(i)))  # failed over to B each time A refuses
    finally:
        await pool.aclose()
    refused = controls[0].left
    assert refused and all(lat is None and o is overload for _, lat, o in refused)
    assert [e for e, _, _ in refused] == (
        list(range(len(refused))) if overload else [0] * len(refused)
    )
    assert all(lat is not None and not o for _, lat, o in controls[1].left)
    assert controls[0].in_flight == controls[1].in_flight == 0


async def test_a_dead_endpoint_teaches_its_limit_nothing() -> None:
    with FakeLLMServer(Peak(0.0)) as b:
        dead = FakeLLMServer().start()
        url = dead.base_url
        dead.stop()  # connections refused
        pool = EndpointPool([url, b.base_url], failure_threshold=100)
        controls = adapt(pool, {0: 4, 1: 4})
        try:
            for i in range(3):
                await pool.acomplete(request(str(i)))
        finally:
            await pool.aclose()
    # Refused: no latency, not an overload (that is the breaker's business, not the limit's).
    assert controls[0].left and all(x == (0, None, False) for x in controls[0].left)


async def test_a_limit_that_grows_lets_waiting_requests_go() -> None:
    peak = Peak(0.02)
    with FakeLLMServer(peak) as a:
        pool = EndpointPool([a.base_url])
        (control,) = adapt(pool, {0: 1}, grow=1)
        try:
            async with asyncio.timeout(10):  # a waiter never woken would hang here
                await asyncio.gather(*(pool.acomplete(request(str(i))) for i in range(30)))
        finally:
            await pool.aclose()
    assert control.limit == 31 and control.in_flight == 0
    assert peak.peak > 1  # the waiting requests went as the limit grew


async def test_a_cancelled_request_gives_its_learned_slot_back(two) -> None:  # type: ignore[no-untyped-def]
    a, b, pa, pb = two
    pa.delay = pb.delay = 5.0
    pool = EndpointPool([a.base_url, b.base_url])
    controls = adapt(pool, {0: 1, 1: 1})
    try:
        tasks = [asyncio.create_task(pool.acomplete(request(str(i)))) for i in range(4)]
        await asyncio.sleep(0.3)  # two sent, two waiting for a slot
        assert [c.in_flight for c in controls] == [1, 1]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await pool.aclose()
    assert [c.in_flight for c in controls] == [0, 0]
    assert all(x == (0, None, False) for c in controls for x in c.left)
    assert [s.in_flight for s in pool.status()] == [0, 0]


async def test_adapt_once_the_lower_limit_wins_and_bad_factories_are_refused(two) -> None:  # type: ignore[no-untyped-def]
    a, b, _, _ = two
    pool = EndpointPool([a.base_url, b.base_url])
    assert not pool.adaptive and [s.limit for s in pool.status()] == [None, None]
    with pytest.raises(LoomUsageError, match="not an EndpointLimit"):
        pool.adapt(lambda name: object())  # type: ignore[arg-type,return-value]
    assert not pool.adaptive  # nothing half installed
    first = adapt(pool, {0: 8, 1: 8})
    assert not pool.adapt(lambda name: Recording(name, 1))  # the first one stays
    assert [m.control for m in pool._members] == first
    pool.set_limit(0, 3)
    assert [s.limit for s in pool.status()] == [3, 8]  # the lower of set and learned
    pool.set_limit(0, None)
    assert [s.limit for s in pool.status()] == [8, 8]
    await pool.aclose()


async def test_without_adapt_nothing_changes(two) -> None:  # type: ignore[no-untyped-def]
    a, b, pa, pb = two
    pool = EndpointPool([a.base_url, b.base_url])
    try:
        await asyncio.gather(*(pool.acomplete(request(str(i))) for i in range(40)))
    finally:
        await pool.aclose()
    assert not pool.adaptive and pa.peak + pb.peak >= 30  # no cap of any kind
    assert all(m.control is None for m in pool._members)
