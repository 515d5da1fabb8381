"""The sync and async twins share one core: they agree on misuse, on errors and on warnings."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from loom_backends.testing import FakeBackend
from loom_core import LoomConfigWarning, LoomUsageError, TaskLoom
from loom_protocol import ErrorCode, StreamEvent

from .conftest import LoomFactory


def _shape(events: list[StreamEvent]) -> list[tuple[str, Any]]:
    """Each event's type, and for a batch_error its code (what the consumer acts upon)."""
    return [
        (event.type, event.error.code if event.type == "batch_error" else None)  # type: ignore[union-attr]
        for event in events
    ]


async def _all(events: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [event async for event in events]


async def test_a_store_that_cannot_open_is_the_same_batch_error_in_both_event_streams(
    make_loom: LoomFactory, fake: FakeBackend, tmp_path: Path
) -> None:
    # A file where the store's folder should be: opening the store fails, the first time a
    # task_name needs it, inside the batch.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    loom = make_loom(fake, db_path=blocker / "loom.db")
    sync_events = list(loom.stream_events(["a", "b"], task_name="t"))
    async_events = await _all(loom.astream_events(["a", "b"], task_name="t"))
    assert _shape(sync_events) == _shape(async_events)
    assert _shape(sync_events) == [("batch_start", None), ("batch_error", ErrorCode.STORE_ERROR)]
    assert blocker.read_text() == "x"  # nothing written over the user's file


async def test_an_input_iterable_that_raises_ends_both_event_streams_alike(
    make_loom: LoomFactory, fake: FakeBackend
) -> None:
    def broken() -> Iterator[str]:
        yield "one"
        raise ValueError("the source broke")

    loom = make_loom(fake)
    sync_events = list(loom.stream_events(broken()))
    async_events = await _all(loom.astream_events(broken()))
    assert _shape(sync_events) == _shape(async_events)
    assert _shape(sync_events)[-1] == ("batch_error", ErrorCode.INTERNAL)
    assert "the source broke" in sync_events[-1].error.message  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", ["a single string", {"text": "a dict"}, 42])
async def test_misuse_raises_at_the_call_in_every_twin(
    make_loom: LoomFactory, fake: FakeBackend, bad: Any
) -> None:
    loom = make_loom(fake)
    for method in (loom.stream, loom.stream_events, loom.astream, loom.astream_events):
        with pytest.raises(LoomUsageError, match="iterable"):
            method(bad)  # raised here: before anything is iterated
    with pytest.raises(LoomUsageError, match="iterable"):
        loom.map(bad)
    with pytest.raises(LoomUsageError, match="iterable"):
        await loom.amap(bad)


async def test_a_closed_loom_refuses_every_twin_at_the_call(
    make_loom: LoomFactory, fake: FakeBackend
) -> None:
    loom = make_loom(fake)
    loom.close()
    for method in (loom.stream, loom.stream_events, loom.astream, loom.astream_events):
        with pytest.raises(LoomUsageError, match="closed"):
            method(["x"])
    with pytest.raises(LoomUsageError, match="closed"):
        await loom.amap(["x"])


@pytest.mark.parametrize("bad", [0, True, 1.5])
def test_max_workers_is_checked_at_the_call(
    make_loom: LoomFactory, fake: FakeBackend, bad: Any
) -> None:
    loom = make_loom(fake)
    for method in (loom.stream, loom.stream_events, loom.astream, loom.astream_events):
        with pytest.raises(LoomUsageError, match="max_workers must be an int >= 1"):
            method(["x"], max_workers=bad)


def _switch_config(tmp_path: Path, fake: FakeBackend) -> TaskLoom[Any]:
    """A loom whose task_name already holds results of another configuration."""
    with TaskLoom("m", "first {{ text }}", backend=fake, db_path=tmp_path / "w.db") as first:
        first.map(["a"], task_name="switch")
    return TaskLoom("m", "second {{ text }}", backend=fake, db_path=tmp_path / "w.db")


@pytest.mark.parametrize("how", ["map", "stream", "stream_events", "process"])
def test_the_config_warning_points_at_the_users_call(
    tmp_path: Path, fake: FakeBackend, how: str
) -> None:
    # The sync API runs the batch on the loom's own thread; the warning still names this line.
    with _switch_config(tmp_path, fake) as loom, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if how == "process":
            loom.process("b", task_name="switch")  # map inside loom-core: still this line
        else:
            list(getattr(loom, how)(["b"], task_name="switch"))
    [warning] = [w for w in caught if issubclass(w.category, LoomConfigWarning)]
    assert warning.filename == __file__


async def test_the_config_warning_points_at_the_users_call_async(
    tmp_path: Path, fake: FakeBackend
) -> None:
    with _switch_config(tmp_path, fake) as loom, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        [r async for r in loom.astream(["b"], task_name="switch")]
    [warning] = [w for w in caught if issubclass(w.category, LoomConfigWarning)]
    assert warning.filename == __file__


def test_the_config_warning_from_a_module_run_with_dash_m(tmp_path: Path) -> None:
    # A user's job run as `python -m pkg.job`: its __main__ module's loader cannot give the
    # source, and the warning must not turn into a failed batch (it did, once).
    package = tmp_path / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "job.py").write_text(
        "import json, sys, warnings\n"
        "from loom_backends.testing import FakeBackend\n"
        "from loom_core import TaskLoom\n"
        "fake = FakeBackend(lambda req: json.dumps({'text': req.last_user_text}))\n"
        "for template in ('first {{ text }}', 'second {{ text }}'):\n"
        "    with TaskLoom('m', template, backend=fake, db_path=sys.argv[1]) as loom:\n"
        "        with warnings.catch_warnings(record=True) as caught:\n"
        "            warnings.simplefilter('always')\n"
        "            batch = loom.map(['a', 'b'], task_name='job')\n"
        "        assert all(r.is_success for r in batch), [r.error for r in batch]\n"
        "        print(len(caught))\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "userpkg.job", str(tmp_path / "job.db")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "1"]
