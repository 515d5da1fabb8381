"""The claims of a batch that shares its task: claimed tasks in, held ones read from the store.

A :class:`ClaimFeed` runs for a batch once it shares its task with other workers (see
``_lease.py``). New tasks wait in ``pending``; a filler claims them a batch per round trip
whenever the work queue holds less than about a second of this worker's calls (measured as the
queue drains, capped by the worker's share of ``rpm``), up to two claims at once, from random
places among the pending tasks (every worker pulls the same inputs in the same order). What is
got goes to the work queue; what another worker holds waits in ``held``, where a poller reads
the results others committed (cache hits, not calls) and, once per quarter lease, tries to
claim the rest: a claim that expired (its worker died or stopped beating) or was released is
taken over.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loom_store import ResultStore

from ._persist import ResultCache
from ._rateshare import RateShare

if TYPE_CHECKING:
    from ._feeder import Slot

__all__ = ["ClaimFeed"]

_log = logging.getLogger("loom.engine")

#: Held inputs whose results are looked up per poll (in turn: those not found go last).
_POLL_IDS = 1024
_POLL_MIN_S = 0.25
_POLL_MAX_S = 1.0
#: How often the claim filler looks whether the work queue runs low.
_FILL_S = 0.005
#: Claims under way at once, at most, per batch.
_CLAIMS_AT_ONCE = 2
#: Seconds of this worker's calls its claimed queue holds, and the least it holds.
_DEPTH_S = 1.0
_MIN_DEPTH = 4


class ClaimFeed:
    """Feeds a shared batch's work queue with claimed tasks (see the module docstring).

    Args:
        cache: The store view of the batch's task and configuration.
        worker_id: This worker's id in the store's registry.
        lease_s: How long a claim lives without a heartbeat.
        work: The batch's work queue.
        max_workers: The batch's calls in flight (the largest claim is four times that).
        finish: Delivers a task's result (a held input's result read from the store).
        fail: Ends the batch with an error (a claim that failed).
        share: The loom's rate limits, divided among the task's live workers.
    """

    def __init__(
        self,
        cache: ResultCache,
        worker_id: str,
        lease_s: float,
        work: asyncio.Queue[Slot],
        max_workers: int,
        finish: Callable[[Slot, Any], None],
        fail: Callable[[BaseException], None],
        share: RateShare | None,
    ) -> None:
        self._cache = cache
        self._store: ResultStore = cache.store
        self._task = cache.task_name
        self._config = cache.config_fp
        self.worker_id = worker_id
        self._lease = lease_s
        self._work = work
        self._finish = finish
        self._fail = fail
        self._share = share
        self._random = random.Random()
        #: Tasks to claim, and tasks other workers hold (by task id).
        self.pending: deque[Slot] = deque()
        self.held: dict[str, Slot] = {}
        #: Tasks in claims under way.
        self.claiming = 0
        # Claimed tasks queued (or being claimed) below which another claim starts, and the
        # size of a claim: about a second of this worker's calls, so that no worker hoards
        # inputs (under a rate limit a worker calls a few a second) and a round trip serves
        # many (at full speed, up to 4 x max_workers).
        self._max_depth = 4 * max_workers
        self._depth = min(max_workers, self._max_depth)
        self._queued = 0  # claimed tasks ever put on the work queue
        self._drained_at = (0.0, 0)  # (when, tasks taken from the queue by then)
        self._wake = asyncio.Event()
        self._paused = False
        # Counters for the log line of a shared batch's end.
        self._claims = 0
        self._claimed = 0
        self._polls = 0
        self._read = 0

    def start(self) -> list[asyncio.Task[None]]:
        """Start the filler and the poller on the running loop; the caller cancels them."""
        return [
            asyncio.create_task(self._fill(), name="loom-claim-fill"),
            asyncio.create_task(self._poll(), name="loom-claim-poll"),
        ]

    def add(self, slots: list[Slot], *, first: bool = False) -> None:
        """Tasks to claim (``first``: before the others, in their order)."""
        if first:
            self.pending.extendleft(reversed(slots))
        else:
            self.pending.extend(slots)
        self._wake.set()

    def pause(self) -> None:
        """Claim nothing until :meth:`resume` (this worker's claims may have expired)."""
        self._paused = True

    def resume(self) -> None:
        """Claim again."""
        self._paused = False
        self._wake.set()

    def summary(self) -> str:
        """What the feed did, for the log line of the batch's end."""
        return (
            f"{self._claims} claim round trips got {self._claimed} inputs; {self._read} results "
            f"of other workers read in {self._polls} polls, {len(self.held)} inputs still held "
            "by others"
        )

    # -- claims ----------------------------------------------------------------------------

    async def _claim(self, slots: list[Slot]) -> list[Slot]:
        """Claim ``slots``; the ones got (the rest are held by others)."""
        got = await asyncio.to_thread(
            self._store.claim,
            self._task,
            self._config,
            self.worker_id,
            [slot.prepared.task_id for slot in slots],
            self._lease,
        )
        self._claims += 1
        self._claimed += len(got)
        return [slot for slot in slots if slot.prepared.task_id in got]

    def _next_batch(self) -> list[Slot]:
        """Take a batch of pending tasks to claim, from a random place among them.

        Every worker pulls the same inputs in the same order: claiming from the head, they
        would all ask for the same ids at once and all but one get none (a wasted round trip
        each). From random places, their claims rarely overlap.
        """
        pending = self.pending
        count = min(len(pending), self._depth)
        start = self._random.randrange(len(pending) - count + 1)
        pending.rotate(-start)
        batch = [pending.popleft() for _ in range(count)]
        pending.rotate(start)
        return batch

    async def _fill(self) -> None:
        """Keep the work queue topped up with claimed tasks, a batch per round trip.

        Up to :data:`_CLAIMS_AT_ONCE` claims are under way at a time: on a busy database a
        round trip takes a large part of a second, during which the queue must not run dry.
        """
        claims: set[asyncio.Task[None]] = set()
        try:
            while True:
                if not self.pending or self._paused:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                self._measure()
                if (
                    self._work.qsize() + self.claiming >= self._depth
                    or len(claims) >= _CLAIMS_AT_ONCE
                ):
                    await asyncio.sleep(_FILL_S)
                    continue
                batch = self._next_batch()
                self.claiming += len(batch)
                claim = asyncio.create_task(self._claim_into_queue(batch))
                claims.add(claim)
                claim.add_done_callback(claims.discard)
        finally:
            for claim in claims:
                claim.cancel()

    def _measure(self) -> None:
        """Update the claim depth from how fast the workers take claimed tasks (each 0.5 s)."""
        now = time.monotonic()
        taken = self._queued - self._work.qsize()
        when, before = self._drained_at
        if now - when < 0.5:
            return
        self._drained_at = (now, taken)
        if when == 0.0:
            return
        depth = round((taken - before) / (now - when) * _DEPTH_S)
        if self._work.empty():  # the workers waited for claims: that rate was the supply's
            depth = max(depth, 2 * self._depth)
        limit = self._share.calls_per_s() if self._share is not None else None
        if limit is not None:  # under a rate limit a worker calls only its share
            depth = min(depth, round(limit * _DEPTH_S))
        self._depth = max(_MIN_DEPTH, min(self._max_depth, depth))

    def _queue(self, slot: Slot) -> None:
        self._queued += 1
        self._work.put_nowait(slot)

    async def _claim_into_queue(self, batch: list[Slot]) -> None:
        """Claim ``batch``: what is got goes to the work queue, the rest is held by others."""
        try:
            started = time.monotonic()
            got = await self._claim(batch)
            _log.debug(
                "claim: %d of %d in %.1f ms; queue %d, pending %d, held %d",
                len(got),
                len(batch),
                (time.monotonic() - started) * 1000,
                self._work.qsize(),
                len(self.pending),
                len(self.held),
            )
            got_ids = {slot.prepared.task_id for slot in got}
            for slot in batch:
                if slot.prepared.task_id in got_ids:
                    self._queue(slot)
                else:
                    self.held[slot.prepared.task_id] = slot
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._fail(exc)
        finally:
            self.claiming -= len(batch)

    async def _poll(self) -> None:
        """Deliver held inputs whose results others committed; take over expired claims."""
        loop = asyncio.get_running_loop()
        interval = _POLL_MIN_S
        claim_every = max(_POLL_MIN_S, self._lease / 4)
        last_claim = loop.time()
        try:
            while True:
                await asyncio.sleep(interval)
                if not self.held:
                    interval = _POLL_MIN_S
                    continue
                # In turn: the ids looked at now go last; those found are delivered below.
                ids = list(itertools.islice(self.held, _POLL_IDS))
                slots = [self.held.pop(task_id) for task_id in ids]
                self.held.update(zip(ids, slots, strict=True))
                hits = await self._cache.lookup(
                    [slot.prepared.task_id for slot in slots],
                    [slot.prepared.data for slot in slots],
                )
                missing: list[Slot] = []
                for slot, hit in zip(slots, hits, strict=True):
                    if hit is None:
                        missing.append(slot)
                    elif self.held.pop(slot.prepared.task_id, None) is not None:
                        self._finish(slot, hit)
                found = len(slots) - len(missing)
                _log.debug("poll: %d of %d held found", found, len(slots))
                self._polls += 1
                self._read += found
                if missing and loop.time() - last_claim >= claim_every:
                    last_claim = loop.time()
                    for slot in await self._claim(missing):
                        if self.held.pop(slot.prepared.task_id, None) is not None:
                            self._queue(slot)
                            found += 1
                interval = _POLL_MIN_S if found else min(_POLL_MAX_S, interval * 2)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._fail(exc)
