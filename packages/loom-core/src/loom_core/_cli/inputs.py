"""The CLI's inputs: records read lazily from a JSONL or CSV file, bad ones set aside.

An input file is never loaded whole: :class:`InputSource` yields one record at a time to the
engine (which pulls from the loom's loop thread). A record that cannot be an input (a JSONL
line that is not JSON, a CSV row whose width does not match the header) is not handed to the
engine at all: it becomes a failed ``input_invalid`` result naming the line, queued for the
command to write, and the numbering is kept so that every result carries the position of its
input in the file.
"""

from __future__ import annotations

import bisect
import csv
import json
import queue
import threading
from collections.abc import Iterator
from typing import IO, Any

from loom_protocol import Error, ErrorCode, TaskResult, fingerprint

from .files import Format, file_format
from .writers import compact_json

__all__ = ["BadRecord", "InputReadError", "InputSource"]

_MAX_RAW_SHOWN = 500


class InputReadError(Exception):
    """The input file cannot be read any further (I/O error, bytes that are not UTF-8 in a CSV)."""


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; an input holding them could not be fingerprinted.
    raise ValueError(f"{name} is not valid JSON")


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null" if value is None else type(value).__name__


class InputSource:
    """The records of an input file, pulled lazily, with bad records set aside.

    Args:
        path: A ``.jsonl`` or ``.csv`` path, or ``-`` for JSONL on ``stdin``.
        stdin: The binary stream read for ``-``.

    Raises:
        ValueError: The extension is not supported.
        OSError: The file cannot be opened.
    """

    def __init__(self, path: str, stdin: IO[bytes] | None = None) -> None:
        self.path = path
        self.format: Format = file_format(path, role="input")
        self._stdin = stdin
        # Lines of stdin read ahead by first_record(), replayed by the real pass.
        self._pushback: list[bytes] = []
        self._last_line = 0
        if path != "-":
            # Fail now (exit 2) rather than from the loop thread once the run has started.
            with open(path, "rb"):
                pass
        self.failures: queue.SimpleQueue[tuple[int, TaskResult[Any]]] = queue.SimpleQueue()
        self.error: InputReadError | None = None
        # Engine index -> record index: after the good record numbered starts[k] (and until
        # the next breakpoint), offsets[k] bad records have been skipped. O(bad records) memory.
        self._starts: list[int] = []
        self._offsets: list[int] = []
        self._lock = threading.Lock()

    def count(self) -> int | None:
        """How many records the file holds (a cheap first pass), or ``None`` for stdin."""
        if self.path == "-":
            return None
        try:
            if self.format == "jsonl":
                with open(self.path, "rb") as file:
                    return sum(1 for line in file if line.strip())
            with open(self.path, newline="", encoding="utf-8-sig") as text:
                return sum(1 for _ in csv.DictReader(text))
        except (OSError, UnicodeDecodeError, csv.Error):
            return None  # the real pass reports the problem with its line number

    def first_record(self) -> tuple[int, dict[str, Any] | str] | None:
        """The first usable record and its line number, or ``None`` when there is none.

        For a file this is a separate read; for stdin the lines read are kept and replayed
        by :meth:`records`, so nothing is lost.
        """
        try:
            for item in self._raw(peek=True):
                if not isinstance(item, BadRecord):
                    return self._last_line, item
        except InputReadError:
            return None  # the real pass reports it, with what finished before
        return None

    def input_keys(self) -> list[str]:
        """The keys of the inputs, in order of first appearance (the columns of a CSV).

        JSONL: a pass over the file (a string line is the key ``text``); stdin: the keys of
        the first usable record only (stdin cannot be read twice).
        """
        if self.format == "csv":
            try:
                with open(self.path, newline="", encoding="utf-8-sig") as text:
                    return list(csv.DictReader(text).fieldnames or [])
            except (OSError, UnicodeDecodeError, csv.Error):
                return []
        if self.path == "-":
            first = self.first_record()
            if first is None:
                return []
            return ["text"] if isinstance(first[1], str) else [str(k) for k in first[1]]
        keys: dict[str, None] = {}
        try:
            for item in self._raw(peek=True):
                if isinstance(item, str):
                    keys["text"] = None
                elif isinstance(item, dict):
                    keys.update(dict.fromkeys(str(k) for k in item))
        except InputReadError:
            pass
        return list(keys)

    def record_index(self, engine_index: int) -> int:
        """The position in the file (0-based, among records) of the engine's ``engine_index``."""
        with self._lock:
            k = bisect.bisect_right(self._starts, engine_index) - 1
            return engine_index + (self._offsets[k] if k >= 0 else 0)

    def items(self) -> Iterator[dict[str, Any] | str | BadRecord]:
        """Every record in file order, usable or not (a :class:`BadRecord`).

        Raises:
            InputReadError: The file cannot be read further (also kept in :attr:`error`).
        """
        try:
            yield from self._raw(peek=False)
        except InputReadError as exc:
            self.error = exc
            raise

    def records(self) -> Iterator[dict[str, Any] | str]:
        """Yield every usable record; queue a failed result for each unusable one.

        Raises:
            InputReadError: The file cannot be read further (also kept in :attr:`error`).
        """
        good = skipped = 0
        for record_index, item in enumerate(self.items()):
            if isinstance(item, BadRecord):
                skipped += 1
                with self._lock:
                    if self._starts and self._starts[-1] == good:
                        self._offsets[-1] = skipped
                    else:
                        self._starts.append(good)
                        self._offsets.append(skipped)
                self.failures.put((record_index, item.result()))
                continue
            good += 1
            yield item

    def _raw(self, *, peek: bool) -> Iterator[dict[str, Any] | str | BadRecord]:
        return self._jsonl(peek=peek) if self.format == "jsonl" else self._csv()

    def _jsonl(self, *, peek: bool) -> Iterator[dict[str, Any] | str | BadRecord]:
        file: IO[bytes]
        if self.path == "-":
            if self._stdin is None:
                raise InputReadError("stdin is not available")
            file = self._stdin
        else:
            file = open(self.path, "rb")  # noqa: SIM115 - closed in the finally below
        replay = [] if peek or self.path != "-" else self._pushback
        try:
            line_no = 0
            while True:
                if peek and self.path == "-" and line_no < len(self._pushback):
                    raw = self._pushback[line_no]
                elif replay:
                    raw = replay.pop(0)
                else:
                    try:
                        raw = file.readline()
                    except OSError as exc:
                        raise InputReadError(f"line {line_no + 1}: {exc}") from exc
                    if peek and self.path == "-" and raw:
                        self._pushback.append(raw)
                if not raw:
                    return
                line_no += 1
                self._last_line = line_no
                if not raw.strip():
                    continue
                yield _parse_jsonl_line(raw, line_no)
        finally:
            if file is not self._stdin:
                file.close()

    def _csv(self) -> Iterator[dict[str, Any] | BadRecord]:
        with open(self.path, newline="", encoding="utf-8-sig") as text:
            reader = csv.DictReader(text)
            try:
                for row in reader:
                    line = reader.line_num
                    self._last_line = line
                    width = len(reader.fieldnames or ())
                    if None in row:
                        extra = len(row[None])
                        yield BadRecord(
                            line, f"row has {width + extra} fields, the header {width}", row
                        )
                    elif any(value is None for value in row.values()):
                        present = sum(value is not None for value in row.values())
                        yield BadRecord(line, f"row has {present} fields, the header {width}", row)
                    else:
                        yield dict(row)
            except UnicodeDecodeError as exc:
                # Decoding runs ahead of the parser by a whole buffer: no line number is exact.
                raise InputReadError(
                    f"after line {reader.line_num}: the file is not valid UTF-8 ({exc.reason});"
                    " save the CSV as UTF-8"
                ) from exc
            except csv.Error as exc:
                raise InputReadError(f"line {reader.line_num}: {exc}") from exc
            except OSError as exc:
                raise InputReadError(f"line {reader.line_num + 1}: {exc}") from exc


