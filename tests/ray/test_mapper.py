"""LoomMapper called directly, in this process: batch formats, order, failed rows, misuse.

These need no Ray cluster (no rpm/tpm, so no shared-limit actor): Ray Data calls the same
``__call__`` with the same batches in its actors.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from loom_backends.testing import FakeLLMServer, FakeReply, RecordedRequest
from loom_protocol import LoomUsageError
from loom_ray import OUTPUT_COLUMNS, LoomMapper

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def answer(req: RecordedRequest) -> str | FakeReply:
    text = req.last_user_text
    if "refuse" in text:
        return FakeReply(status=400, body={"error": {"message": "refused on purpose"}})
    return json.dumps({"echo": text})


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(answer) as srv:
        yield srv


@pytest.fixture
def mapper(server: FakeLLMServer, tmp_path: Path) -> Iterator[LoomMapper]:
    made = LoomMapper(
        "fake-model",
        "{{ text }}",
        task_name="mapper-test",
        store=str(tmp_path / "loom.db"),
        response_model=dict,
        base_url=server.base_url,
        api_key="sk-test",
        max_retries=0,
    )
    yield made
    made.close()


def echoes(out: Any) -> list[Any]:
    return [json.loads(d)["echo"] if d is not None else None for d in out["loom_data"]]


def test_numpy_batch_keeps_columns_and_order(mapper: LoomMapper, server: FakeLLMServer) -> None:
    texts = [f"row {i}" for i in range(50)]
    batch = {"text": np.array(texts, dtype=object), "n": np.arange(50)}
    out = mapper(batch)
    assert list(out) == ["text", "n", *OUTPUT_COLUMNS]
    assert out["text"] is batch["text"] and out["n"] is batch["n"]  # input columns untouched
    assert echoes(out) == texts  # each result sits on its own row, in the batch's order
    assert out["loom_ok"].dtype == bool and out["loom_ok"].all()
    assert not out["loom_cached"].any()
    assert all(isinstance(t, str) and len(t) == 64 for t in out["loom_task_id"])
    assert server.request_count == 50
    again = mapper(batch)
    assert again["loom_cached"].all() and server.request_count == 50
    assert list(again["loom_task_id"]) == list(out["loom_task_id"])


def test_a_failed_task_is_a_row(mapper: LoomMapper) -> None:
    batch = {"text": np.array(["fine", "refuse me", "also fine"], dtype=object)}
    out = mapper(batch)
    assert list(out["loom_ok"]) == [True, False, True]
    assert list(out["loom_error_code"]) == [None, "provider_bad_request", None]
    assert out["loom_data"][1] is None
    assert echoes(out)[0::2] == ["fine", "also fine"]


def test_pandas_batch_comes_back_as_a_frame(mapper: LoomMapper) -> None:
    frame = pd.DataFrame({"text": ["a", "b", "c"], "score": [1.5, 2.5, 3.5]})
    out = mapper(frame)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == ["text", "score", *OUTPUT_COLUMNS]
    assert echoes(out) == ["a", "b", "c"]
    assert list(frame.columns) == ["text", "score"]  # the caller's frame is not changed


def test_pyarrow_batch(mapper: LoomMapper) -> None:
    table = pa.table({"text": ["x", "y"], "k": [1, 2]})
    out = mapper(table)
    assert list(out["text"]) == ["x", "y"]
    assert echoes(out) == ["x", "y"]


def test_hostile_cells_fail_their_row_only(mapper: LoomMapper, server: FakeLLMServer) -> None:
    batch = {
        "text": np.array(["ok", "nan", "bytes", "nested", "dict"], dtype=object),
        "extra": np.array(
            [1.0, math.nan, b"\x00\x01", np.array([[1, 2], [3, 4]]), {"a": np.int64(3)}],
            dtype=object,
        ),
    }
    out = mapper(batch)
    assert list(out["loom_ok"]) == [True, False, False, True, True]
    assert list(out["loom_error_code"])[1:3] == ["input_invalid", "input_invalid"]
    assert server.request_count == 3


def test_numpy_scalars_make_the_same_task_id_as_python_values(mapper: LoomMapper) -> None:
    a = mapper({"text": np.array(["same"], dtype=object), "n": np.array([7], dtype=np.int32)})
    b = mapper({"text": ["same"], "n": [7]})  # plain Python lists are a batch too
    c = mapper({"text": np.array(["same"], dtype=object), "n": np.array([8])})
    assert a["loom_task_id"][0] == b["loom_task_id"][0] != c["loom_task_id"][0]


def test_image_bytes_become_a_data_url(mapper: LoomMapper, server: FakeLLMServer) -> None:
    out = mapper({"text": np.array(["img"], dtype=object), "images": np.array([PNG], dtype=object)})
    assert out["loom_ok"][0], out["loom_error_code"][0]
    parts = server.requests[-1].body["messages"][-1]["content"]
    urls = [p["image_url"]["url"] for p in parts if p.get("type") == "image_url"]
    assert urls and urls[0].startswith("data:image/png;base64,")


def test_image_path_that_does_not_exist_fails_its_row(mapper: LoomMapper) -> None:
    out = mapper(
        {"text": np.array(["a"], dtype=object), "images": np.array(["/nope/x.png"], dtype=object)}
    )
    assert list(out["loom_error_code"]) == ["image_unreadable"]


def test_input_columns_leave_an_id_out_of_the_task_id(
    server: FakeLLMServer, tmp_path: Path
) -> None:
    with_ids = LoomMapper(
        "fake-model",
        "{{ text }}",
        task_name="cols",
        store=str(tmp_path / "loom.db"),
        input_columns=["text"],
        base_url=server.base_url,
        api_key="sk-test",
    )
    try:
        out = with_ids({"text": np.array(["t", "t"], dtype=object), "id": np.array([1, 2])})
        assert out["loom_task_id"][0] == out["loom_task_id"][1]
        assert server.request_count == 1
        with pytest.raises(LoomUsageError, match="names 'text', not in the dataset"):
            with_ids({"other": np.array([1])})
    finally:
        with_ids.close()


def test_an_output_column_already_in_the_dataset_is_refused(mapper: LoomMapper) -> None:
    with pytest.raises(LoomUsageError, match="loom_ok"):
        mapper({"text": np.array(["a"], dtype=object), "loom_ok": np.array([True])})


def test_an_empty_batch(mapper: LoomMapper, server: FakeLLMServer) -> None:
    out = mapper({"text": np.array([], dtype=object)})
    assert len(out["loom_ok"]) == 0 and server.request_count == 0


def test_a_batch_of_another_type_is_refused(mapper: LoomMapper) -> None:
    with pytest.raises(LoomUsageError, match="batch of type list"):
        mapper([{"text": "a"}])


def test_response_model_by_import_path(server: FakeLLMServer, tmp_path: Path) -> None:
    usage = LoomMapper(
        "fake-model",
        "{{ text }}",
        task_name="usage",
        store=str(tmp_path / "loom.db"),
        response_model="loom_protocol:Usage",
        base_url=server.base_url,
        api_key="sk-test",
    )
    try:
        out = usage({"text": np.array(["x"], dtype=object)})
        # The class was imported in the mapper: the answer was validated into a Usage.
        assert out["loom_ok"][0], out["loom_error_code"][0]
        assert set(json.loads(out["loom_data"][0])) >= {"prompt_tokens", "total_tokens"}
    finally:
        usage.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task_name": ""}, "task_name"),
        ({"store": "relative.db"}, "relative path"),
        ({"store": None}, "needs store="),
        ({"db_path": "/tmp/x.db"}, "not db_path"),
        ({"max_workers": 0}, "max_workers"),
        ({"rpm": -1}, "rpm"),
        ({"input_columns": "text"}, "input_columns"),
        ({"input_columns": []}, "at least one"),
        ({"response_model": "no_colon"}, "module:Class"),
        ({"response_model": "loom_no_such_module:X"}, "cannot import"),
        ({"response_model": "loom_protocol:NoSuch"}, "has no"),
        ({"prompt_template": "{{ unclosed"}, "prompt_template"),
        ({"temprature": 0.2}, "temprature"),
    ],
)
def test_misuse_raises_at_construction(
    server: FakeLLMServer, tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    args: dict[str, Any] = {
        "model": "fake-model",
        "prompt_template": "{{ text }}",
        "task_name": "misuse",
        "store": str(tmp_path / "loom.db"),
        "base_url": server.base_url,
        "api_key": "sk-test",
    }
    args.update(kwargs)
    with pytest.raises(LoomUsageError, match=message):
        LoomMapper(**args)


def test_close_is_idempotent_and_a_closed_mapper_refuses(mapper: LoomMapper) -> None:
    mapper.close()
    mapper.close()
    with pytest.raises(LoomUsageError, match="closed"):
        mapper({"text": np.array(["a"], dtype=object)})


def test_two_batches_at_once_on_one_actor(mapper: LoomMapper, server: FakeLLMServer) -> None:
    # ActorPoolStrategy(max_concurrent_calls_per_actor=2) calls one mapper from two threads.
    import threading

    outs: dict[int, Any] = {}

    def call(k: int) -> None:
        texts = np.array([f"thread {k} row {i}" for i in range(200)], dtype=object)
        outs[k] = mapper({"text": texts})

    threads = [threading.Thread(target=call, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for k in range(2):
        assert echoes(outs[k]) == [f"thread {k} row {i}" for i in range(200)]
    assert server.request_count == 400


def test_a_decoded_image_array_fails_its_row_with_a_reason(mapper: LoomMapper) -> None:
    # ray.data.read_images hands decoded pixels; Loom takes files, URLs or bytes.
    pixels = np.empty(2, dtype=object)
    pixels[0] = np.zeros((4, 4, 3), dtype=np.uint8)
    pixels[1] = PNG
    out = mapper({"text": np.array(["decoded", "encoded"], dtype=object), "images": pixels})
    assert list(out["loom_ok"]) == [False, True]
    assert out["loom_error_code"][0] in ("image_unreadable", "input_invalid")


def test_a_store_that_fails_for_the_whole_batch_makes_store_error_rows(
    server: FakeLLMServer, tmp_path: Path
) -> None:
    db = tmp_path / "loom.db"
    broken = LoomMapper(
        "fake-model",
        "{{ text }}",
        task_name="broken-store",
        store=str(db),
        base_url=server.base_url,
        api_key="sk-test",
    )
    try:
        assert broken({"text": np.array(["before"], dtype=object)})["loom_ok"][0]
        for path in tmp_path.glob("loom.db*"):  # the database file and its WAL, overwritten
            with open(path, "r+b") as handle:
                handle.write(b"\x00" * 4096)
        out = broken({"text": np.array(["after 1", "after 2"], dtype=object)})
        assert list(out["loom_ok"]) == [False, False]
        assert list(out["loom_error_code"]) == ["store_error", "store_error"]
        assert list(out["text"]) == ["after 1", "after 2"]
    finally:
        with contextlib.suppress(Exception):
            broken.close()
