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
        ({"store": "nosuchdb://u:hunter2@127.0.0.1:1/none"}, "not supported"),
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


# -- canonical inputs: equal task ids always mean equal prompts -----------------------------


def sent_prompts(server: FakeLLMServer) -> list[str]:
    return [r.body["messages"][-1]["content"] for r in server.requests]


@pytest.mark.parametrize("tuple_first", [True, False], ids=["tuple-first", "list-first"])
def test_a_tuple_and_a_list_get_the_same_prompt(
    make_loom: LoomFactory, server: FakeLLMServer, tuple_first: bool
) -> None:
    # {"text": (1, 2)} and {"text": [1, 2]} have one fingerprint, so one answer is served to
    # both: it must be the answer to the prompt both of them render.
    loom = make_loom(server)
    pair: list[dict[str, Any]] = [{"text": (1, 2)}, {"text": [1, 2]}]
    if not tuple_first:
        pair.reverse()
    first = loom.map([pair[0]], task_name="canonical")[0]
    second = loom.map([pair[1]], task_name="canonical")[0]
    assert second.cached and first.task_id == second.task_id
    assert first.input_data == second.input_data == {"text": [1, 2]}
    # Computed afresh (no store), each renders the canonical list.
    again = loom.map(pair)  # no task name: no store
    assert [r.data for r in again] == [first.data, first.data]
    assert set(sent_prompts(server)) == {"[1, 2]"}


def test_nested_keys_are_rendered_in_canonical_order(
    make_loom: LoomFactory, server: FakeLLMServer
) -> None:
    loom = make_loom(server, prompt_template="{{ meta }}")
    batch = loom.map([{"meta": {"b": 1, "a": 2}}, {"meta": {"a": 2, "b": 1}}])
    assert batch[0].task_id == batch[1].task_id
    assert batch[0].input_data == {"meta": {"a": 2, "b": 1}}
    assert sent_prompts(server) == ["{'a': 2, 'b': 1}"]


def test_subclasses_render_as_their_json_value(
    make_loom: LoomFactory, server: FakeLLMServer
) -> None:
    import enum

    class Level(enum.IntEnum):
        HIGH = 3

    loom = make_loom(server, prompt_template="{{ level }} {{ name }}")
    result = loom.process({"level": Level.HIGH, "name": "x"})
    plain = loom.process({"level": 3, "name": "x"})
    assert result.task_id == plain.task_id
    assert sent_prompts(server) == ["3 x", "3 x"]
    assert type(result.input_data["level"]) is int


def test_a_canonical_input_is_not_copied() -> None:
    from loom_core._inputs import prepare_input

    raw = {"text": "x", "z": {"a": 1, "b": [1, 2.5, None, True]}}
    assert prepare_input(raw).data is raw
    with_tuple = {"text": "x", "t": (1, 2)}
    prepared = prepare_input(with_tuple)
    assert prepared.data == {"text": "x", "t": [1, 2]} and with_tuple["t"] == (1, 2)


# -- templates cannot change the caller's inputs --------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        "{{ items.append('x') }}{{ items }}",
        "{% set _ = meta.update({'k': 1}) %}{{ meta }}",
        "{{ meta.pop('a') }}",
        "{{ items.clear() }}",
    ],
)
def test_a_template_cannot_mutate_the_input(
    make_loom: LoomFactory, server: FakeLLMServer, template: str
) -> None:
    loom = make_loom(server, prompt_template=template)
    data = {"items": [1], "meta": {"a": 1}}
    result = loom.process(data)
    assert result.error is not None and result.error.code is ErrorCode.TEMPLATE_ERROR
    assert "sandbox forbids" in result.error.message
    assert data == {"items": [1], "meta": {"a": 1}}
    assert server.request_count == 0


def test_a_system_template_cannot_mutate_the_input(
    make_loom: LoomFactory, server: FakeLLMServer
) -> None:
    loom = make_loom(server, system_prompt="{{ items.append(2) }}")
    data = {"text": "x", "items": [1]}
    result = loom.process(data)
    assert result.error is not None and result.error.code is ErrorCode.TEMPLATE_ERROR
    assert "system_prompt" in result.error.message and data["items"] == [1]


# -- pandas and numpy -------------------------------------------------------------------------


def test_a_dataframe_is_taken_row_by_row(make_loom: LoomFactory, server: FakeLLMServer) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"text": ["a", "b", "c"], "n": [1, 2, 3], "score": [0.5, 1.5, 2.5]})
    loom = make_loom(server, prompt_template="{{ text }}:{{ n }}:{{ score }}")
    batch = loom.map(frame, task_name="frame")
    assert [r.data for r in batch] == ['{"text": "a:1:0.5"}', '{"text": "b:2:1.5"}',
                                       '{"text": "c:3:2.5"}']  # fmt: skip
    assert batch[0].input_data == {"text": "a", "n": 1, "score": 0.5}
    assert type(batch[0].input_data["n"]) is int
    # The same rows as plain dicts are the same tasks: served from the store.
    again = loom.map(frame.to_dict("records"), task_name="frame")
    assert all(r.cached for r in again)
    events = list(loom.stream_events(frame))
    assert events[0].total == 3


