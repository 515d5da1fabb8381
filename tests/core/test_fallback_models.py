"""Fallback models: used when the model's provider is out; in the fingerprint; recorded."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from loom_backends.testing import FakeLLMServer, FakeReply, RecordedRequest
from loom_core import TaskLoom
from loom_protocol import ErrorCode, LoomUsageError


class ByModel:
    """Answers by the requested model: ``down`` models get ``status``, others a JSON echo."""

    def __init__(self, down: dict[str, int]) -> None:
        self.down = down

    def __call__(self, req: RecordedRequest) -> FakeReply:
        model = req.body.get("model")
        if model in self.down:
            return FakeReply(content="model overloaded", status=self.down[model])
        return FakeReply(content=json.dumps({"model": model, "text": req.last_user_text}))


def test_an_unavailable_model_falls_back_and_the_result_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    handler = ByModel({"big": 503, "medium": 503})
    # The fake server names no model of its own in its answers unless told: use "" -> None.
    with FakeLLMServer(handler) as server, caplog.at_level(logging.INFO, logger="loom"):
        with TaskLoom(
            "big",
            "{{ text }}",
            response_model=dict,
            base_url=server.base_url,
            fallback_models=["medium", "small"],
            max_retries=1,
            db_path=tmp_path / "loom.db",
        ) as loom:
            batch = loom.map(["a", "b", "c"], task_name="fb", max_workers=2)
        sent = [r.body["model"] for r in server.requests]
    assert [r.data for r in batch] == [{"model": "small", "text": t} for t in "abc"]
    assert all(r.is_success for r in batch)
    # Each model had its own retry budget: 2 calls to big, 2 to medium, then small.
    assert sent.count("big") == 6 and sent.count("medium") == 6 and sent.count("small") == 3
    assert any(
        r.name == "loom.fallback" and "trying fallback model small" in r.getMessage()
        for r in caplog.records
    )
    assert any(r.name == "loom.retry" for r in caplog.records)
    # The result records the model that answered (the server's own name for it, else ours).
    assert {r.model for r in batch} <= {"small", "fake-model"}


def test_a_non_outage_error_does_not_fall_back(tmp_path: Path) -> None:
    with FakeLLMServer(ByModel({"big": 400})) as server:
        with TaskLoom(
            "big",
            "{{ text }}",
            base_url=server.base_url,
            fallback_models=["small"],
            db_path=tmp_path / "loom.db",
        ) as loom:
            result = loom.process("a")
        sent = [r.body["model"] for r in server.requests]
    assert not result.is_success and result.error is not None
    assert result.error.code is ErrorCode.PROVIDER_BAD_REQUEST
    assert sent == ["big"]
    assert result.model == "big"


def test_every_model_out_fails_with_the_last_error(tmp_path: Path) -> None:
    with (
        FakeLLMServer(ByModel({"big": 502, "small": 502})) as server,
        TaskLoom(
            "big",
            "{{ text }}",
            base_url=server.base_url,
            fallback_models=["small"],
            max_retries=0,
            db_path=tmp_path / "loom.db",
        ) as loom,
    ):
        result = loom.process("a")
    assert result.error is not None and result.error.code is ErrorCode.PROVIDER_UNAVAILABLE
    assert result.model == "small"


def test_fallbacks_are_in_the_fingerprint_endpoints_are_not(tmp_path: Path) -> None:
    def fp(**kwargs: object) -> str:
        loom = TaskLoom("m", "{{ text }}", db_path=tmp_path / "x.db", **kwargs)  # type: ignore[arg-type]
        loom.close()
        return loom.config_fp

    plain = fp(base_url="http://a/v1")
    assert fp(base_url=["http://a/v1", "http://b/v1"]) == plain
    assert fp(endpoints=[{"url": "http://c/v1", "weight": 3}, "http://d/v1"]) == plain
    with_fallback = fp(base_url="http://a/v1", fallback_models=["m2"])
    assert with_fallback != plain
    assert fp(base_url="http://a/v1", fallback_models=["m3"]) != with_fallback
    assert fp(base_url="http://a/v1", fallback_models=("m2",)) == with_fallback


def test_a_fallback_of_another_provider_gets_its_own_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key-0000")
    loom = TaskLoom(
        "m",
        "{{ text }}",
        base_url=["http://a/v1", "http://b/v1"],
        fallback_models=["claude-3-5-haiku", "m-small"],
        db_path=tmp_path / "x.db",
    )
    try:
        backends = loom._engine.runner.chain._chain  # type: ignore[union-attr]
        assert "EndpointPool" in type(backends[0][1].backend).__name__
        assert type(backends[1][1].backend).__name__ == "AnthropicBackend"
        assert backends[2][1].backend is backends[0][1].backend  # same route: shared
        assert "sk-ant-test-key-0000" not in repr(loom)
    finally:
        loom.close()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("small", r"must be a list of model names, got str \(write \['small'\]\)"),
        (["small", "small"], r"fallback_models\[1\] \('small'\) is given twice"),
        (["m"], r"fallback_models\[0\] is the model itself"),
        ([""], r"fallback_models\[0\] must be a non-empty string"),
        ([3], r"fallback_models\[0\] must be a non-empty string"),
        (["x"] * 0 + [f"m{i}" for i in range(1, 18)], "at most 16"),
        (["nope/x"], "fallback model 'nope/x': unknown backend prefix"),
    ],
)
def test_bad_fallback_lists_are_refused(tmp_path: Path, value: object, problem: str) -> None:
    with pytest.raises(LoomUsageError, match=problem):
        TaskLoom(
            "m",
            "{{ text }}",
            api_key="sk-x",
            fallback_models=value,
            db_path=tmp_path / "x.db",  # type: ignore[arg-type]
        )
