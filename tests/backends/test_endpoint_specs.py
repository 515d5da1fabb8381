"""Endpoint lists are checked whole, hard, and never show a key."""

from __future__ import annotations

import math
from typing import Any

import pytest

from loom_backends import (
    MAX_ENDPOINTS,
    AnthropicBackend,
    Endpoint,
    EndpointPool,
    OpenAIChatBackend,
    check_endpoints,
    resolve_backend,
)
from loom_protocol import LoomUsageError

SECRET = "sk-endpoint-secret-1234"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ([], "empty list"),
        ((), "empty list"),
        ("http://a/v1", "must be a list"),
        ({"url": "http://a/v1"}, "must be a list"),
        ({"http://a/v1"}, "must be a list"),
        (None, "must be a list"),
        (["http://a/v1", "http://A/v1/"], r"endpoints\[1\] \(http://A/v1/\) is the same server"),
        (["ftp://a/v1"], r"endpoints\[0\]: url must start with http"),
        (["http://a/v1", "not-a-url"], r"endpoints\[1\]: url must start with http"),
        ([{"url": "http://a/v1", "weight": 0}], "weight must be a finite number > 0"),
        ([{"url": "http://a/v1", "weight": -1}], "weight must be a finite number > 0"),
        ([{"url": "http://a/v1", "weight": math.nan}], "weight must be a finite number > 0"),
        ([{"url": "http://a/v1", "weight": math.inf}], "weight must be a finite number > 0"),
        ([{"url": "http://a/v1", "weight": True}], "weight must be a finite number > 0"),
        ([{"url": "http://a/v1", "weight": "2"}], "weight must be a finite number > 0"),
        ([{"url": "http://a/v1", "wieght": 2}], "unknown field 'wieght'"),
        ([{"weight": 2}], r"endpoints\[0\]: no 'url'"),
        ([3], r"endpoints\[0\] must be an Endpoint, a URL string or a dict"),
        ([{"url": "http://a/v1", "api_key_env": "A=B"}], "api_key_env must be the name"),
        ([{"url": "http://a/v1", "api_key_env": ""}], "api_key_env must be the name"),
        ([{"url": "http://a/v1", "api_key": 12}], "api_key must be a string"),
        ([{"url": "http://u:pw@a/v1"}], "must not contain credentials"),
        (["http://a/v1#frag"], "fragment"),
    ],
)
def test_bad_lists_are_refused_naming_the_entry(value: Any, problem: str) -> None:
    with pytest.raises(LoomUsageError, match=problem):
        check_endpoints(value)


def test_too_many_endpoints_are_refused() -> None:
    urls = [f"http://h{i}/v1" for i in range(MAX_ENDPOINTS + 1)]
    with pytest.raises(LoomUsageError, match=f"at most {MAX_ENDPOINTS}"):
        check_endpoints(urls)


def test_a_key_is_never_shown() -> None:
    # Given twice, with a newline, in a URL query: the message never carries it.
    cases: list[Any] = [
        [{"url": "http://a/v1", "api_key": SECRET, "api_key_env": "X"}],
        [{"url": "http://a/v1", "api_key": SECRET + "\n"}],
        [{"url": f"http://a/v1?api-key={SECRET}", "weight": 0}],
        [f"http://a/v1?api-key={SECRET}", f"http://a/v1?api-key={SECRET}"],
    ]
    for value in cases:
        with pytest.raises(LoomUsageError) as info:
            check_endpoints(value)
        assert SECRET not in str(info.value)
    endpoint = Endpoint("http://a/v1", api_key=SECRET, weight=2)
    assert SECRET not in repr(endpoint)
    assert "'***'" in repr(endpoint)
    pool = EndpointPool([endpoint, {"url": "http://b/v1", "api_key": SECRET + "b"}])
    assert SECRET not in repr(pool)
    assert SECRET not in repr(pool.status())


def test_endpoint_checks_itself_and_reads_its_key_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(LoomUsageError, match=r"Endpoint \(http://a/v1\): weight"):
        Endpoint("http://a/v1", weight=0)
    endpoint = Endpoint("http://a/v1", api_key_env="LOOM_TEST_EP_KEY")
    monkeypatch.delenv("LOOM_TEST_EP_KEY", raising=False)
    with pytest.raises(LoomUsageError, match=r"LOOM_TEST_EP_KEY .* is not set"):
        endpoint.key()
    monkeypatch.setenv("LOOM_TEST_EP_KEY", SECRET)
    assert endpoint.key() == SECRET
    assert SECRET not in repr(endpoint)
    monkeypatch.setenv("LOOM_TEST_EP_KEY", SECRET + "\n")
    with pytest.raises(LoomUsageError, match="control character") as info:
        endpoint.key()
    assert SECRET not in str(info.value)