def test_a_dataframe_progress_total_is_its_length(
    make_loom: LoomFactory, server: FakeLLMServer, capsys: pytest.CaptureFixture[str]
) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"text": [f"row {i}" for i in range(7)]})
    batch = make_loom(server).map(frame, progress=True)
    assert len(batch) == 7
    assert "7/7" in capsys.readouterr().err


def test_a_dataframe_is_read_lazily() -> None:
    import tracemalloc

    pd = pytest.importorskip("pandas")
    np = pytest.importorskip("numpy")
    from loom_core._inputs import records_of

    rows = 200_000
    frame = pd.DataFrame({"text": np.full(rows, "some text"), "n": np.arange(rows)})
    tracemalloc.start()
    try:
        records = iter(records_of(frame))
        first = next(records)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert first == {"text": "some text", "n": 0}
    assert peak < 1_000_000  # a copy of every row as a dict would take tens of MB


def test_missing_values_in_a_dataframe_name_their_column(
    make_loom: LoomFactory, server: FakeLLMServer
) -> None:
    pd = pytest.importorskip("pandas")
    np = pytest.importorskip("numpy")
    frame = pd.DataFrame(
        {
            "text": ["ok", "ok", "ok", "ok"],
            "score": [1.0, np.nan, 2.0, 3.0],
            "count": pd.array([1, 2, None, 4], dtype="Int64"),
            "when": pd.to_datetime(["2024-01-02", "2024-01-03", "2024-01-04", None]),
        }
    )
    loom = make_loom(server)
    batch = loom.map(frame)
    assert batch[0].is_success
    assert batch[0].input_data == {
        "text": "ok",
        "score": 1.0,
        "count": 1,
        "when": "2024-01-02T00:00:00",
    }
    for index, column in [(1, "$.score"), (2, "$.count"), (3, "$.when")]:
        error = batch[index].error
        assert error is not None and error.code is ErrorCode.INPUT_INVALID
        assert column in error.message, error.message
    assert "NaN" in (batch[1].error.message if batch[1].error else "")
    assert server.request_count == 1


def test_a_series_is_one_record(make_loom: LoomFactory, server: FakeLLMServer) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"text": ["a", "b"], "n": [1, 2]})
    loom = make_loom(server)
    rows = [row for _, row in frame.iterrows()]
    batch = loom.map(rows)
    assert [r.input_data for r in batch] == [{"text": "a", "n": 1}, {"text": "b", "n": 2}]
    assert loom.process(frame.iloc[1]).input_data == {"text": "b", "n": 2}


def test_dataframe_column_names_must_be_strings(
    make_loom: LoomFactory, server: FakeLLMServer
) -> None:
    pd = pytest.importorskip("pandas")
    loom = make_loom(server)
    with pytest.raises(LoomUsageError, match="column names must be strings"):
        loom.map(pd.DataFrame([[1, 2]]))
    with pytest.raises(LoomUsageError, match="repeated column names: a"):
        loom.map(pd.DataFrame([[1, 2]], columns=["a", "a"]))


def test_numpy_and_other_values_in_any_input(make_loom: LoomFactory, server: FakeLLMServer) -> None:
    import datetime
    import decimal

    np = pytest.importorskip("numpy")
    loom = make_loom(server, prompt_template="{{ text }}")
    converted = loom.process(
        {
            "text": "x",
            "i": np.int64(3),
            "f": np.float32(0.5),
            "b": np.bool_(True),
            "arr": np.array([[1, 2], [3, 4]]),
            "nested": [{"v": np.int16(7)}],
            "day": datetime.date(2024, 5, 1),
            "at": datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.UTC),
            "price": decimal.Decimal("9.90"),
        }
    )
    assert converted.is_success, converted.error
    assert converted.input_data == {
        "text": "x",
        "i": 3,
        "f": 0.5,
        "b": True,
        "arr": [[1, 2], [3, 4]],
        "nested": [{"v": 7}],
        "day": "2024-05-01",
        "at": "2024-05-01T12:30:00+00:00",
        "price": "9.90",
    }
    assert type(converted.input_data["i"]) is int and type(converted.input_data["b"]) is bool
    plain = dict(converted.input_data)
    assert loom.process(plain).task_id == converted.task_id

    refused = {
        "text": ("x", None),
        "blob": (b"raw", "bytes are not text"),
        "nan32": (np.float32("nan"), "NaN"),
        "dec": (decimal.Decimal("NaN"), "Decimal"),
        "span": (datetime.timedelta(1), "timedelta"),
    }
    for key, (value, fragment) in refused.items():
        if fragment is None:
            continue
        result = loom.process({"text": "x", key: value})
        assert result.error is not None and result.error.code is ErrorCode.INPUT_INVALID
        assert f"$.{key}" in result.error.message and fragment in result.error.message, (
            result.error.message
        )


def test_nested_mappings_become_dicts() -> None:
    from collections import UserDict
    from types import MappingProxyType

    from loom_core._inputs import prepare_input

    prepared = prepare_input({"m": MappingProxyType({"b": 1, "a": UserDict({"z": 2})})})
    assert prepared.failure is None
    assert prepared.data == {"m": {"a": {"z": 2}, "b": 1}}

    class Broken(UserDict[str, Any]):
        def items(self) -> Any:
            raise OSError("the mapping is gone")

    broken = prepare_input({"text": "x", "m": Broken()})
    assert broken.failure is not None and broken.failure.error is not None
    assert "$.m cannot be read: OSError: the mapping is gone" in broken.failure.error.message
