"""The named Ray actor behind a pipeline-wide limit, found or created by each mapper actor."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import ray
from ray.exceptions import RayActorError

from loom_protocol import LoomUsageError

from ._bucket import BucketGrant, TokenBuckets

__all__ = ["SharedLimit"]

_log = logging.getLogger("loom.ray")

# A bucket actor needs no CPU: it must never take a slot the mappers (or a read task) wait for.
_BucketActor = ray.remote(num_cpus=0)(TokenBuckets)


class SharedLimit:
    """A handle on the named bucket actor ``name`` of the current Ray namespace.

    The first mapper actor to start creates it (``get_if_exists``); the others find it. It is
    not detached, so it ends with the job; should it die first (its owner, the mapper that made
    it, was killed), the next call makes a new one: its buckets start full again, which allows
    at most one burst (half a second of the limit) more.

    Raises:
        LoomUsageError: an actor of that name already runs with other limits (two pipelines
            sharing one ``limit_name`` must agree on rpm and tpm).
    """

    def __init__(self, name: str, rpm: float | None, tpm: float | None) -> None:
        self.name = name
        self.rpm = rpm
        self.tpm = tpm
        self._handle = self._connect()

    def _connect(self) -> Any:
        handle: Any = _BucketActor.options(name=self.name, get_if_exists=True).remote(
            self.rpm, self.tpm
        )
        limits = tuple(ray.get(handle.limits.remote()))
        if limits != (self.rpm, self.tpm):
            raise LoomUsageError(
                f"the shared rate limit {self.name!r} already runs with rpm={limits[0]!r}, "
                f"tpm={limits[1]!r}, not rpm={self.rpm!r}, tpm={self.tpm!r}: pipelines that share "
                "a limit_name must give the same limits (or give each its own limit_name)"
            )
        return handle

    async def take(
        self, need_requests: int, want_requests: int, need_tokens: int, want_tokens: int
    ) -> BucketGrant:
        """Ask the bucket actor for permits (see ``TokenBuckets.take``)."""
        for attempt in range(3):
            try:
                ref = self._handle.take.remote(
                    need_requests, want_requests, need_tokens, want_tokens
                )
                grant: BucketGrant = await asyncio.wrap_future(ref.future())
                return grant
            except RayActorError:
                if attempt == 2:
                    raise
                _log.warning("the shared rate limit %r died; starting a new one", self.name)
                self._handle = await asyncio.to_thread(self._connect)
        raise AssertionError("unreachable")

    def pause(self, seconds: float) -> None:
        """Tell every actor's pool to stop for ``seconds`` (fire and forget)."""
        self._handle.pause.remote(seconds)

    def stats(self) -> dict[str, float]:
        """The bucket actor's counters."""
        stats: dict[str, float] = ray.get(self._handle.stats.remote())
        return stats
