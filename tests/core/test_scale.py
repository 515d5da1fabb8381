"""Bounded memory and linear bookkeeping, in process (CallableBackend, no HTTP)."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from loom_backends import CallableBackend
from loom_core import TaskLoom
from loom_protocol import ChatRequest


async def instant(request: ChatRequest) -> str:
    return '{"ok": true}'


def make(tmp_path: Path) -> TaskLoom[dict]:  # type: ignore[type-arg]
    return TaskLoom(
        "local",
        "{{ text }}",
        response_model=dict,
        backend=CallableBackend(instant),
        db_path=tmp_path / "scale.db",
    )


class PeakRSS:
    """Samples this process's RSS in a thread; the peak over a block of code."""

    def __init__(self) -> None:
        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRSS:
        gc.collect()
        self.base = self.process.memory_info().rss
        self.peak = self.base
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.01)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def inputs(n: int) -> Iterator[dict[str, str]]:
    for i in range(n):
        yield {"text": f"document number {i} " + "x" * 200}


@pytest.mark.slow
@pytest.mark.parametrize("ordered", [False, True])
def test_a_generator_of_200k_inputs_streams_in_bounded_memory(
    tmp_path: Path, ordered: bool
) -> None:
    n = 200_000
    with make(tmp_path) as loom:
        loom.map(inputs(2_000), max_workers=32)  # warm up allocators and imports
        count = 0
        with PeakRSS() as rss:
            for result in loom.stream(inputs(n), max_workers=32, ordered=ordered):
                assert result.is_success
                count += 1
    assert count == n
    assert rss.growth_mb < 100, f"peak RSS grew by {rss.growth_mb:.1f} MB"


@pytest.mark.slow
def test_bookkeeping_is_linear(tmp_path: Path) -> None:
    with make(tmp_path) as loom:
        loom.map(list(inputs(1_000)), max_workers=32)  # warm-up

        def timed(n: int) -> float:
            # CPU time of this process (every thread of the loom's), not wall time: the work
            # of other processes on the machine (a parallel test run) does not count.
            batch = list(inputs(n))
            started = time.process_time()
            result = loom.map(batch, max_workers=32)
            elapsed = time.process_time() - started
            assert len(result) == n
            return elapsed

        small = min(timed(2_000) for _ in range(2))
        large = timed(20_000)
    assert large < 15 * small, f"20k took {large:.2f} s of CPU, 2k took {small:.2f} s"
