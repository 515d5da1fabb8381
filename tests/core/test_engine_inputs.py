"""Images, bad inputs and bad configuration through the engine."""

from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

from loom_backends.testing import FakeLLMServer
from loom_core import TaskLoom
from loom_protocol import ErrorCode, LoomUsageError

from .conftest import LoomFactory


def png_bytes() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\x00\x00")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def image_urls(body: dict[str, Any]) -> list[str]:
    content = body["messages"][-1]["content"]
    return [p["image_url"]["url"] for p in content if p["type"] == "image_url"]


def test_images_become_parts(make_loom: LoomFactory, server: FakeLLMServer, tmp_path: Path) -> None:
    photo = tmp_path / "receipt.jpg"  # the extension lies: the content is PNG
    photo.write_bytes(png_bytes())
    loom = make_loom(server, prompt_template="{{ instruction }}", response_model=dict)

    one = loom.process({"instruction": "read", "images": str(photo)})
    assert one.is_success
    urls = image_urls(server.requests[-1].body)
    assert len(urls) == 1  # a string is one image, never one per character
    assert urls[0].startswith("data:image/png;base64,")
    assert base64.b64decode(urls[0].split(",", 1)[1]) == png_bytes()

    data_url = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    several = loom.process(
        {"instruction": "read", "images": [str(photo), "https://example.com/menu.png", data_url]}
    )
    assert several.is_success
    urls = image_urls(server.requests[-1].body)
    assert urls[1] == "https://example.com/menu.png"
    assert urls[2] == data_url


@pytest.mark.parametrize("case", ["missing", "not-an-image", "outside-root"])
def test_unreadable_images_fail_only_their_task(
    make_loom: LoomFactory, server: FakeLLMServer, tmp_path: Path, case: str
) -> None:
    root = tmp_path / "uploads"
    root.mkdir()
    good = root / "ok.png"
    good.write_bytes(png_bytes())
    bad = {
        "missing": str(root / "nope.png"),
        "not-an-image": str(root / "notes.png"),
        "outside-root": str(tmp_path / "secret.png"),
    }[case]
    (root / "notes.png").write_text("just text")
    (tmp_path / "secret.png").write_bytes(png_bytes())
    loom = make_loom(server, prompt_template="{{ q }}", response_model=dict, image_root=root)
    batch = loom.map([{"q": "a", "images": str(good)}, {"q": "b", "images": bad}])
    assert batch[0].is_success
    assert not batch[1].is_success
    assert batch[1].error is not None and batch[1].error.code == ErrorCode.IMAGE_UNREADABLE
    assert server.request_count == 1


def test_bad_inputs_never_stop_the_batch(make_loom: LoomFactory, server: FakeLLMServer) -> None:
    loom = make_loom(server, prompt_template="Hello {{ name }}", response_model=dict)
    batch = loom.map(
        [{"name": "ok"}, 42, {"other": 1}, {"name": float("nan")}, {"name": b"bytes"}, "no name"],
        task_name="bad-inputs",
    )
    codes = [r.error.code if r.error else None for r in batch]
    assert codes == [
        None,
        ErrorCode.INPUT_INVALID,
        ErrorCode.TEMPLATE_ERROR,
        ErrorCode.INPUT_INVALID,
        ErrorCode.INPUT_INVALID,
        ErrorCode.TEMPLATE_ERROR,
    ]
    assert batch[2].error is not None and "name" in batch[2].error.message
    assert batch[0].data == {"text": "Hello ok"}
    assert server.request_count == 1
    for result in batch:  # every result still serialises for SSE
        result.model_dump_json()


class NotAModel:
    pass


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prompt_template": "{% if %}"}, "prompt_template"),
        ({"system_prompt": "{{ unclosed"}, "system_prompt"),
        ({"response_model": NotAModel}, "response_model"),
        ({"response_model": 42}, "response_model"),
        ({"model": "nosuchprefix/some-model", "base_url": None}, "nosuchprefix"),
        ({"temperature": 3.5}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_retries": -1}, "max_retries"),
        ({"rpm": 0}, "rpm"),
        ({"store": "postgresql+psycopg://u:hunter2@127.0.0.1:1/none"}, "store"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_misconfiguration_raises_at_construction(
    monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, Any], match: str
) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    args: dict[str, Any] = {"model": "fake-model", "prompt_template": "{{ text }}", "api_key": "k"}
    args.update(kwargs)
    with pytest.raises(LoomUsageError) as info:
        TaskLoom(**args).close()
    message = str(info.value)
    assert match.lower() in message.lower() or match in repr(info.value.__cause__)
    assert "hunter2" not in message


def test_batch_arguments_are_checked(make_loom: LoomFactory, server: FakeLLMServer) -> None:
    loom = make_loom(server)
    with pytest.raises(LoomUsageError, match="max_workers"):
        loom.map(["a"], max_workers=0)
    with pytest.raises(LoomUsageError, match="task_name"):
        loom.map(["a"], task_name="")
    with pytest.raises(LoomUsageError, match="single str"):
        loom.map("just one string")
