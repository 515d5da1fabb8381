"""Images in inputs: the ``images`` value and turning each reference into a URL a backend accepts.

``http(s)://`` URLs pass through unchanged; ``data:image/...;base64,`` URLs pass through after a
light check; anything else is a local path, read (within a size cap), its type sniffed from its
first bytes, and sent as a base64 data URL. When ``image_root`` is set, a path must resolve
(symlinks followed) inside it: inputs may come from a web request and must not read arbitrary
files from the server.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import stat
from pathlib import Path
from typing import Any

from loom_protocol import check_int, shorten

__all__ = [
    "DEFAULT_MAX_IMAGE_BYTES",
    "ImageError",
    "aload_image_url",
    "image_refs",
    "load_image_url",
]

DEFAULT_MAX_IMAGE_BYTES = 20 * 1024 * 1024
"""The largest local image file read, in bytes (20 MiB, OpenAI's per-image limit)."""

_DATA_URL = re.compile(r"\Adata:image/[A-Za-z0-9.+-]+;base64,[A-Za-z0-9+/=\s]")
# Two or more letters so that a Windows drive ("C:\\photo.png") is not mistaken for a scheme.
_SCHEME = re.compile(r"\A([A-Za-z][A-Za-z0-9+.-]+):")
_MAX_REF_SHOWN = 80


class ImageError(Exception):
    """An image reference cannot be used.

    Attributes:
        message: A one-line explanation naming the reference (long data URLs shortened).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def image_refs(value: Any) -> list[str]:
    """The image references of an input's ``images`` value.

    Args:
        value: A single reference (a string), a list or tuple of them, or ``None``.

    Returns:
        The references, in order (a single string is one reference, never its characters).

    Raises:
        ImageError: ``value`` is of another type or holds a non-string element.
    """
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise ImageError(
                    f"'images' must be a string or a list of strings, got {type(item).__name__}"
                    f" at position {index}"
                )
        return list(value)
    raise ImageError(f"'images' must be a string or a list of strings, got {type(value).__name__}")


def load_image_url(
    ref: str,
    *,
    image_root: str | os.PathLike[str] | None = None,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> str:
    """Turn one image reference into an ``http(s)://`` or ``data:`` URL.

    Args:
        ref: An ``http(s)://`` URL, a ``data:image/...;base64,`` URL, or a local file path.
        image_root: When set, relative paths resolve against it and every path must resolve
            (symlinks followed) inside it. When ``None``, relative paths resolve against the
            working directory and any readable file is allowed.
        max_bytes: The largest file read, in bytes.

    Returns:
        The URL to send.

    Raises:
        ImageError: The reference is not usable: another URL scheme, a malformed data URL, a
            missing file, a directory, an unreadable file, a file over ``max_bytes``, a file that
            is not PNG, JPEG, GIF or WEBP, or a path outside ``image_root``.
        LoomUsageError: ``max_bytes`` is not positive.
    """
    passed = _check_url(ref)
    if passed is not None:
        return passed
    return _read_local(ref, image_root, max_bytes)


async def aload_image_url(
    ref: str,
    *,
    image_root: str | os.PathLike[str] | None = None,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
) -> str:
    """Like :func:`load_image_url`, with local file I/O off the event loop.

    URLs are answered at once; only local paths are read in a worker thread.
    """
    passed = _check_url(ref)
    if passed is not None:
        return passed
    return await asyncio.to_thread(_read_local, ref, image_root, max_bytes)


def _check_url(ref: str) -> str | None:
    """The reference itself when it is a usable URL, ``None`` when it is a local path."""
    if not isinstance(ref, str):
        raise ImageError(f"an image reference must be a string, got {type(ref).__name__}")
    if not ref.strip():
        raise ImageError("an image reference is empty")
    if ref.startswith(("http://", "https://")):
        return ref
    if ref.startswith("data:"):
        if _DATA_URL.match(ref) is None:
            raise ImageError(
                f"image {_show(ref)} is not a base64 image data URL"
                " (expected data:image/<type>;base64,<data>)"
            )
        return ref
    scheme = _SCHEME.match(ref)
    if scheme is not None:
        raise ImageError(
            f"image {_show(ref)} uses the unsupported scheme {scheme.group(1)!r}"
            " (use http(s)://, data: or a local path)"
        )
    return None


def _read_local(ref: str, image_root: str | os.PathLike[str] | None, max_bytes: int) -> str:
    """Read a local image file and return it as a base64 data URL."""
    check_int("max_bytes", max_bytes, 1)
    shown = _show(ref)
    try:
        path = _resolve(ref, image_root)
        info = os.stat(path)
    except FileNotFoundError:
        raise ImageError(f"image {shown} not found") from None
    except PermissionError:
        raise ImageError(f"image {shown} cannot be read: permission denied") from None
    except (OSError, ValueError) as exc:
        # ValueError: an embedded NUL byte; OSError: a name too long, a symlink loop...
        raise ImageError(f"image {shown} cannot be read: {_os_reason(exc)}") from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageError(f"image {shown} is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise ImageError(f"image {shown} is not a regular file")
    if info.st_size > max_bytes:
        # Checked before reading so that a huge file is never loaded into memory.
        raise ImageError(
            f"image {shown} is {info.st_size:,} bytes, over the limit of {max_bytes:,} bytes"
        )
    try:
        with open(path, "rb") as file:
            # One byte more than allowed catches a file that grew since the stat.
            content = file.read(max_bytes + 1)
    except PermissionError:
        raise ImageError(f"image {shown} cannot be read: permission denied") from None
    except OSError as exc:
        raise ImageError(f"image {shown} cannot be read: {_os_reason(exc)}") from None
    if len(content) > max_bytes:
        raise ImageError(f"image {shown} is over the limit of {max_bytes:,} bytes")
    media_type = _sniff_image_type(content)
    if media_type is None:
        raise ImageError(
            f"image {shown} is not a PNG, JPEG, GIF or WEBP image (its content says otherwise,"
            " whatever its name)"
        )
    return f"data:{media_type};base64,{base64.b64encode(content).decode('ascii')}"


def _resolve(ref: str, image_root: str | os.PathLike[str] | None) -> str:
    """The real path of a local reference, checked against ``image_root`` when it is set."""
    if image_root is None:
        return os.path.realpath(ref)
    root = os.path.realpath(image_root)
    # os.path.join keeps an absolute ref as is; it must then lie inside the root like any other.
    real = os.path.realpath(os.path.join(root, ref))
    if not Path(real).is_relative_to(root):
        raise ImageError(f"image {_show(ref)} is outside image_root")
    return real


def _sniff_image_type(content: bytes) -> str | None:
    """The media type of image bytes from their magic number, or ``None`` if not recognised.

    Recognises PNG, JPEG, GIF and WEBP: the formats every vision API accepts.
    """
    if content.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if content.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if content.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(content) >= 12 and content[:4] == b"RIFF" and content[8:12] == b"WEBP":
        return "image/webp"
    return None


def _show(ref: str) -> str:
    """A reference for an error message: quoted, data URLs and very long paths shortened."""
    if ref.startswith("data:"):
        head, _, payload = ref.partition(",")
        return repr(f"{shorten(head, 60)},... ({len(payload):,} chars)")
    # Keep the end of a long path: the file name is what tells one image from another.
    return repr(shorten(ref, _MAX_REF_SHOWN, keep_end=True))


def _os_reason(exc: Exception) -> str:
    """An OS error's reason without its file name (the caller names the reference)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc)
