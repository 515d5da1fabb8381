"""TaskLoom's configuration: bad values and unknown keyword arguments fail at construction,
provider extras go through extra_body, and credentials never reach the config, the store or a
repr."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from loom_backends import CallableBackend
from loom_backends.testing import FakeLLMServer
from loom_core import TaskLoom
from loom_protocol import ChatRequest, LoomUsageError

from .conftest import LoomFactory

# Every name the issue lists, plus the usual family, each with a recognisable value.
SECRET_PARAMS = {
    "subscription_key": "SECRET-subscription-1",
    "Ocp-Apim-Subscription-Key": "SECRET-ocp-2",
    "key": "SECRET-key-3",
    "bearer": "SECRET-bearer-4",
    "jwt": "SECRET-jwt-5",
    "sig": "SECRET-sig-6",
    "pass": "SECRET-pass-7",
    "api_key": "SECRET-api-key-8",
    "Authorization": "Bearer SECRET-authorization-9",
    "access_token": "SECRET-token-10",
    "client_secret": "SECRET-secret-11",
    "password": "SECRET-password-12",
    "x-amz-signature": "SECRET-signature-13",
    "credentials": {"user": "SECRET-credential-14"},
}
# Parameters that look close to a secret name and must stay visible (and in the fingerprint).
VISIBLE_PARAMS = {"max_tokens_hint": 1, "top_k": 40, "keywords": ["alpha"], "stop_token_ids": [7]}


def _loom(**kwargs: Any) -> TaskLoom[Any]:
    kwargs.setdefault("base_url", "http://127.0.0.1:9/v1")
    return TaskLoom("fake-model", "{{ text }}", **kwargs)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)


# -- item 7 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [math.nan, math.inf, 0, -1, True, "60"])
def test_a_bad_timeout_is_refused(timeout: object) -> None:
    with pytest.raises(LoomUsageError, match="timeout must be a finite number of seconds > 0"):
        _loom(timeout=timeout)
    # The same rule with an explicit backend, which does not use it.
    with pytest.raises(LoomUsageError, match="timeout must be a finite number of seconds > 0"):
        TaskLoom("m", "{{ text }}", backend=CallableBackend(str), timeout=timeout)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("base_url", "problem"),
    [
        (123, r"base_url must be an http\(s\):// URL string, got int"),
        ("http://[::1", "base_url is not a valid URL"),
        ("localhost:8000/v1", "base_url must start with http:// or https://"),
        ("https://u:PW-SECRET@h/v1", "base_url must not contain credentials"),
    ],
)
def test_a_bad_base_url_is_refused(base_url: object, problem: str) -> None:
    with pytest.raises(LoomUsageError, match=problem) as info:
        _loom(base_url=base_url, api_key="sk-x")
    assert "PW-SECRET" not in str(info.value)


@pytest.mark.parametrize("temperature", [math.nan, math.inf, -0.5, 2.5, True, "0.2"])
def test_a_bad_temperature_says_what_it_must_be(temperature: object) -> None:
    with pytest.raises(LoomUsageError, match=r"temperature must be a finite number in \[0, 2\]"):
        _loom(temperature=temperature)


@pytest.mark.parametrize("max_tokens", [0, -1, True, 1.5, math.nan, "100"])
def test_a_bad_max_tokens_says_what_it_must_be(max_tokens: object) -> None:
    with pytest.raises(LoomUsageError, match=r"max_tokens must be an int >= 1"):
        _loom(max_tokens=max_tokens)


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"top_p": math.nan}, r"top_p must be a finite number in \[0, 1\]"),
        ({"seed": 1.5}, "seed must be an int"),
        ({"max_completion_tokens": 0}, "max_completion_tokens must be an int >= 1"),
        ({"max_retries": True}, "max_retries must be an int >= 0"),
        ({"stop": [math.inf]}, "generation parameters must be JSON values"),
    ],
)
def test_other_bad_values_are_refused(kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(LoomUsageError, match=problem):
        _loom(**kwargs)


# -- item 8 --------------------------------------------------------------------------------------


def test_no_key_for_the_official_endpoint_names_the_variable() -> None:
    with pytest.raises(LoomUsageError, match="set OPENAI_API_KEY"):
        TaskLoom("gpt-4o-mini", "{{ text }}")
    with pytest.raises(LoomUsageError, match="set ANTHROPIC_API_KEY"):
        TaskLoom("claude-3-5-haiku-latest", "{{ text }}")


def test_a_local_server_needs_no_key(server: FakeLLMServer) -> None:
    with TaskLoom("fake-model", "{{ text }}", base_url=server.base_url) as loom:
        assert loom.process({"text": "hi"}).is_success
    assert "authorization" not in server.requests[0].headers


# -- item 9 --------------------------------------------------------------------------------------


def test_a_misspelled_parameter_gets_a_did_you_mean() -> None:
    with pytest.raises(LoomUsageError) as info:
        _loom(temprature=0.2)
    message = str(info.value)
    assert "unknown generation parameter 'temprature'" in message
    assert "did you mean 'temperature'?" in message
    assert "extra_body" in message


@pytest.mark.parametrize("name", ["max_workers", "task_name", "progress", "ordered"])
def test_batch_arguments_given_to_the_constructor_say_where_they_belong(name: str) -> None:
    with pytest.raises(
        LoomUsageError, match=rf"{name} is an argument of \S*(map|stream)\(\).*, not of TaskLoom"
    ):
        _loom(**{name: 5})
    # Also for a backend without a declared parameter set.
    with pytest.raises(LoomUsageError, match=rf"{name} is an argument of"):
        TaskLoom("m", "{{ text }}", backend=CallableBackend(str), **{name: 5})


def test_the_issues_example_fails_before_anything_is_sent(server: FakeLLMServer) -> None:
    with pytest.raises(LoomUsageError, match="max_workers is an argument of"):
        TaskLoom(
            "fake-model", "{{ text }}", base_url=server.base_url, max_workers=5, temprature=0.2
        )
    assert server.request_count == 0


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"max_retry": 2}, "did you mean 'max_retries', a TaskLoom argument?"),
        ({"sytem_prompt": "x"}, "did you mean 'system_prompt', a TaskLoom argument?"),
        ({"n": 2}, "one answer per input"),
        ({"stream": True}, "streaming responses are not supported"),
        ({"messages": []}, "builds the messages"),
        ({"top_k": 5}, "unknown generation parameter 'top_k'"),  # OpenAI: top_k is an extra
        ({"headers": {"a": "b"}}, "unknown generation parameter 'headers'"),
    ],
)
def test_unknown_or_reserved_arguments_are_refused(kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(LoomUsageError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        _loom(**kwargs)


def test_anthropic_accepts_its_own_parameters_and_refuses_openai_ones() -> None:
    loom = TaskLoom(
        "anthropic/claude-x",
        "{{ text }}",
        base_url="http://127.0.0.1:9",
        top_k=5,
        stop_sequences=["END"],
        thinking={"type": "enabled", "budget_tokens": 1024},
    )
    loom.close()
    with pytest.raises(LoomUsageError, match="unknown generation parameter 'seed'"):
        TaskLoom("anthropic/claude-x", "{{ text }}", base_url="http://127.0.0.1:9", seed=1)


def test_a_backend_without_a_declared_set_gets_every_name_but_misspellings(
    tmp_path: Path,
) -> None:
    seen: list[ChatRequest] = []

    def answer(request: ChatRequest) -> str:
        seen.append(request)
        return "ok"

    with TaskLoom(
        "m", "{{ text }}", backend=CallableBackend(answer), my_knob=3, top_k=2, temperature=0.1
    ) as loom:
        assert loom.process({"text": "x"}).is_success
    assert seen[0].params == {"my_knob": 3, "top_k": 2}
    assert seen[0].temperature == 0.1
    with pytest.raises(LoomUsageError, match=r"misspelling of 'temperature'.*extra_body"):
        TaskLoom("m", "{{ text }}", backend=CallableBackend(answer), temprature=0.1)


def test_extra_body_reaches_the_provider_and_the_fingerprint(
    make_loom: LoomFactory, server: FakeLLMServer
) -> None:
    extra = {"top_k": 20, "min_p": 0.05, "chat_template_kwargs": {"enable_thinking": False}}
    loom = make_loom(server, extra_body=extra, top_p=0.9)
    assert loom.process({"text": "hi"}).is_success
    body = server.requests[0].body
    assert body["top_k"] == 20
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert body["top_p"] == 0.9
    assert "extra_body" not in body
    assert (
        make_loom(server, extra_body={**extra, "top_k": 21}, top_p=0.9).config_fp != loom.config_fp
    )
    assert make_loom(server, extra_body=dict(extra), top_p=0.9).config_fp == loom.config_fp


@pytest.mark.parametrize(
    ("extra_body", "problem"),
    [
        ([("a", 1)], "extra_body must be a dict of JSON values"),
        ({1: "a"}, "extra_body keys must be strings"),
        ({"messages": []}, "extra_body may not set 'messages'"),
        ({"model": "x"}, "extra_body may not set 'model'"),
        ({"top_p": 0.5}, "'top_p' is given both as a keyword argument and in extra_body"),
        ({"x": {1, 2}}, "generation parameters must be JSON values"),
        ({"x": math.nan}, "generation parameters must be JSON values"),
    ],
)
def test_a_bad_extra_body_is_refused(extra_body: object, problem: str) -> None:
    with pytest.raises(LoomUsageError, match=problem):
        _loom(extra_body=extra_body, top_p=0.1)


# -- item 11 -------------------------------------------------------------------------------------


def test_secrets_are_masked_in_as_dict_repr_and_the_runs_table(
    make_loom: LoomFactory, server: FakeLLMServer, tmp_path: Path
) -> None:
    extra = {
        **SECRET_PARAMS,
        **VISIBLE_PARAMS,
        "nested": [{"Ocp-Apim-Subscription-Key": "SECRET-deep-15"}],
    }
    loom = make_loom(server, extra_body=extra, max_tokens=50)
    # The clear values still go to the provider.
    assert loom.process({"text": "hi"}, task_name="t").is_success
    assert server.requests[0].body["subscription_key"] == "SECRET-subscription-1"

    as_dict = loom.config.as_dict()
    shown = {"as_dict": repr(as_dict), "config": repr(loom.config), "loom": repr(loom)}
    for where, text in shown.items():
        assert "SECRET" not in text, where
    params = as_dict["params"]["extra_body"]
    for name in SECRET_PARAMS:
        assert params[name] == "***", name
    for name, value in VISIBLE_PARAMS.items():
        assert params[name] == value, name
    assert as_dict["max_tokens"] == 50

    loom.close()
    raw = (tmp_path / "loom.db").read_bytes()
    assert b"SECRET" not in raw
    with sqlite3.connect(tmp_path / "loom.db") as conn:
        stored = " ".join(str(row) for row in conn.execute("SELECT * FROM loom_runs"))
    assert "SECRET" not in stored
    assert "Ocp-Apim-Subscription-Key" in stored and "stop_token_ids" in stored


def test_a_secret_does_not_change_the_fingerprint_and_a_parameter_does(
    make_loom: LoomFactory, server: FakeLLMServer
) -> None:
    first = make_loom(server, extra_body={"subscription_key": "SECRET-a", "top_k": 1})
    rotated = make_loom(server, extra_body={"subscription_key": "SECRET-b", "top_k": 1})
    assert first.config_fp == rotated.config_fp
    assert (
        make_loom(server, extra_body={"subscription_key": "SECRET-a", "top_k": 2}).config_fp
        != first.config_fp
    )
    assert (
        make_loom(server, extra_body={"stop_token_ids": [1]}).config_fp
        != make_loom(server, extra_body={"stop_token_ids": [2]}).config_fp
    )
    assert make_loom(server, max_tokens=10).config_fp != make_loom(server, max_tokens=11).config_fp


def test_repr_shows_the_backend_without_its_secrets(server: FakeLLMServer) -> None:
    with TaskLoom(
        "fake-model",
        "{{ text }}",
        base_url=f"{server.base_url}?api-version=1&api-key=SECRET-q",
        api_key="SECRET-k",
    ) as loom:
        shown = repr(loom)
        assert loom.process({"text": "hi"}).is_success
    assert "SECRET" not in shown
    assert "api-version=1" in shown
    assert server.requests[0].query == "api-version=1&api-key=SECRET-q"


@pytest.mark.parametrize("depth", [300, 5000])
def test_a_hostile_nesting_is_a_usage_error_not_a_crash(depth: int) -> None:
    nested: Any = 1
    for _ in range(depth):
        nested = {"k": [nested]}
    with pytest.raises(LoomUsageError, match="nest deeper than 64 levels"):
        _loom(extra_body={"x": nested})
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(LoomUsageError, match="or hold a cycle"):
        _loom(extra_body={"x": cycle})
    # An ordinary nesting is fine.
    _loom(extra_body={"a": {"b": {"c": [{"d": 1}]}}}).close()


def test_a_timeout_beyond_a_day_and_a_key_with_a_newline_are_refused() -> None:
    with pytest.raises(LoomUsageError, match=r"timeout must be .* <= 86400, got 1e\+308"):
        _loom(timeout=1e308)
    with pytest.raises(LoomUsageError, match="api_key contains a line break") as info:
        _loom(api_key="sk-SECRET\n")
    assert "SECRET" not in str(info.value)


def test_anthropic_takes_temperature_in_0_1() -> None:
    # The Messages API answers 400 above 1.0: that would fail every row of the batch.
    with pytest.raises(
        LoomUsageError,
        match=r"temperature \(for AnthropicBackend\) must be a finite number in \[0, 1\]",
    ):
        TaskLoom("anthropic/claude-x", "{{ text }}", base_url="http://127.0.0.1:9", temperature=1.5)
    TaskLoom(
        "anthropic/claude-x", "{{ text }}", base_url="http://127.0.0.1:9", temperature=1
    ).close()
    _loom(temperature=1.5).close()  # OpenAI-compatible: [0, 2]


def test_a_config_without_secrets_keeps_its_0_1_fingerprint() -> None:
    # Computed by the 0.1 code: masking credentials must not invalidate existing caches.
    from loom_core._config import LoomConfig

    config = LoomConfig(
        model="gpt-4o-mini",
        prompt_template="{{ text }}",
        system_prompt="s",
        output={"kind": "text"},
        temperature=0.2,
        max_tokens=5,
        params={
            "top_p": 0.9,
            "seed": 1,
            "stop": ("a", "b"),
            "metadata": {"x": "https://example.com/a?b=c"},
        },
    )
    assert config.fingerprint == "45012783dfc626b3a01fc43cba4f5ab6d15a4a0156a58b087137890ccab5bf4d"
