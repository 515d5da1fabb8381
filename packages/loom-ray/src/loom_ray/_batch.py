"""Ray Data batches in and out: rows for Loom, and the batch Ray gets back.

Ray hands ``map_batches`` a dict of numpy arrays (the default), a pandas DataFrame or a
pyarrow Table. Each row becomes one Loom input, a dict of plain Python values: numpy scalars
and arrays (nested ones too) become numbers and lists; ``bytes`` under the ``images`` key
(an image read with ``ray.data.read_binary_files``, say) become a ``data:`` URL when they start
like a PNG, JPEG, GIF or WebP file. Everything else goes to Loom as it is, and Loom's
admission decides: a NaN, other bytes, an object it cannot read make that row a failed result
(``input_invalid``, naming the column), never an exception.

pandas and pyarrow are recognised by their methods, not imported: loom-ray works on whatever
format Ray hands it.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import TypeAdapter

from loom_protocol import LoomUsageError, TaskResult

__all__ = ["OUTPUT_COLUMNS", "Batch", "failed_columns", "output_batch", "result_columns"]

#: The columns LoomMapper adds to every row, in this order.
OUTPUT_COLUMNS = ("loom_task_id", "loom_ok", "loom_data", "loom_error_code", "loom_cached")

_JSON: TypeAdapter[Any] = TypeAdapter(Any)

_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


class Batch:
    """One Ray batch: its columns, its length, and its rows as Loom inputs.

    Raises:
        LoomUsageError: not a batch format Ray hands out, a column name that is not a string,
            an input column missing, or an input column already named like one of
            :data:`OUTPUT_COLUMNS` (it would be overwritten).
    """

    def __init__(self, batch: Any, input_columns: Sequence[str] | None) -> None:
        self.original = batch
        if isinstance(batch, Mapping):
            self.kind = "numpy"
            self.columns = list(batch.keys())
            self._values: dict[str, Sequence[Any]] = {c: batch[c] for c in self.columns}
        elif hasattr(batch, "to_pydict") and hasattr(batch, "column_names"):
            self.kind = "pyarrow"
            self.columns = list(batch.column_names)
            self._values = batch.to_pydict()
        elif hasattr(batch, "columns") and hasattr(batch, "assign"):
            self.kind = "pandas"
            self.columns = list(batch.columns)
            # Series.tolist() gives Python numbers for numeric columns.
            self._values = {c: batch[c].tolist() for c in self.columns}
        else:
            raise LoomUsageError(
                f"LoomMapper got a batch of type {type(batch).__name__}; Ray Data hands out a "
                "dict of numpy arrays, a pandas DataFrame or a pyarrow Table "
                '(batch_format="numpy", "pandas" or "pyarrow")'
            )
        for column in self.columns:
            if not isinstance(column, str):
                raise LoomUsageError(
                    f"LoomMapper: column names must be strings (they are template variables), "
                    f"got {column!r}"
                )
        clash = sorted(set(self.columns) & set(OUTPUT_COLUMNS))
        if clash:
            raise LoomUsageError(
                f"LoomMapper: the dataset already has column(s) {', '.join(clash)}, which "
                "LoomMapper writes; rename or drop them first (ds.drop_columns([...]))"
            )
        if input_columns is not None:
            missing = [c for c in input_columns if c not in self._values]
            if missing:
                raise LoomUsageError(
                    f"LoomMapper: input_columns names {', '.join(map(repr, missing))}, not in the "
                    f"dataset (its columns: {', '.join(self.columns)})"
                )
        self.inputs = list(input_columns) if input_columns is not None else self.columns
        self.length = len(self._values[self.columns[0]]) if self.columns else 0

    def rows(self) -> list[dict[str, Any]]:
        """One Loom input per row, in order."""
        columns = [(name, self._values[name]) for name in self.inputs]
        return [
            {name: plain(values[i], image=name == "images") for name, values in columns}
            for i in range(self.length)
        ]


def plain(value: Any, *, image: bool = False) -> Any:
    """``value`` with numpy containers and scalars made plain Python (see the module doc)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [plain(item, image=image) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if image and isinstance(value, bytes | bytearray | memoryview):
        return _image_url(bytes(value))
    return value


def _image_url(data: bytes) -> Any:
    mime = next((m for magic, m in _IMAGE_MAGIC if data.startswith(magic)), None)
    if mime is None and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        mime = "image/webp"
    if mime is None:
        return data  # Loom refuses bytes with a clear input_invalid
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def result_columns(results: Sequence[TaskResult[Any]]) -> dict[str, list[Any]]:
    """The output columns of ``results`` (one per row, in order)."""
    return {
        "loom_task_id": [r.task_id for r in results],
        "loom_ok": [r.is_success for r in results],
        "loom_data": [_JSON.dump_json(r.data).decode() if r.is_success else None for r in results],
        "loom_error_code": [r.error.code.value if r.error is not None else None for r in results],
        "loom_cached": [r.cached for r in results],
    }


def failed_columns(length: int, code: str) -> dict[str, list[Any]]:
    """Output columns for a batch that failed as a whole (every row ``loom_ok=False``)."""
    return {
        "loom_task_id": [None] * length,
        "loom_ok": [False] * length,
        "loom_data": [None] * length,
        "loom_error_code": [code] * length,
        "loom_cached": [False] * length,
    }


def output_batch(batch: Batch, added: dict[str, list[Any]]) -> Any:
    """The batch handed back to Ray: the input columns untouched, plus ``added``."""
    arrays = {
        "loom_task_id": _object_array(added["loom_task_id"]),
        "loom_ok": np.array(added["loom_ok"], dtype=bool),
        "loom_data": _object_array(added["loom_data"]),
        "loom_error_code": _object_array(added["loom_error_code"]),
        "loom_cached": np.array(added["loom_cached"], dtype=bool),
    }
    if batch.kind == "pandas":
        return batch.original.assign(**arrays)
    if batch.kind == "pyarrow":
        table = batch.original
        out: dict[str, Any] = {
            c: table.column(c).to_numpy(zero_copy_only=False) for c in batch.columns
        }
    else:
        out = dict(batch.original)
    out.update(arrays)
    return out


def _object_array(values: list[Any]) -> Any:
    # np.array(list_of_str) would make a fixed-width unicode array, and turn None into "None".
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array
