"""The CLI's outputs: rows as JSON lines or CSV, on stdout or in a file replaced once complete.

``loom run`` and ``loom export`` write through these: an :class:`Output` opens the target, and
:func:`row_writer` gives the writer of its format. A CSV's rows are the flat records of
``loom_protocol`` (``TaskResult.to_record``) under a header from ``record_columns``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from .command import CliUsageError
from .files import AtomicOutput, Format, file_format

__all__ = ["CsvRows", "JsonLines", "Output", "RowWriter", "csv_cell", "row_writer"]

#: Compact JSON, non-ASCII kept as it is.
compact_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def csv_cell(value: Any) -> Any:
    """A CSV cell: scalars as they are, lists and objects as compact JSON text."""
    if isinstance(value, dict | list | tuple):
        return compact_json(value)
    return value


class Output:
    """Where a command writes: stdout, or a file written under a temporary name and renamed
    over ``path`` by :meth:`finish` (:class:`~.files.AtomicOutput`).

    Args:
        path: A ``.jsonl`` or ``.csv`` path already checked, or ``-`` for JSONL on stdout.
        stdout: The stream of ``-``.

    Raises:
        CliUsageError: The file cannot be created.
    """

    def __init__(self, path: str, stdout: IO[str]) -> None:
        self.path = path
        self.format: Format = file_format(path, role="output")
        self.atomic: AtomicOutput | None = None
        if path == "-":
            self.file = stdout
        else:
            try:
                self.atomic = AtomicOutput(path)
            except OSError as exc:
                raise CliUsageError(f"cannot write output {path!r}: {exc}") from None
            self.file = self.atomic.file

    @property
    def where(self) -> str:
        """``stdout`` or the path, for messages."""
        return "stdout" if self.atomic is None else self.path

    def finish(self, complete: bool) -> None:
        """Rename the file over the target when ``complete``, else remove it (idempotent).

        Raises:
            CliUsageError: The file could not be written or renamed (the target is untouched).
        """
        if self.atomic is None:
            return
        if not complete:
            self.atomic.discard()
            return
        try:
            self.atomic.commit()
        except OSError as exc:
            raise CliUsageError(f"cannot write output {self.path!r}: {exc}") from None


class RowWriter:
    """Writes one row per record and counts them.

    Args:
        file: The text stream.
        flush_each: Flush after every row (for stdout, read by a pipe as rows come).
    """

    def __init__(self, file: IO[str], *, flush_each: bool = False) -> None:
        self._file = file
        self._flush_each = flush_each
        self.written = 0

    def write(self, record: Mapping[str, Any]) -> None:
        """Write ``record`` as one row."""
        self._write(record)
        if self._flush_each:
            self._file.flush()
        self.written += 1

    def _write(self, record: Mapping[str, Any]) -> None:
        raise NotImplementedError


class JsonLines(RowWriter):
    """One JSON object per line.

    Args:
        file: The text stream.
        flush_each: Flush after every line.
        encode: The JSON encoder (default: compact, non-ASCII as it is).
    """

    def __init__(
        self,
        file: IO[str],
        *,
        flush_each: bool = False,
        encode: Callable[[Any], str] = compact_json,
    ) -> None:
        super().__init__(file, flush_each=flush_each)
        self._encode = encode

    def _write(self, record: Mapping[str, Any]) -> None:
        self._file.write(self._encode(record) + "\n")


class CsvRows(RowWriter):
    """CSV rows under a header written at once; a missing column is empty, an unknown one
    left out, lists and objects are JSON text (:func:`csv_cell`).

    Args:
        file: The text stream (opened with ``newline=""``).
        columns: The header.
        flush_each: Flush after the header and after every row.
    """

    def __init__(self, file: IO[str], columns: Sequence[str], *, flush_each: bool = False) -> None:
        super().__init__(file, flush_each=flush_each)
        self._csv = csv.DictWriter(file, columns, restval="", extrasaction="ignore")
        self._csv.writeheader()
        if flush_each:
            file.flush()

    def _write(self, record: Mapping[str, Any]) -> None:
        self._csv.writerow({key: csv_cell(value) for key, value in record.items()})


def row_writer(
    output: Output,
    columns: Callable[[], Sequence[str]],
    *,
    flush_each: bool = False,
    encode: Callable[[Any], str] = compact_json,
) -> RowWriter:
    """The writer of ``output``'s format.

    Args:
        output: Where to write.
        columns: Called for a CSV only: its header.
        flush_each: Flush after every row.
        encode: The JSON encoder of a JSONL output.
    """
    if output.format == "csv":
        return CsvRows(output.file, columns(), flush_each=flush_each)
    return JsonLines(output.file, flush_each=flush_each, encode=encode)
