"""The batch-scoped garbage-collector policy: raised while batches run, restored after."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from loom_core._gcpolicy import _RelaxedGC


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    threshold, enabled = gc.get_threshold(), gc.isenabled()
    yield
    gc.set_threshold(*threshold)
    if enabled:
        gc.enable()
    else:
        gc.disable()


def test_raised_while_batches_run_and_restored_after_the_last() -> None:
    gc.set_threshold(700, 10, 10)
    policy = _RelaxedGC()
    policy.enter()
    assert gc.get_threshold() == (50_000, 10, 10)
    policy.enter()  # a second, concurrent batch
    policy.exit()
    assert gc.get_threshold() == (50_000, 10, 10)
    policy.exit()
    assert gc.get_threshold() == (700, 10, 10)


def test_never_lowers_and_leaves_a_disabled_collector_alone() -> None:
    gc.set_threshold(100_000, 10, 10)
    policy = _RelaxedGC()
    policy.enter()
    assert gc.get_threshold() == (100_000, 10, 10)
    policy.exit()
    gc.set_threshold(700, 10, 10)
    gc.disable()
    policy.enter()
    assert gc.get_threshold() == (700, 10, 10)
    policy.exit()


@pytest.mark.parametrize("tuned", [600, 1_000, 10_000])
def test_a_threshold_the_application_set_is_left_alone(tuned: int) -> None:
    # Only CPython's own default is replaced: a host that tuned its collector keeps it.
    gc.set_threshold(tuned, 10, 10)
    policy = _RelaxedGC()
    policy.enter()
    assert gc.get_threshold() == (tuned, 10, 10)
    policy.exit()
    assert gc.get_threshold() == (tuned, 10, 10)


def test_a_change_made_by_the_application_meanwhile_is_kept() -> None:
    gc.set_threshold(700, 10, 10)
    policy = _RelaxedGC()
    policy.enter()
    gc.set_threshold(1234, 5, 5)
    policy.exit()
    assert gc.get_threshold() == (1234, 5, 5)


@pytest.mark.parametrize(("value", "expected"), [("0", 700), ("20000", 20_000), ("junk", 50_000)])
def test_environment_variable(monkeypatch: pytest.MonkeyPatch, value: str, expected: int) -> None:
    monkeypatch.setenv("LOOM_GC_THRESHOLD", value)
    gc.set_threshold(700, 10, 10)
    policy = _RelaxedGC()
    policy.enter()
    assert gc.get_threshold()[0] == expected
    policy.exit()
    assert gc.get_threshold() == (700, 10, 10)
