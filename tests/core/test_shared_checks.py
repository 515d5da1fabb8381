"""loom_core's argument checks (outside the loom itself) are loom_protocol's: a bool is never a
number, and long texts in messages are cut the one way."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from loom_core._images import ImageError, load_image_url
from loom_core._inputs import prepare_input
from loom_core._ratelimit import RateLimiter
from loom_core._retry import asked_wait, backoff_delay
from loom_protocol import LoomUsageError


@pytest.mark.parametrize(
    ("call", "problem"),
    [
        (lambda: backoff_delay(1, base=True), "base must be a finite number >= 0, got True"),
        (lambda: backoff_delay(1, cap=False), "cap must be a finite number >= 0, got False"),
        (lambda: backoff_delay(1, retry_after=True), "retry_after must be a finite number >= 0"),
        (lambda: backoff_delay(1, base="1"), "base must be a finite number >= 0, got '1'"),
        (lambda: RateLimiter(rpm=True), "rpm must be a finite number > 0, got True"),
        (lambda: RateLimiter(tpm=False), "tpm must be a finite number > 0, got False"),
        (lambda: RateLimiter().pause(True), "pause seconds must be a finite number >= 0"),
        (lambda: RateLimiter(tpm=10).try_acquire(True), "tokens must be an int >= 0, got True"),
    ],
)
def test_a_bool_is_refused_where_a_number_is_wanted(
    call: Callable[[], object], problem: str
) -> None:
    with pytest.raises(LoomUsageError, match=problem):
        call()


def test_a_bool_retry_after_asks_for_nothing() -> None:
    assert asked_wait(True) is None
    assert asked_wait(math.nan) is None
    assert asked_wait(2) == 2.0


def test_a_bool_max_bytes_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(LoomUsageError, match="max_bytes must be an int >= 1, got True"):
        load_image_url(str(path), max_bytes=True)


def test_an_image_message_shows_the_end_of_a_long_path(tmp_path: Path) -> None:
    ref = str(tmp_path / ("folder-" * 40) / "missing-cat.png")
    with pytest.raises(ImageError) as info:
        load_image_url(ref)
    assert "missing-cat.png" in str(info.value)
    assert "'..." in str(info.value)
    assert ref not in str(info.value)


class _Unreadable(Mapping[str, Any]):
    """A mapping whose items cannot be read, with a very long reason."""

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("x" * 1000)

    def __len__(self) -> int:
        return 1


def test_an_unreadable_input_is_named_with_a_shortened_reason() -> None:
    failure = prepare_input(_Unreadable()).failure
    assert failure is not None and failure.error is not None
    reason = failure.error.message.removeprefix("the input cannot be used: RuntimeError: ")
    assert reason == "x" * 297 + "..."
