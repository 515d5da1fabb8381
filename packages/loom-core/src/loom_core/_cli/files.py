"""The CLI's files: their format, and outputs that are never an input and replaced once complete.

Every output file is written to a temporary file in the target's folder and renamed over the
target at the end (``fsync`` first, then ``os.replace``, then the folder is synced), so a crash,
an exception, Ctrl-C or ``kill -9`` never leaves a truncated output and never destroys an
earlier one. The temporary file is removed on failure; one left behind by ``kill -9`` is named
after its process and removed by the next run writing the same target.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Literal

__all__ = ["AtomicOutput", "Format", "check_not_an_input", "file_format", "store_file"]

#: The formats of inputs and outputs.
Format = Literal["jsonl", "csv"]

_TMP_SUFFIX = ".loom-tmp"
#: What follows ``.<target name>.`` in a temporary file's name: ``<pid>.<random>.loom-tmp``.
_STALE = re.compile(r"^(\d+)\.[a-z0-9_]+\.loom-tmp$")


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


def store_file(db: str) -> str | None:
    """The file a ``--db`` value names: a SQLite path or ``sqlite:///`` URL, else ``None``."""
    if "://" not in db:
        return db
    scheme, _, rest = db.partition("://")
    if not scheme.lower().startswith("sqlite") or not rest.startswith("/"):
        return None  # a server (PostgreSQL…) or an in-memory SQLite database
    path = rest[1:].partition("?")[0]
    return path or None


def check_not_an_input(output: str, inputs: Iterable[tuple[str, str | None]]) -> str | None:
    """Why ``output`` must not be written, or ``None`` when it may be.

    Args:
        output: The output path (``-`` is stdout and always allowed).
        inputs: ``(what, path)`` pairs, e.g. ``("the input", "in.jsonl")``; a ``None`` path or
            ``-`` is skipped.

    The paths are compared with :func:`os.path.samefile`, so ``./in.jsonl``, a symbolic link
    or a hard link to an input is caught; a path that does not exist yet is no input.
    """
    if output == "-" or not os.path.exists(output):
        return None
    for what, path in inputs:
        if path is None or path == "-":
            continue
        try:
            same = os.path.samefile(output, path)
        except OSError:
            continue  # an input that does not exist is reported by whoever reads it
        if same:
            return (
                f"the output {output!r} is {what} {path!r}: writing it would destroy it; "
                "choose another output path"
            )
    return None


def _umask() -> int:
    # os.umask can only be read by setting it, which would race with threads creating files
    # (the store's writer); Linux shows it in /proc.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists, owned by someone else
    return True


class AtomicOutput:
    """A text file written under a temporary name and renamed over ``path`` by :meth:`commit`.

    Args:
        path: The target. Its folder must exist; an existing file keeps its permission bits;
            a symbolic link is followed (the file it points to is replaced).

    Raises:
        OSError: The folder does not exist or the temporary file cannot be created.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        # A symbolic link is followed: the file it points to is replaced, the link stays.
        target = Path(os.path.realpath(path))
        self._target = str(target)
        folder = target.parent
        if not folder.is_dir():
            raise FileNotFoundError(f"the folder {str(folder)!r} does not exist")
        if target.exists() and not target.is_file():
            # A folder, a device, a FIFO: renaming a file over it is wrong (or, for a
            # device and a privileged user, harmful).
            raise IsADirectoryError(
                f"{path!r} is not a regular file"
                + (
                    f" (it leads to {str(target)!r})"
                    if str(target) != os.path.abspath(path)
                    else ""
                )
                + "; use -o - to write to stdout"
            )
        self._folder = folder
        prefix = f".{target.name}.{os.getpid()}."
        self._remove_stale(target.name)
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=_TMP_SUFFIX, dir=folder)
        self.tmp_path = tmp
        try:
            try:
                mode = stat.S_IMODE(os.stat(target).st_mode)
                self.existed = True
            except FileNotFoundError:
                mode = 0o666 & ~_umask()
                self.existed = False
            os.fchmod(fd, mode)
            self.file: IO[str] = open(fd, "w", encoding="utf-8", newline="")  # noqa: SIM115
        except BaseException:
            os.close(fd)
            self._unlink()
            raise
        self._done = False

    def _remove_stale(self, name: str) -> None:
        """Remove temporary files of this target left by a process that no longer runs."""
        with contextlib.suppress(OSError):
            for entry in os.scandir(self._folder):
                if not (entry.name.startswith(f".{name}.") and entry.name.endswith(_TMP_SUFFIX)):
                    continue
                found = _STALE.match(entry.name[len(name) + 2 :])
                if found and not _pid_alive(int(found.group(1))):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)

    def _unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp_path)

    def commit(self) -> None:
        """Flush, sync and rename the temporary file over the target (idempotent).

        Raises:
            OSError: Writing or renaming failed; the temporary file is removed and the target
                is left as it was.
        """
        if self._done:
            return
        self._done = True
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            os.replace(self.tmp_path, self._target)
        except BaseException:
            with contextlib.suppress(OSError, ValueError):
                self.file.close()
            self._unlink()
            raise
        # The rename itself is durable once the folder is synced (not every system allows it).
        with contextlib.suppress(OSError):
            dir_fd = os.open(self._folder, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def discard(self) -> None:
        """Close and remove the temporary file; the target is left as it was (idempotent)."""
        if self._done:
            return
        self._done = True
        with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
            self.file.close()
        self._unlink()