def _parse_jsonl_line(raw: bytes, line_no: int) -> dict[str, Any] | str | BadRecord:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return BadRecord(line_no, f"not valid UTF-8 ({exc.reason})", raw.decode("utf-8", "replace"))
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        return BadRecord(line_no, f"not valid JSON ({exc})", text.rstrip("\r\n"))
    except RecursionError:  # valid JSON nested thousands deep: one bad record, not a crash
        return BadRecord(line_no, "JSON nested too deeply to read", text.rstrip("\r\n"))
    if isinstance(value, dict | str):
        return value
    return BadRecord(
        line_no, f"expected a JSON object or string, got {_json_kind(value)}", text.rstrip("\r\n")
    )


class BadRecord:
    """A record that cannot be an input (not JSON, a CSV row of the wrong width), with why."""

    __slots__ = ("line", "raw", "reason")

    def __init__(self, line: int, reason: str, raw: Any) -> None:
        self.line = line
        self.reason = reason
        self.raw = (
            raw if isinstance(raw, str) else compact_json({str(k): v for k, v in raw.items()})
        )

    def result(self) -> TaskResult[Any]:
        """The failed ``input_invalid`` result that stands for this record."""
        shown = self.raw if len(self.raw) <= _MAX_RAW_SHOWN else self.raw[:_MAX_RAW_SHOWN] + "..."
        return TaskResult(
            task_id=fingerprint({"invalid_input": shown}),
            is_success=False,
            error=Error(code=ErrorCode.INPUT_INVALID, message=f"line {self.line}: {self.reason}"),
            input_data={"line": self.line, "raw": shown},
        )
