"""Image references: the ``images`` value, URL passthrough, local files as sniffed data URLs."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from loom_core._images import (
    DEFAULT_MAX_IMAGE_BYTES,
    ImageError,
    aload_image_url,
    image_refs,
    load_image_url,
)
from loom_protocol import ImagePart, LoomUsageError


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def tiny_png() -> bytes:
    """A real 1x1 RGBA PNG."""
    header = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00\xff")  # filter byte + one red pixel
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", pixels)
        + _png_chunk(b"IEND", b"")
    )


JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xd9"
GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00;"
WEBP_BODY = b"VP8 \x0a\x00\x00\x00\x30\x01\x00\x9d\x01\x2a\x01\x00\x01\x00"
WEBP = b"RIFF" + struct.pack("<I", 4 + len(WEBP_BODY)) + b"WEBP" + WEBP_BODY


@pytest.fixture
def png(tmp_path: Path) -> Path:
    path = tmp_path / "pixel.png"
    path.write_bytes(tiny_png())
    return path


# --- image_refs ---------------------------------------------------------------------------------


def test_a_string_is_one_reference_never_its_characters() -> None:
    assert image_refs("./receipt_01.jpg") == ["./receipt_01.jpg"]


def test_lists_tuples_and_none() -> None:
    refs = ["a.png", "https://example.com/menu.png"]
    assert image_refs(refs) == refs
    assert image_refs(tuple(refs)) == refs
    assert image_refs([]) == []
    assert image_refs(None) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (3, "'images' must be a string or a list of strings, got int"),
        ({"url": "a.png"}, "'images' must be a string or a list of strings, got dict"),
        (b"a.png", "'images' must be a string or a list of strings, got bytes"),
        (
            ["a.png", 7],
            "'images' must be a string or a list of strings, got int at position 1",
        ),
    ],
)
def test_bad_images_value(value: Any, expected: str) -> None:
    with pytest.raises(ImageError) as caught:
        image_refs(value)
    assert caught.value.message == expected


# --- local files --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "media_type"),
    [
        ("pixel.png", tiny_png(), "image/png"),
        ("photo.jpg", JPEG, "image/jpeg"),
        ("anim.gif", GIF, "image/gif"),
        ("pic.webp", WEBP, "image/webp"),
        # The extension is never trusted: the content decides.
        ("actually_png.jpg", tiny_png(), "image/png"),
        ("no_extension", JPEG, "image/jpeg"),
    ],
)
def test_local_file_becomes_a_sniffed_data_url(
    tmp_path: Path, name: str, content: bytes, media_type: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    url = load_image_url(str(path))
    prefix = f"data:{media_type};base64,"
    assert url.startswith(prefix)
    assert base64.b64decode(url[len(prefix) :]) == content
    assert ImagePart(url=url).url == url  # the protocol accepts it


def test_relative_path_resolves_against_the_working_directory(
    png: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(png.parent)
    assert load_image_url("pixel.png").startswith("data:image/png;base64,")
    assert load_image_url("./pixel.png") == load_image_url(str(png))


def test_path_like_image_root_and_relative_path(png: Path) -> None:
    assert load_image_url("pixel.png", image_root=png.parent).startswith("data:image/png;")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError) as caught:
        load_image_url("nope.png", image_root=tmp_path)
    assert caught.value.message == "image 'nope.png' not found"
    with pytest.raises(ImageError, match=r"nope\.png' not found"):
        load_image_url(str(tmp_path / "nope.png"))


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="is a directory, not a file"):
        load_image_url(str(tmp_path))


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("just some text, not an image\n")
    with pytest.raises(ImageError) as caught:
        load_image_url("notes.png", image_root=tmp_path)
    assert caught.value.message.startswith("image 'notes.png' is not a PNG, JPEG, GIF or WEBP")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match="is not a PNG, JPEG, GIF or WEBP"):
        load_image_url(str(path))


def test_file_over_the_cap(png: Path) -> None:
    size = png.stat().st_size
    assert load_image_url(str(png), max_bytes=size).startswith("data:image/png;")
    with pytest.raises(ImageError) as caught:
        load_image_url("pixel.png", image_root=png.parent, max_bytes=size - 1)
    assert caught.value.message == (
        f"image 'pixel.png' is {size:,} bytes, over the limit of {size - 1:,} bytes"
    )


def test_default_cap_is_20_mib(tmp_path: Path) -> None:
    assert DEFAULT_MAX_IMAGE_BYTES == 20 * 1024 * 1024
    path = tmp_path / "big.png"
    with path.open("wb") as file:
        file.write(tiny_png())
        file.truncate(DEFAULT_MAX_IMAGE_BYTES + 1)  # sparse: no 20 MiB written to disk
    with pytest.raises(ImageError, match="over the limit of 20,971,520 bytes"):
        load_image_url(str(path))


@pytest.mark.parametrize("max_bytes", [0, -1, True, 1.5])
def test_bad_max_bytes_is_a_usage_error(png: Path, max_bytes: Any) -> None:
    with pytest.raises(LoomUsageError, match="max_bytes must be an int >= 1, got"):
        load_image_url(str(png), max_bytes=max_bytes)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(png: Path) -> None:
    png.chmod(0)
    try:
        with pytest.raises(ImageError, match="cannot be read: permission denied"):
            load_image_url(str(png))
    finally:
        png.chmod(0o644)


@pytest.mark.parametrize("ref", ["", "   "])
def test_empty_reference(ref: str) -> None:
    with pytest.raises(ImageError, match="an image reference is empty"):
        load_image_url(ref)


def test_nul_byte_in_path() -> None:
    with pytest.raises(ImageError, match="cannot be read"):
        load_image_url("bad\x00name.png")


# --- image_root ---------------------------------------------------------------------------------


@pytest.fixture
def root_and_secret(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "uploads"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "ok.png").write_bytes(tiny_png())
    secret = tmp_path / "secret.png"
    secret.write_bytes(tiny_png())
    return root, secret


def test_inside_image_root(root_and_secret: tuple[Path, Path]) -> None:
    root, _ = root_and_secret
    expected = load_image_url(str(root / "sub" / "ok.png"))
    assert load_image_url("sub/ok.png", image_root=root) == expected
    assert load_image_url("sub/../sub/ok.png", image_root=str(root)) == expected
    assert load_image_url(str(root / "sub" / "ok.png"), image_root=root) == expected


@pytest.mark.parametrize(
    "ref", ["../secret.png", "sub/../../secret.png", "{secret}", "{root}/../secret.png"]
)
def test_outside_image_root(root_and_secret: tuple[Path, Path], ref: str) -> None:
    root, secret = root_and_secret
    ref = ref.format(secret=secret, root=root)
    with pytest.raises(ImageError) as caught:
        load_image_url(ref, image_root=root)
    message = caught.value.message
    assert message.endswith("' is outside image_root")
    assert message.startswith("image '")
    assert ref[-40:] in message  # long paths keep their end


def test_symlink_out_of_image_root(root_and_secret: tuple[Path, Path]) -> None:
    root, secret = root_and_secret
    (root / "link.png").symlink_to(secret)
    (root / "linkdir").symlink_to(secret.parent, target_is_directory=True)
    for ref in ("link.png", "linkdir/secret.png"):
        with pytest.raises(ImageError, match="is outside image_root"):
            load_image_url(ref, image_root=root)
    # Without image_root the same link is just a file.
    assert load_image_url(str(root / "link.png")).startswith("data:image/png;")


def test_symlink_within_image_root(root_and_secret: tuple[Path, Path]) -> None:
    root, _ = root_and_secret
    (root / "alias.png").symlink_to(root / "sub" / "ok.png")
    assert load_image_url("alias.png", image_root=root).startswith("data:image/png;")


def test_image_root_that_is_itself_a_symlink(root_and_secret: tuple[Path, Path]) -> None:
    root, _ = root_and_secret
    alias = root.parent / "uploads_alias"
    alias.symlink_to(root, target_is_directory=True)
    assert load_image_url("sub/ok.png", image_root=alias).startswith("data:image/png;")


def test_sibling_directory_with_a_common_prefix_is_outside(tmp_path: Path) -> None:
    root = tmp_path / "img"
    root.mkdir()
    sibling = tmp_path / "img_private"
    sibling.mkdir()
    (sibling / "x.png").write_bytes(tiny_png())
    with pytest.raises(ImageError, match="is outside image_root"):
        load_image_url("../img_private/x.png", image_root=root)


# --- URLs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/menu.png",
        "http://127.0.0.1:8000/a.jpg?x=1",
        "data:image/png;base64,iVBORw0KGgo=",
        "data:image/svg+xml;base64,PHN2Zz4=",
    ],
)
def test_urls_pass_through(url: str, tmp_path: Path) -> None:
    assert load_image_url(url) == url
    assert load_image_url(url, image_root=tmp_path) == url


@pytest.mark.parametrize(
    "url",
    [
        "data:text/plain;base64,aGVsbG8=",
        "data:image/png,rawbytes",
        "data:image/png;base64,",
        "data:,hello",
    ],
)
def test_bad_data_urls(url: str) -> None:
    with pytest.raises(ImageError, match="is not a base64 image data URL"):
        load_image_url(url)


def test_long_data_url_is_shortened_in_the_message() -> None:
    url = "data:text/plain;base64," + "A" * 100_000
    with pytest.raises(ImageError) as caught:
        load_image_url(url)
    assert len(caught.value.message) < 200
    assert "100,000 chars" in caught.value.message


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("file:///etc/passwd", "file"),
        ("ftp://example.com/a.png", "ftp"),
        ("s3://bucket/key.png", "s3"),
    ],
)
def test_other_schemes_are_refused(url: str, scheme: str) -> None:
    with pytest.raises(ImageError) as caught:
        load_image_url(url)
    assert f"unsupported scheme {scheme!r}" in caught.value.message


# --- async --------------------------------------------------------------------------------------


class CountingExecutor(ThreadPoolExecutor):
    """Counts the calls handed to worker threads."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.submitted = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


async def test_async_loader_reads_files_in_a_thread_and_urls_inline(
    png: Path, tmp_path: Path
) -> None:
    executor = CountingExecutor()
    asyncio.get_running_loop().set_default_executor(executor)
    try:
        url = "https://example.com/x.png"
        assert await aload_image_url(url) == url
        assert await aload_image_url("data:image/gif;base64,R0lGOD==") == (
            "data:image/gif;base64,R0lGOD=="
        )
        assert executor.submitted == 0
        assert await aload_image_url("pixel.png", image_root=tmp_path) == load_image_url(str(png))
        assert executor.submitted == 1
        with pytest.raises(ImageError, match="not found"):
            await aload_image_url("missing.png", image_root=tmp_path)
        with pytest.raises(ImageError, match="outside image_root"):
            await aload_image_url("../x.png", image_root=tmp_path)
        with pytest.raises(ImageError, match="unsupported scheme"):
            await aload_image_url("file:///x.png")
    finally:
        executor.shutdown(wait=True)