def test_resolve_builds_a_pool_of_the_models_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOM_TEST_EP_KEY", SECRET)
    listed = ["http://a/v1", {"url": "http://b/v1", "api_key_env": "LOOM_TEST_EP_KEY"}]
    resolved = resolve_backend("my-model", base_url=listed, api_key="sk-shared")
    assert isinstance(resolved.backend, EndpointPool)
    assert [s.name for s in resolved.backend.status()] == ["http://a/v1", "http://b/v1"]
    # The pool declares the members' generation parameters (the engine checks against them).
    assert resolved.backend.generation_params == OpenAIChatBackend.generation_params  # type: ignore[attr-defined]
    anthropic = resolve_backend("claude-3-haiku", endpoints=["http://a", "http://b"], api_key="k")
    assert isinstance(anthropic.backend, EndpointPool)
    assert "AnthropicBackend" in repr(anthropic.backend)
    # A vLLM model id with '/' and a list: OpenAI-compatible, the model unchanged.
    vllm = resolve_backend("Qwen/Qwen2.5-7B", base_url=["http://a/v1", "http://b/v1"])
    assert vllm.model == "Qwen/Qwen2.5-7B"
    # A list of one is that one backend: no pool.
    one = resolve_backend("m", endpoints=[{"url": "http://a/v1", "api_key": "k"}])
    assert isinstance(one.backend, OpenAIChatBackend)
    assert one.backend.base_url == "http://a/v1"
    anthropic_one = resolve_backend("anthropic/claude-x", base_url=["http://a"], api_key="k")
    assert isinstance(anthropic_one.backend, AnthropicBackend)


def test_resolve_refuses_both_forms_and_bad_lists() -> None:
    with pytest.raises(LoomUsageError, match="base_url= or endpoints=, not both"):
        resolve_backend("m", base_url="http://a/v1", endpoints=["http://b/v1"])
    with pytest.raises(LoomUsageError, match=r"base_url\[1\]"):
        resolve_backend("m", base_url=["http://a/v1", "http://a/v1"])
    with pytest.raises(LoomUsageError, match="base_url is an empty list"):
        resolve_backend("m", base_url=[])


def test_pool_settings_are_checked() -> None:
    for kwargs, problem in [
        ({"failure_threshold": 0}, "failure_threshold must be an int >= 1"),
        ({"failure_threshold": True}, "failure_threshold must be an int >= 1"),
        ({"cooldown": 0}, "cooldown must be a finite number"),
        ({"max_cooldown": math.nan}, "max_cooldown must be a finite number"),
        ({"cooldown": 5, "max_cooldown": 1}, "must be at least cooldown"),
    ]:
        with pytest.raises(LoomUsageError, match=problem):
            EndpointPool(["http://a/v1", "http://b/v1"], **kwargs)
    pool = EndpointPool(["http://a/v1", "http://b/v1"])
    for index, limit, problem in [
        (2, 1, "past the pool's 2 endpoints"),
        (-1, 1, "index must be an int >= 0"),
        (0, 0, "limit must be an int >= 1"),
        (0, 1.5, "limit must be an int >= 1"),
    ]:
        with pytest.raises(LoomUsageError, match=problem):
            pool.set_limit(index, limit)


def test_a_factory_that_refuses_or_returns_no_backend_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    def no_backend(**kwargs: object) -> object:
        return 42

    with pytest.raises(
        LoomUsageError, match=r"endpoints\[0\] \(http://a/v1\): the factory returned int"
    ):
        EndpointPool(["http://a/v1", "http://b/v1"], factory=no_backend)  # type: ignore[arg-type]
    # The official OpenAI host without a key: refused, naming the entry.
    with pytest.raises(
        LoomUsageError, match=r"endpoints\[1\] \(https://api.openai.com/v1\): .*no API key"
    ):
        EndpointPool([{"url": "http://a/v1"}, "https://api.openai.com/v1"], api_key=None)
