"""One batch as one of the workers of its task: claims, waiting for others, heartbeats.

Several processes (on one machine with SQLite, on many with PostgreSQL) may run the same task
name at once. A batch with a task name joins the task's workers in the store's registry the
first time one of its inputs needs a call (a batch served wholly from the store never joins):

* **Alone** (no other live worker of the task and configuration): it runs exactly as a single
  process always ran, without a claim: the work queue is fed as before, and the only cost is
  joining, one read of the registry a second and one heartbeat per half lease.
* **Shared** (it found others, or others found it): every input is claimed in the store before
  it is called, a batch of ids per round trip, topping up a short work queue; inputs other
  workers hold are read from the store once committed (``_claimfeed.py``).
* **Alone to shared**: a newcomer registers as sharing and waits until no live worker of the
  task runs alone. A worker running alone sees the newcomer at its next look at the registry
  (about once a second), takes the inputs waiting in its work queue back into ``pending``,
  claims the ones under way, and marks itself sharing in the same transaction.

Heartbeats (a write every half lease) keep this worker live and renew its claims; its claims
whose inputs have a succeeded row are deleted then (the row itself already ended them), and
all of them when the batch ends. Store failures of the heartbeat are logged and retried at the
next beat (the claims expire meanwhile, which costs at most duplicate calls); a claim that
fails ends the batch like any store failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loom_protocol import LoomUsageError, check_positive_number
from loom_store import MAX_LEASE_S, MIN_LEASE_S, ResultStore, WorkerView

from ._claimfeed import ClaimFeed
from ._persist import ResultCache
from ._rateshare import RateShare

if TYPE_CHECKING:
    from ._feeder import Slot
    from ._outbox import Outbox

__all__ = ["DEFAULT_LEASE_S", "TaskLease", "check_lease"]

_log = logging.getLogger("loom.engine")

#: How long a claim lives without a heartbeat: a killed worker's inputs wait this long.
DEFAULT_LEASE_S = 30.0

#: The longest time between two looks at the registry (a newcomer waits about this long).
_LOOK_S = 1.0

_ALONE, _SWITCHING, _SHARED = "alone", "switching", "shared"


def check_lease(lease_s: float) -> float:
    """``lease_s`` as a float, or ``LoomUsageError`` naming what is wrong with it."""
    lease = check_positive_number("lease_s", lease_s, " of seconds", MAX_LEASE_S)
    if lease < MIN_LEASE_S:
        raise LoomUsageError(f"lease_s must be at least {MIN_LEASE_S} seconds, got {lease_s!r}")
    return lease


class TaskLease:
    """This batch's membership among the workers of its task (see the module docstring).

    Args:
        cache: The store view of the batch's task and configuration.
        lease_s: How long a claim and a registration live without a heartbeat.
        work: The batch's work queue (what the workers call).
        outbox: The batch's outbox, whose window a shared batch widens: most of the inputs
            it pulls are called by others, and wait for their results.
        max_workers: The batch's calls in flight (sizes the claims).
        unfinished: The ids of the batch's tasks under way (queued, called, or committing).
        finish: Delivers a task's result (a held input's result read from the store).
        fail: Ends the batch with an error (a claim that failed).
        share: The loom's rate limits, divided among the task's live workers.
    """

    def __init__(
        self,
        cache: ResultCache,
        lease_s: float,
        work: asyncio.Queue[Slot],
        outbox: Outbox,
        max_workers: int,
        unfinished: Callable[[], list[str]],
        finish: Callable[[Slot, Any], None],
        fail: Callable[[BaseException], None],
        share: RateShare | None,
    ) -> None:
        self._store: ResultStore = cache.store
        self._task = cache.task_name
        self._config = cache.config_fp
        self._lease = lease_s
        self._work = work
        self._outbox = outbox
        self._window = outbox.window
        self._unfinished = unfinished
        self._fail = fail
        self._share = share
        self.worker_id = uuid.uuid4().hex
        self._mode: str | None = None
        self._feed = ClaimFeed(
            cache, self.worker_id, lease_s, work, max_workers, finish, fail, share
        )
        # Until when (monotonic) every claim of this worker is surely still its own: the start
        # of its last heartbeat (or of its sharing) plus a lease. Past it (the process was
        # frozen, the database unreachable), queued tasks are claimed again before any call.
        self._valid_until = 0.0
        self._stale = False
        self._refresh = asyncio.Event()
        self._idle_said = False
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def mode(self) -> str | None:
        """``None`` before joining, then ``"alone"``, ``"switching"`` or ``"shared"``."""
        return self._mode

    @property
    def held(self) -> int:
        """Inputs of this batch that other workers hold now."""
        return len(self._feed.held)

    # -- the feeder's side -----------------------------------------------------------------

    async def admit(self, slots: list[Slot]) -> None:
        """Route new tasks: to the work queue when alone, through claims when shared."""
        if self._mode is None:
            await self._join()
        if self._mode == _ALONE:
            for slot in slots:
                self._work.put_nowait(slot)
            return
        self._feed.add(slots)

    def lapsed(self, slot: Slot) -> bool:
        """Whether ``slot``, just taken from the work queue, must not be called now.

        True when this worker's claims may have expired (its heartbeat is late): the slot and
        the rest of the work queue go back to be claimed again after a heartbeat, so that an
        input another worker took over meanwhile is read, not called a second time.
        """
        if self._mode != _SHARED or (not self._stale and time.monotonic() < self._valid_until):
            return False
        if not self._stale:
            self._stale = True
            self._feed.pause()
            _log.warning(
                "task %r: this worker's heartbeat is late (its claims may have expired); "
                "claiming its queued inputs again",
                self._task,
            )
        queued = [slot]
        while not self._work.empty():
            queued.append(self._work.get_nowait())
        self._feed.add(queued, first=True)
        self._refresh.set()
        return True

    # -- joining and leaving ---------------------------------------------------------------

    async def _join(self) -> None:
        view = await asyncio.to_thread(
            self._store.join_task, self._task, self._config, self.worker_id, self._lease
        )
        self._rates(view)
        if view.peers == 0:
            self._mode = _ALONE
        else:
            # Another worker runs this task: wait until none runs alone any more (each sees
            # this one within a second and starts claiming), or until they stop being live.
            while view.solo_peers:
                await asyncio.sleep(0.05)
                view = await asyncio.to_thread(
                    self._store.workers, self._task, self._config, self.worker_id
                )
            self._mode = _SHARED
            self._valid_until = time.monotonic() + self._lease
            self._rates(view)
            self._start_sharing()
        _log.debug("task %r: worker %s joined (%s)", self._task, self.worker_id, self._mode)
        self._tasks.append(asyncio.create_task(self._watch(), name="loom-lease-watch"))

    def _start_sharing(self) -> None:
        self._tasks.extend(self._feed.start())

    async def aclose(self) -> None:
        """Stop, release every claim of this worker and unregister it (a clean exit)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._share is not None:
            self._share.remove(self)
        if self._mode is None:
            return
        _log.info(
            "task %r: worker %s ends (%s): %s",
            self._task,
            self.worker_id,
            self._mode,
            self._feed.summary(),
        )
        try:
            await asyncio.to_thread(
                self._store.leave_task, self._task, self._config, self.worker_id
            )
        except Exception as exc:  # the claims then expire by themselves
            _log.warning("task %r: releasing this worker's claims failed: %s", self._task, exc)

    # -- the registry ----------------------------------------------------------------------

    async def _watch(self) -> None:
        """Look at the registry about once a second; beat every half lease."""
        look = min(_LOOK_S, self._lease / 4)
        next_beat = time.monotonic() + self._lease / 2
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refresh.wait(), look)
            started = time.monotonic()
            idle = self._idle()
            beat = started >= next_beat or self._refresh.is_set() or idle != self._idle_said
            try:
                if beat:
                    view = await asyncio.to_thread(
                        self._store.beat,
                        self._task,
                        self._config,
                        self.worker_id,
                        self._lease,
                        shared=self._mode == _SHARED,
                        idle=idle,
                    )
                else:
                    view = await asyncio.to_thread(
                        self._store.workers, self._task, self._config, self.worker_id
                    )
            except Exception as exc:
                _log.warning("task %r: heartbeat failed (retried): %s", self._task, exc)
                continue
            if beat:
                self._idle_said = idle
                next_beat = started + self._lease / 2
                self._valid_until = started + self._lease
                if self._refresh.is_set():
                    self._refresh.clear()
                    self._stale = False
                    self._feed.resume()
            self._rates(view)
            if self._mode == _ALONE and view.peers:
                await self._switch()

    async def _switch(self) -> None:
        """Alone to shared: queued tasks back to pending, claim those under way, share."""
        self._mode = _SWITCHING  # from now on the feeder's new tasks go to pending
        queued: list[Slot] = []
        while not self._work.empty():
            queued.append(self._work.get_nowait())
        queued_ids = {slot.prepared.task_id for slot in queued}
        under_way = [task_id for task_id in self._unfinished() if task_id not in queued_ids]
        self._feed.add(queued, first=True)
        started = time.monotonic()
        try:
            await asyncio.to_thread(
                self._store.claim,
                self._task,
                self._config,
                self.worker_id,
                under_way,
                self._lease,
                share=True,
            )
        except BaseException as exc:
            self._fail(exc)
            raise
        _log.info(
            "task %r: another worker joined; this one now claims its inputs (%d under way)",
            self._task,
            len(under_way),
        )
        self._valid_until = started + self._lease
        self._mode = _SHARED
        self._outbox.resize(self._window * 2)  # until the next look counts the others
        self._start_sharing()

    def _idle(self) -> bool:
        """Whether this sharing worker has nothing left to call (it waits for others only)."""
        feed = self._feed
        if self._mode != _SHARED or feed.pending or feed.claiming or not self._work.empty():
            return False
        return self._outbox.feed_done and len(self._unfinished()) <= len(feed.held)

    def _rates(self, view: WorkerView) -> None:
        if self._share is not None:
            self._share.update(self, view.task_workers)
        if self._mode == _SHARED:
            # Of the inputs this worker pulls, about one in (peers + 1) is its own to call: a
            # window that many times wider keeps as many calls of its own in reach as alone.
            self._outbox.resize(self._window * (view.peers + 1))
