"""Submissions whose outcome is unknown: found and attached, or sent again only once safe."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from loom_core import BatchPolicy
from loom_protocol import BackendError, Error, ErrorCode

from .conftest import FAST, BatchFake, LoomFactory

#: Three lines of someone else's batch (custom_ids without a Loom token).
FOREIGN = [
    b'{"custom_id": "other-%06d", "body": {"model": "m", "messages": '
    b'[{"role": "user", "content": "x"}]}}' % n
    for n in range(3)
]

#: FAST with a 2 s window for matching a batch by its creation time (Anthropic's: no metadata):
#: FAST's 0.25 s from the submit's start is missed when a loaded machine is slow to build the
#: request lines, and the batch is then sent again. A match ends the wait at once; only a
#: submission found missing waits the window out.
WIDE = BatchPolicy(poll_interval=0.001, poll_max=0.01, submit_timeout=1.5, clock_skew=0.5)

LOST = Error(code=ErrorCode.PROVIDER_TIMEOUT, message="read timed out", retryable=True)


def _texts(n: int) -> list[str]:
    return [f"doc {i}" for i in range(n)]


@pytest.mark.parametrize("keeps_metadata", [True, False], ids=["openai-like", "anthropic-like"])
def test_a_created_batch_whose_answer_was_lost_is_attached(
    keeps_metadata: bool, make_loom: LoomFactory
) -> None:
    provider = BatchFake(keeps_metadata=keeps_metadata)
    provider.lose_answer = [BackendError(LOST)]
    loom = make_loom(provider, batch_policy=WIDE)
    result = loom.map(_texts(12), task_name="t", batch=True)
    assert all(r.is_success for r in result)
    assert len(provider.submissions) == 1
    assert provider.calls["alist_batches"] >= 1
    (record,) = loom.batch_status("t", refresh=False).batches
    assert record.batch_id == "batch_00000"
    assert record.tentative is (not keeps_metadata)


@pytest.mark.parametrize("keeps_metadata", [True, False], ids=["openai-like", "anthropic-like"])
def test_a_submit_that_created_nothing_is_sent_again_only_after_the_timeout(
    keeps_metadata: bool, make_loom: LoomFactory
) -> None:
    provider = BatchFake(keeps_metadata=keeps_metadata)
    provider.fail = {"asubmit_batch": [BackendError(LOST)]}
    policy = BatchPolicy(poll_interval=0.01, poll_max=0.02, submit_timeout=0.3, clock_skew=0.1)
    loom = make_loom(provider, batch_policy=policy)
    started = time.monotonic()
    result = loom.map(_texts(5), task_name="t", batch=True)
    assert time.monotonic() - started >= 0.4  # submit_timeout + clock_skew
    assert all(r.is_success for r in result)
    assert len(provider.submissions) == 1
    states = [b.state for b in loom.batch_status("t", refresh=False).batches]
    assert states == ["abandoned", "collected"]


def test_a_tentative_match_that_is_not_ours_is_dropped(make_loom: LoomFactory) -> None:
    """Anthropic keeps no metadata: a foreign batch of the same size, created in the window,
    is attached tentatively; its custom_ids reveal it, and the requests are sent again."""
    provider = BatchFake(keeps_metadata=False)
    provider.fail = {"asubmit_batch": [BackendError(LOST)]}
    loom = make_loom(provider, batch_policy=WIDE)

    # Someone else's batch of the same size appears in the window.
    async def foreign() -> None:
        await provider.asubmit_batch(FOREIGN, metadata={})

    original = provider.alist_batches

    async def listing(**kwargs: Any) -> Any:
        if not provider.batches:
            await foreign()
        return await original(**kwargs)

    provider.alist_batches = listing  # type: ignore[method-assign]
    result = loom.map(_texts(3), task_name="t", batch=True)
    assert all(r.is_success for r in result)
    states = [(b.state, b.batch_id) for b in loom.batch_status("t", refresh=False).batches]
    # Ours (abandoned: never created, resubmitted), the foreign one recorded apart, the
    # resubmission.
    assert sorted(states, key=str) == [
        ("abandoned", "batch_00000"),
        ("abandoned", None),
        ("collected", "batch_00001"),
    ]
    # The foreign batch was read but none of its answers became a result.
    assert [r.data for r in result] == [{"text": t} for t in _texts(3)]


def test_a_tentative_mismatch_finds_the_real_submission_after(make_loom: LoomFactory) -> None:
    """Both exist: a foreign batch of the same size, older, and ours, whose answer was lost.
    The foreign one is attached first, proves foreign, and ours is found: nothing runs twice."""
    provider = BatchFake(keeps_metadata=False)
    loom = make_loom(provider, batch_policy=WIDE)

    async def foreign() -> None:
        await original_submit(FOREIGN, metadata={})

    original_submit = provider.asubmit_batch

    async def submit(encoded: Any, *, metadata: dict[str, str]) -> Any:
        if not provider.batches:
            await foreign()
            provider.lose_answer = [BackendError(LOST)]
        return await original_submit(encoded, metadata=metadata)

    provider.asubmit_batch = submit  # type: ignore[method-assign]
    result = loom.map(_texts(3), task_name="t", batch=True)
    assert [r.data for r in result] == [{"text": t} for t in _texts(3)]
    assert len(provider.submissions) == 2  # the foreign batch and ours, nothing more
    states = sorted((b.state, b.batch_id) for b in loom.batch_status("t", refresh=False).batches)
    assert states == [("abandoned", "batch_00000"), ("collected", "batch_00001")]


def test_interrupting_the_wait_loses_nothing(provider: BatchFake, make_loom: LoomFactory) -> None:
    provider.polls = 10_000
    loom = make_loom(provider)

    async def interrupted() -> None:
        # Interrupted once it waits on its submitted batch (a fixed 0.3 s came too early for
        # a loaded machine to have submitted anything).
        waiting = asyncio.ensure_future(loom.amap(_texts(10), task_name="t", batch=True))
        deadline = time.monotonic() + 30
        while not provider.submissions:
            assert time.monotonic() < deadline and not waiting.done()
            await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(interrupted())
    assert len(provider.submissions) == 1
    provider.polls = 1
    for batch in provider.batches.values():
        batch.polls_left = 1
    result = loom.map(_texts(10), task_name="t", batch=True)
    assert all(r.is_success for r in result)
    assert len(provider.submissions) == 1


def test_two_looms_on_one_task_submit_each_input_once(
    provider: BatchFake, make_loom: LoomFactory
) -> None:
    provider.polls = 3
    first, second = make_loom(provider), make_loom(provider)

    async def both() -> list[Any]:
        return await asyncio.gather(
            first.amap(_texts(30), task_name="t", batch=True),
            second.amap(_texts(40), task_name="t", batch=True),
        )

    a, b = asyncio.run(both())
    assert all(r.is_success for r in [*a, *b])
    sent = [cid for _, ids in provider.submissions for cid in ids]
    assert len(sent) == 40


def test_policy_checks() -> None:
    from loom_core import LoomUsageError

    with pytest.raises(LoomUsageError, match="poll_interval"):
        BatchPolicy(poll_interval=0)
    with pytest.raises(LoomUsageError, match="poll_max"):
        BatchPolicy(poll_interval=10, poll_max=1)
    with pytest.raises(LoomUsageError, match="poll_factor"):
        BatchPolicy(poll_factor=0.5)
    assert FAST.poll_interval < 0.01


def test_cancel_from_another_thread_ends_the_wait(
    provider: BatchFake, make_loom: LoomFactory
) -> None:
    import threading

    provider.polls = 10_000
    loom = make_loom(provider)
    done: list[Any] = []
    worker = threading.Thread(
        target=lambda: done.append(loom.map(_texts(6), task_name="t", batch=True))
    )
    worker.start()
    deadline = time.monotonic() + 30
    while not provider.submissions:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    loom.cancel_batch("t")
    worker.join(timeout=30)
    assert not worker.is_alive()
    (result,) = done
    assert all(r.error is not None and r.error.code == ErrorCode.CANCELLED for r in result)
    assert len(provider.submissions) == 1


def test_closing_the_loom_while_it_waits_keeps_the_job(
    provider: BatchFake, make_loom: LoomFactory
) -> None:
    import threading

    from loom_core import LoomError

    provider.polls = 10_000
    loom = make_loom(provider)
    raised: list[BaseException] = []

    def run() -> None:
        try:
            loom.map(_texts(6), task_name="t", batch=True)
        except LoomError as exc:
            raised.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 30
    while not provider.submissions:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    loom.close()
    worker.join(timeout=30)
    assert raised and "closed" in str(raised[0])
    for batch in provider.batches.values():
        batch.polls_left = 1
    again = make_loom(provider)
    assert all(r.is_success for r in again.map(_texts(6), task_name="t", batch=True))
    assert len(provider.submissions) == 1
