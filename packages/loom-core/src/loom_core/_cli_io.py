"""The CLI's files: inputs read lazily from JSONL or CSV, results written as they finish.

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
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel

from loom_protocol import Error, ErrorCode, TaskResult, fingerprint

__all__ = [
    "CsvResultWriter",
    "InputReadError",
    "InputSource",
    "JsonlResultWriter",
    "ResultWriter",
    "file_format",
    "json_cell",
    "open_output",
]

Format = Literal["jsonl", "csv"]

#: The columns that describe a task rather than its data (``BatchResult.to_records`` order).
META_COLUMNS = ("index", "task_id", "is_success", "cached", "error_code", "error", "attempts")

_MAX_RAW_SHOWN = 500
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class InputReadError(Exception):
    """The input file cannot be read any further (I/O error, bytes that are not UTF-8 in a CSV)."""


def file_format(path: str, *, role: str) -> Format:
    """The format of ``path`` from its extension (``-`` is JSONL on stdin or stdout).

    Raises:
        ValueError: The extension is neither ``.jsonl`` nor ``.csv`` (the message names ``role``).
    """
    if path == "-":
        return "jsonl"
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    raise ValueError(
        f"{role} {path!r} must end in .jsonl (or .ndjson) or .csv, got {suffix or 'no extension'!r}"
    )


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

    def record_index(self, engine_index: int) -> int:
        """The position in the file (0-based, among records) of the engine's ``engine_index``."""
        with self._lock:
            k = bisect.bisect_right(self._starts, engine_index) - 1
            return engine_index + (self._offsets[k] if k >= 0 else 0)

    def records(self) -> Iterator[dict[str, Any] | str]:
        """Yield every usable record; queue a failed result for each unusable one.

        Raises:
            InputReadError: The file cannot be read further (also kept in :attr:`error`).
        """
        records = self._jsonl() if self.format == "jsonl" else self._csv()
        good = skipped = 0
        try:
            for record_index, item in enumerate(records):
                if isinstance(item, _Bad):
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
        except InputReadError as exc:
            self.error = exc
            raise

    def _jsonl(self) -> Iterator[dict[str, Any] | str | _Bad]:
        file: IO[bytes]
        if self.path == "-":
            if self._stdin is None:
                raise InputReadError("stdin is not available")
            file = self._stdin
        else:
            file = open(self.path, "rb")  # noqa: SIM115 - closed in the finally below
        try:
            line_no = 0
            while True:
                try:
                    raw = file.readline()
                except OSError as exc:
                    raise InputReadError(f"line {line_no + 1}: {exc}") from exc
                if not raw:
                    return
                line_no += 1
                if not raw.strip():
                    continue
                yield _parse_jsonl_line(raw, line_no)
        finally:
            if file is not self._stdin:
                file.close()

    def _csv(self) -> Iterator[dict[str, Any] | _Bad]:
        with open(self.path, newline="", encoding="utf-8-sig") as text:
            reader = csv.DictReader(text)
            try:
                for row in reader:
                    line = reader.line_num
                    width = len(reader.fieldnames or ())
                    if None in row:
                        extra = len(row[None])
                        yield _Bad(line, f"row has {width + extra} fields, the header {width}", row)
                    elif any(value is None for value in row.values()):
                        present = sum(value is not None for value in row.values())
                        yield _Bad(line, f"row has {present} fields, the header {width}", row)
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


def _parse_jsonl_line(raw: bytes, line_no: int) -> dict[str, Any] | str | _Bad:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _Bad(line_no, f"not valid UTF-8 ({exc.reason})", raw.decode("utf-8", "replace"))
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        return _Bad(line_no, f"not valid JSON ({exc})", text.rstrip("\r\n"))
    except RecursionError:  # valid JSON nested thousands deep: one bad record, not a crash
        return _Bad(line_no, "JSON nested too deeply to read", text.rstrip("\r\n"))
    if isinstance(value, dict | str):
        return value
    return _Bad(
        line_no, f"expected a JSON object or string, got {_json_kind(value)}", text.rstrip("\r\n")
    )


