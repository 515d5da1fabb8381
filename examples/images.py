"""Images in the inputs: local files, data URLs and ``image_root``.

    uv run python examples/images.py

An input's ``images`` key (one reference or a list) makes a multimodal message: ``http(s)://``
and ``data:`` URLs pass through, local paths are read, sniffed and sent as base64 data URLs.
With ``image_root`` set, paths resolve inside that folder and anything outside it is refused
(``image_unreadable``), which is what a service taking paths from a web request needs.

The example writes three tiny PNG files itself. Without ``OPENAI_API_KEY`` it runs offline
against a FakeLLMServer whose scripted "vision model" really decodes the PNGs it receives;
with the key set it asks the real provider (``LOOM_VISION_MODEL``, default gpt-4o-mini).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any

from loom_backends.testing import FakeLLMServer, RecordedRequest
from loom_core import TaskLoom

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (30, 60, 220)}
PROMPT = (
    "{{ instruction }} Answer with a JSON object: "
    '{"colours": [one lower-case colour name per image, in order]}'
)


def tiny_png(rgb: tuple[int, int, int], size: int = 4) -> bytes:
    """A ``size`` x ``size`` PNG of one colour (8-bit RGB, no filtering)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = b"".join(b"\x00" + bytes(rgb) * size for _ in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def first_pixel(png: bytes) -> tuple[int, int, int]:
    """The colour of the first pixel of a PNG written by :func:`tiny_png`."""
    position, idat = 8, b""
    while position < len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        kind = png[position + 4 : position + 8]
        if kind == b"IDAT":
            idat += png[position + 8 : position + 8 + length]
        position += 12 + length
    pixels = zlib.decompress(idat)
    return pixels[1], pixels[2], pixels[3]  # after the row's filter byte


def scripted_vision_model(request: RecordedRequest) -> str:
    """The offline "vision model": decodes each image it is sent and names its colour."""
    colours = []
    for message in request.messages:
        if not isinstance(message.get("content"), list):
            continue
        for part in message["content"]:
            if part.get("type") != "image_url":
                continue
            png = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
            pixel = first_pixel(png)
            colours.append(
                min(
                    COLOURS,
                    key=lambda n: sum((a - b) ** 2 for a, b in zip(COLOURS[n], pixel, strict=True)),
                )
            )
    return json.dumps({"colours": colours})


def main() -> None:
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="loom-images-")))
        for name, rgb in COLOURS.items():
            (folder / f"{name}.png").write_bytes(tiny_png(rgb))
        outside = folder.parent / "outside.png"  # refused whether it exists or not

        provider: dict[str, Any] = {}
        model = os.environ.get("LOOM_VISION_MODEL", "gpt-4o-mini")
        if not os.environ.get("OPENAI_API_KEY"):
            server = stack.enter_context(FakeLLMServer(scripted_vision_model))
            provider = {"base_url": server.base_url, "api_key": "offline"}
            print(f"OPENAI_API_KEY is not set: using the offline fake model at {server.base_url}\n")

        loom = stack.enter_context(
            TaskLoom(model, PROMPT, response_model=dict, image_root=folder, **provider)
        )
        blue_url = "data:image/png;base64," + base64.b64encode(tiny_png(COLOURS["blue"])).decode()
        instruction = "Name the main colour of each image."
        inputs = [
            {"instruction": instruction, "images": ["red.png", "green.png"]},
            {"instruction": instruction, "images": blue_url},  # a data: URL passes through
            {"instruction": instruction, "images": str(outside)},  # outside image_root
            {"instruction": instruction, "images": "missing.png"},
        ]
        for number, result in enumerate(loom.map(inputs, max_workers=4), 1):
            if result.is_success:
                print(f"input {number}: {result.data}")
            else:
                print(f"input {number}: failed: {result.error}")


if __name__ == "__main__":
    main()
