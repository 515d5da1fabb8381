"""The shared limit's parts without Ray: the buckets and one actor's permit pool."""

from __future__ import annotations

import asyncio
import time

import pytest

from loom_ray._bucket import BucketGrant, TokenBuckets
from loom_ray._permits import PermitPool


def test_buckets_grant_in_bulk_up_to_the_burst() -> None:
    buckets = TokenBuckets(rpm=6000, tpm=None)  # 100/s, a burst of 50
    grant = buckets.take(1, 200, 0, 0)
    assert grant.requests == 50 and grant.wait == 0.0
    empty = buckets.take(1, 10, 0, 0)
    assert empty.requests == 0 and 0.0 < empty.wait <= 0.011


def test_an_oversize_token_need_is_granted_from_a_full_bucket() -> None:
    buckets = TokenBuckets(rpm=None, tpm=600)  # a tpm bucket of 5 tokens
    grant = buckets.take(0, 0, 50, 50)
    assert grant.tokens == 50  # granted once, leaving a debt
    later = buckets.take(0, 0, 1, 1)
    assert later.tokens == 0 and later.wait > 4.0


def test_a_pause_stops_every_grant() -> None:
    buckets = TokenBuckets(rpm=6000, tpm=None)
    buckets.pause(5.0)
    grant = buckets.take(1, 1, 0, 0)
    assert grant.requests == 0 and 4.9 < grant.wait <= 5.0


async def test_the_pool_makes_one_round_trip_per_bulk() -> None:
    buckets = TokenBuckets(rpm=60_000, tpm=None)  # a bulk of 100 permits

    async def take(*args: int) -> BucketGrant:
        return buckets.take(*args)

    pool = PermitPool(take, 60_000, None)
    await asyncio.gather(*(pool.acquire() for _ in range(300)))
    assert pool.fetches <= 5  # about 300 / 100, plus the waits of a burst-limited bucket
    assert buckets.granted_requests >= 300


async def test_the_pool_honours_the_rate() -> None:
    buckets = TokenBuckets(rpm=1200, tpm=None)  # 20/s, burst 10

    async def take(*args: int) -> BucketGrant:
        return buckets.take(*args)

    pool = PermitPool(take, 1200, None)
    start = time.monotonic()
    await asyncio.gather(*(pool.acquire() for _ in range(30)))
    # 10 at once, then 20 more at 19.6/s.
    assert time.monotonic() - start == pytest.approx(20 / 19.6, abs=0.35)


async def test_tokens_are_corrected_after_the_call() -> None:
    buckets = TokenBuckets(rpm=None, tpm=6000)  # bulk 10 tokens, burst 50

    async def take(*args: int) -> BucketGrant:
        return buckets.take(*args)

    pool = PermitPool(take, None, 6000)
    await pool.acquire(40)
    pool.record_usage(40, 10)  # 30 tokens back to the pool
    fetches = pool.fetches
    await pool.acquire(30)
    assert pool.fetches == fetches


async def test_a_limited_backend_takes_a_permit_per_call_and_shares_a_429() -> None:
    from loom_backends.testing import FakeBackend, FakeReply, RecordedRequest
    from loom_protocol import BackendError, ChatRequest, Message
    from loom_ray._limited import LimitedBackend

    seen: list[str] = []

    def answer(req: RecordedRequest) -> str | FakeReply:
        seen.append(req.body["model"])
        if req.last_user_text == "busy":
            return FakeReply(status=429, headers={"Retry-After": "3"})
        return '{"ok": true}'

    buckets = TokenBuckets(rpm=6000, tpm=60_000)
    pauses: list[float] = []

    async def take(*args: int) -> BucketGrant:
        return buckets.take(*args)

    pool = PermitPool(take, 6000, 60_000)
    backend = LimitedBackend(
        FakeBackend(answer), "inner-model", pool, pauses.append, count_tokens=True
    )

    def request(text: str) -> ChatRequest:
        return ChatRequest(model="anthropic/outer", messages=[Message(role="user", content=text)])

    await backend.acomplete(request("hello"))
    assert seen == ["inner-model"]  # the name the resolved backend expects
    assert buckets.granted_requests >= 1 and pool.fetches == 1
    with pytest.raises(BackendError):
        await backend.acomplete(request("busy"))
    assert pauses == [3.0]  # every actor of the pipeline pauses, through the shared buckets
    await backend.aclose()


def test_the_buckets_refuse_nothing_when_no_limit_is_counted() -> None:
    buckets = TokenBuckets(rpm=None, tpm=None)
    assert buckets.take(0, 0, 0, 0) == BucketGrant(0, 0, 0.0)