class _Bad:
    """A record that cannot be an input, with why."""

    __slots__ = ("line", "raw", "reason")

    def __init__(self, line: int, reason: str, raw: Any) -> None:
        self.line = line
        self.reason = reason
        self.raw = raw if isinstance(raw, str) else _dumps({str(k): v for k, v in raw.items()})

    def result(self) -> TaskResult[Any]:
        shown = self.raw if len(self.raw) <= _MAX_RAW_SHOWN else self.raw[:_MAX_RAW_SHOWN] + "..."
        return TaskResult(
            task_id=fingerprint({"invalid_input": shown}),
            is_success=False,
            error=Error(code=ErrorCode.INPUT_INVALID, message=f"line {self.line}: {self.reason}"),
            input_data={"line": self.line, "raw": shown},
        )


def json_cell(value: Any) -> Any:
    """A CSV cell: scalars as they are, lists and objects as compact JSON text."""
    if isinstance(value, dict | list | tuple):
        return _dumps(value)
    return value


class ResultWriter:
    """Writes one line per result, flushed at once (a crash loses no line already written)."""

    def __init__(self, file: IO[str]) -> None:
        self._file = file
        self.written = 0

    def write(self, index: int, result: TaskResult[Any]) -> None:
        """Write ``result`` of the input at ``index``."""
        self._write(index, result)
        self._file.flush()
        self.written += 1

    def _write(self, index: int, result: TaskResult[Any]) -> None:
        raise NotImplementedError


class JsonlResultWriter(ResultWriter):
    """One JSON object per line: ``{"index": i, ...TaskResult.model_dump(mode="json")}``."""

    def _write(self, index: int, result: TaskResult[Any]) -> None:
        self._file.write(_dumps({"index": index, **result.model_dump(mode="json")}) + "\n")


class CsvResultWriter(ResultWriter):
    """The flat records of ``BatchResult.to_records`` plus ``index``, under a fixed header.

    A stream cannot grow its header, so the data columns are fixed up front: a pydantic model's
    fields; for text and for dicts (whose keys are unknown until the answers come) one column
    ``data`` (dicts as JSON text). Lists and nested objects in a cell are JSON text.

    Args:
        file: The text stream (opened with ``newline=""``).
        model: The response model, or ``None``.
    """

    def __init__(self, file: IO[str], model: type[BaseModel] | None) -> None:
        super().__init__(file)
        self._model = model
        data_columns = list(model.model_fields) if model is not None else ["data"]
        self._data_columns = [
            f"data.{name}" if name in META_COLUMNS else name for name in data_columns
        ]
        self._csv = csv.DictWriter(
            file, [*META_COLUMNS, *self._data_columns], extrasaction="ignore"
        )
        self._csv.writeheader()
        file.flush()

    def _write(self, index: int, result: TaskResult[Any]) -> None:
        record: dict[str, Any] = {
            "index": index,
            "task_id": result.task_id,
            "is_success": result.is_success,
            "cached": result.cached,
            "error_code": result.error.code.value if result.error else None,
            "error": result.error.message if result.error else None,
            "attempts": result.attempts,
        }
        data = result.data
        if isinstance(data, BaseModel):
            for key, value in data.model_dump(mode="json").items():
                record[f"data.{key}" if key in META_COLUMNS else key] = json_cell(value)
        elif data is not None:
            record["data"] = json_cell(data)
        self._csv.writerow(record)


def open_output(path: str, stdout: IO[str]) -> tuple[IO[str], bool]:
    """Open an output path for writing (``-`` is ``stdout``); the bool says whether to close it.

    Raises:
        OSError: The file cannot be created.
    """
    if path == "-":
        return stdout, False
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"the folder {directory!r} does not exist")
    return open(path, "w", encoding="utf-8", newline=""), True  # the caller closes it
