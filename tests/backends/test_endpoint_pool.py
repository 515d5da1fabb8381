"""EndpointPool against several real FakeLLMServers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator

import pytest

from loom_backends import EndpointPool
from loom_backends.testing import FakeLLMServer, FakeReply, RecordedRequest
from loom_protocol import BackendError, ChatRequest, ErrorCode, Message

KEY_A = "sk-pool-secret-aaaa1111"
KEY_B = "sk-pool-secret-bbbb2222"


def request(text: str = "hi") -> ChatRequest:
    return ChatRequest(model="m", messages=[Message(role="user", content=text)])


class Switch:
    """A handler whose answer a test changes while the server runs: 200 or a status."""

    def __init__(self) -> None:
        self.status = 200
        self.delay = 0.0
        self.body: str | None = None

    def __call__(self, req: RecordedRequest) -> FakeReply:
        if self.status != 200:
            return FakeReply(content=self.body or "down", status=self.status)
        return FakeReply(content="ok", delay=self.delay)


@pytest.fixture
def two() -> Iterator[tuple[FakeLLMServer, FakeLLMServer, Switch, Switch]]:
    sa, sb = Switch(), Switch()
    with FakeLLMServer(sa) as a, FakeLLMServer(sb) as b:
        yield a, b, sa, sb


async def test_requests_spread_by_weight_one_at_a_time(two) -> None:  # type: ignore[no-untyped-def]
    a, b, _, _ = two
    pool = EndpointPool([{"url": a.base_url, "weight": 1}, {"url": b.base_url, "weight": 3}])
    try:
        for i in range(100):
            await pool.acomplete(request(str(i)))
    finally:
        await pool.aclose()
    # One at a time, the pick is a weighted round robin: exact.
    assert (a.request_count, b.request_count) == (25, 75)


async def test_requests_spread_by_weight_under_load(two) -> None:  # type: ignore[no-untyped-def]
    a, b, sa, sb = two
    sa.delay = sb.delay = 0.02
    pool = EndpointPool([{"url": a.base_url, "weight": 1}, {"url": b.base_url, "weight": 3}])
    sem = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        async with sem:
            await pool.acomplete(request(str(i)))

    try:
        await asyncio.gather(*(one(i) for i in range(400)))
    finally:
        await pool.aclose()
    share_b = b.request_count / 400
    assert a.request_count + b.request_count == 400
    assert 0.65 <= share_b <= 0.85, (a.request_count, b.request_count)


async def test_a_failing_endpoint_is_taken_out_then_probed_back(two) -> None:  # type: ignore[no-untyped-def]
    a, b, sa, _ = two
    pool = EndpointPool([a.base_url, b.base_url], failure_threshold=3, cooldown=0.3)
    try:
        sa.status = 503
        # Every request succeeds: those sent to A go on to B at once.
        for i in range(40):
            answer = await pool.acomplete(request(str(i)))
            assert answer.content == "ok"
        # A got its 3 failures in a row, then nothing (the loop took far less than 0.3 s)...
        status = pool.status()
        assert status[0].state in ("open", "half_open")
        assert a.request_count == 3, a.request_count
        assert pool.failovers == 3
        # ...except one probe per cool-down, which fails again (the cool-down doubles).
        await asyncio.sleep(0.35)
        await pool.acomplete(request("probe-1"))
        assert a.request_count == 4
        for i in range(10):
            await pool.acomplete(request(f"after-{i}"))
        assert a.request_count == 4  # the doubled cool-down (0.6 s) is not over
        # A is back: the next probe closes the breaker and A takes its share again.
        sa.status = 200
        await asyncio.sleep(0.65)
        for i in range(20):
            await pool.acomplete(request(f"back-{i}"))
        assert pool.status()[0].state == "closed"
        assert a.request_count >= 4 + 9, a.request_count
    finally:
        await pool.aclose()


async def test_a_stopped_server_fails_over_and_comes_back_on_its_port() -> None:
    b = FakeLLMServer().start()
    a = FakeLLMServer().start()
    port = a.port
    pool = EndpointPool([a.base_url, b.base_url], cooldown=0.3)
    url_a = a.base_url
    try:
        a.stop()  # connections refused from now on
        for i in range(20):
            assert (await pool.acomplete(request(str(i)))).content
        assert pool.status()[0].state in ("open", "half_open")
        assert pool.status()[0].sent == 3  # only the failures that opened it
        await asyncio.sleep(0.35)
        with FakeLLMServer(port=port) as back:
            assert back.base_url == url_a
            for i in range(20):
                await pool.acomplete(request(f"back-{i}"))
            assert pool.status()[0].state == "closed"
            assert back.request_count >= 9
    finally:
        await pool.aclose()
        b.stop()


async def test_every_endpoint_out_fails_fast_and_clearly(two) -> None:  # type: ignore[no-untyped-def]
    a, b, sa, sb = two
    sa.status = sb.status = 502
    pool = EndpointPool([a.base_url, b.base_url], failure_threshold=1, cooldown=30)
    try:
        with pytest.raises(BackendError) as first:
            await pool.acomplete(request())
        assert first.value.code is ErrorCode.PROVIDER_UNAVAILABLE
        assert first.value.retryable
        assert a.base_url in first.value.error.message and b.base_url in first.value.error.message
        started = time.perf_counter()
        for _ in range(50):
            with pytest.raises(BackendError) as out:
                await pool.acomplete(request())
            assert out.value.code is ErrorCode.PROVIDER_UNAVAILABLE
            assert out.value.retryable
        assert time.perf_counter() - started < 0.5  # no request sent, no wait
        assert "every endpoint is out" in out.value.error.message
        assert "next probe in" in out.value.error.message
        assert a.request_count == b.request_count == 1
    finally:
        await pool.aclose()


async def test_a_4xx_is_no_endpoint_failure(two) -> None:  # type: ignore[no-untyped-def]
    a, b, sa, _ = two
    pool = EndpointPool([a.base_url, b.base_url], failure_threshold=1)
    try:
        sa.status = 400
        with pytest.raises(BackendError) as info:
            await pool.acomplete(request())  # the first pick is A
        assert info.value.code is ErrorCode.PROVIDER_BAD_REQUEST
        assert info.value.error.message.startswith(a.base_url)  # the endpoint is named
        assert b.request_count == 0  # not failed over: any endpoint would say the same
        sa.status = 401
        codes = []
        for _ in range(8):
            try:
                await pool.acomplete(request())
            except BackendError as exc:
                codes.append(exc.code)
        # A keeps its share: a 401 says nothing about A being down.
        assert codes == [ErrorCode.PROVIDER_AUTH] * 4
        assert pool.status()[0].state == "closed"
        assert pool.status()[0].failed == 0
    finally:
        await pool.aclose()


async def test_a_429_is_a_rate_signal_not_a_breaker_trip(two) -> None:  # type: ignore[no-untyped-def]
    a, b, sa, sb = two
    pool = EndpointPool([a.base_url, b.base_url], failure_threshold=1)
    try:
        sa.status = 429
        # A says 429: the request goes to B, and A is passed over for a while.
        for i in range(10):
            assert (await pool.acomplete(request(str(i)))).content == "ok"
        status = pool.status()
        assert status[0].state == "closed"
        assert status[0].rate_limited == 1
        assert a.request_count == 1
        # Both say 429: the engine gets the 429 (its retry and Retry-After handling).
        sb.status = 429
        pool2 = EndpointPool([a.base_url, b.base_url], failure_threshold=1)
        with pytest.raises(BackendError) as info:
            await pool2.acomplete(request())
        assert info.value.code is ErrorCode.PROVIDER_RATE_LIMITED
        assert [s.state for s in pool2.status()] == ["closed", "closed"]
        await pool2.aclose()
    finally:
        await pool.aclose()


async def test_a_timeout_counts_but_is_left_to_the_engine() -> None:
    slow = Switch()
    slow.delay = 2.0
    with FakeLLMServer(slow) as a, FakeLLMServer() as b:
        pool = EndpointPool([a.base_url, b.base_url], timeout=0.2, failure_threshold=1)
        try:
            with pytest.raises(BackendError) as info:
                await pool.acomplete(request())
            assert info.value.code is ErrorCode.PROVIDER_TIMEOUT
            assert b.request_count == 0
            assert pool.status()[0].state in ("open", "half_open")
            assert (await pool.acomplete(request())).content  # B now
        finally:
            await pool.aclose()


async def test_an_endpoint_limit_caps_its_requests_in_flight(two) -> None:  # type: ignore[no-untyped-def]
    a, b, sa, sb = two
    sa.delay = sb.delay = 0.05
    pool = EndpointPool([a.base_url, b.base_url])
    pool.set_limit(0, 1)
    pool.set_limit(1, 2)
    peak = [0, 0]

    async def watch() -> None:
        while True:
            for i, s in enumerate(pool.status()):
                peak[i] = max(peak[i], s.in_flight)
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    try:
        # 12 at once: three run, the others wait for a slot (no error, no hang).
        answers = await asyncio.wait_for(
            asyncio.gather(*(pool.acomplete(request(str(i))) for i in range(12))), 10
        )
        assert len(answers) == 12
        assert peak == [1, 2]
        assert a.request_count + b.request_count == 12
        pool.set_limit(0, None)
        assert pool.status()[0].limit is None
    finally:
        watcher.cancel()
        await pool.aclose()


async def test_a_cancelled_request_gives_its_slot_back(two) -> None:  # type: ignore[no-untyped-def]
    a, b, sa, sb = two
    sa.delay = sb.delay = 5.0
    pool = EndpointPool([a.base_url, b.base_url])
    pool.set_limit(0, 1)
    pool.set_limit(1, 1)
    try:
        calls = [asyncio.create_task(pool.acomplete(request(str(i)))) for i in range(4)]
        await asyncio.sleep(0.3)
        assert sum(s.in_flight for s in pool.status()) == 2  # two sent, two waiting
        for call in calls:
            call.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        assert [s.in_flight for s in pool.status()] == [0, 0]
        sa.delay = sb.delay = 0.0
        assert (await asyncio.wait_for(pool.acomplete(request()), 5)).content == "ok"
    finally:
        await pool.aclose()


async def test_no_key_leaks_into_errors_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    # Each server echoes *both* keys in its 5xx body: the pool masks every endpoint's key.
    leaky = Switch()
    leaky.status = 500
    leaky.body = f"bad keys {KEY_A} and {KEY_B}"
    with FakeLLMServer(leaky) as a, FakeLLMServer(leaky) as b:
        pool = EndpointPool(
            [{"url": a.base_url, "api_key": KEY_A}, {"url": b.base_url, "api_key": KEY_B}],
            failure_threshold=1,
        )
        try:
            with caplog.at_level(logging.DEBUG, logger="loom"):
                errors = []
                for _ in range(3):
                    with pytest.raises(BackendError) as info:
                        await pool.acomplete(request())
                    errors.append(info.value)
        finally:
            await pool.aclose()
        # Each endpoint got its own key.
        assert a.requests[0].headers["authorization"] == f"Bearer {KEY_A}"
        assert b.requests[0].headers["authorization"] == f"Bearer {KEY_B}"
    text = caplog.text + repr(pool) + repr(pool.status())
    for error in errors:
        text += str(error) + error.error.message + (error.error.detail or "")
    assert "bad keys" in text  # the body did get through...
    assert KEY_A not in text and KEY_B not in text  # ...without the keys


def test_one_pool_serves_several_loops_and_threads(two) -> None:  # type: ignore[no-untyped-def]
    a, b, _, _ = two
    pool = EndpointPool([a.base_url, b.base_url])
    failures: list[BaseException] = []

    def worker(n: int) -> None:
        async def run() -> None:
            try:
                for i in range(10):
                    await pool.acomplete(request(f"{n}-{i}"))
            finally:
                await pool.aclose()

        try:
            asyncio.run(run())
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not failures
    assert a.request_count + b.request_count == 40
    assert a.request_count >= 10 and b.request_count >= 10
