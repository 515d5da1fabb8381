"""resolve_backend: every precedence rule, and a real entry-point registration."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from loom_backends import (
    AnthropicBackend,
    CallableBackend,
    OpenAIChatBackend,
    OpenAIClientBackend,
    resolve_backend,
)
from loom_protocol import LoomUsageError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)


class SDKLike:
    class chat:
        class completions:
            @staticmethod
            def create(**body: Any) -> Any:
                return {"choices": [{"message": {"content": "x"}}]}


def test_an_explicit_backend_wins() -> None:
    backend = CallableBackend(lambda req: "x")
    resolved = resolve_backend("anthropic/claude-x", client=SDKLike(), backend=backend)
    assert resolved.backend is backend
    assert resolved.model == "anthropic/claude-x"


def test_an_object_that_is_no_backend_is_refused() -> None:
    with pytest.raises(LoomUsageError, match=r"Backend protocol.*got SDKLike"):
        resolve_backend("m", backend=SDKLike())  # type: ignore[arg-type]
    with pytest.raises(LoomUsageError, match="got type"):
        resolve_backend("m", backend=CallableBackend)  # type: ignore[arg-type]


def test_a_client_that_is_a_backend_is_used_as_it_is() -> None:
    backend = CallableBackend(lambda req: "x")
    assert resolve_backend("m", client=backend).backend is backend


def test_an_sdk_client_is_wrapped() -> None:
    resolved = resolve_backend("gpt-4o-mini", client=SDKLike())
    assert isinstance(resolved.backend, OpenAIClientBackend)
    assert resolved.model == "gpt-4o-mini"


def test_any_other_client_is_refused_by_type() -> None:
    with pytest.raises(
        LoomUsageError, match=r"client must be a Backend or an OpenAI SDK client.*dict"
    ):
        resolve_backend("m", client={})


@pytest.mark.parametrize(
    ("model", "cls", "sent"),
    [
        ("anthropic/claude-3-5-haiku", AnthropicBackend, "claude-3-5-haiku"),
        ("claude-3-5-haiku", AnthropicBackend, "claude-3-5-haiku"),
        ("openai/gpt-4o", OpenAIChatBackend, "gpt-4o"),
        ("openai/claude-via-a-proxy", OpenAIChatBackend, "claude-via-a-proxy"),
        ("gpt-4o-mini", OpenAIChatBackend, "gpt-4o-mini"),
        ("deepseek-chat", OpenAIChatBackend, "deepseek-chat"),
    ],
)
def test_by_model_name(model: str, cls: type, sent: str) -> None:
    resolved = resolve_backend(model, api_key="k", timeout=5.0, max_connections=7)
    assert type(resolved.backend) is cls
    assert resolved.model == sent


def test_base_url_and_key_go_to_the_chosen_backend() -> None:
    resolved = resolve_backend("anthropic/c", base_url="http://127.0.0.1:9/v1", api_key="k")
    assert isinstance(resolved.backend, AnthropicBackend)
    assert resolved.backend.url == "http://127.0.0.1:9/v1/messages"


def test_an_unknown_prefix_needs_a_base_url() -> None:
    with pytest.raises(LoomUsageError) as caught:
        resolve_backend("meta-llama/Llama-3-8B")
    assert str(caught.value) == (
        "unknown backend prefix 'meta-llama' in model 'meta-llama/Llama-3-8B'; known: "
        "anthropic, openai; pass base_url=... for an OpenAI-compatible server whose model "
        "ids contain '/'"
    )


def test_an_unknown_prefix_with_a_base_url_keeps_the_model_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resolved = resolve_backend("meta-llama/Llama-3-8B", base_url="http://127.0.0.1:8000/v1")
    assert isinstance(resolved.backend, OpenAIChatBackend)
    assert resolved.model == "meta-llama/Llama-3-8B"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")
    assert resolve_backend("Qwen/Qwen2-7B").model == "Qwen/Qwen2-7B"


@pytest.mark.parametrize("model", ["", "   ", "/x", "anthropic/"])
def test_empty_models_are_refused(model: str) -> None:
    with pytest.raises(LoomUsageError, match="model"):
        resolve_backend(model)


# -- entry points --------------------------------------------------------------------------------


FACTORY_MODULE = """
from loom_backends import CallableBackend

calls = []

def make(**kwargs):
    calls.append(kwargs)
    return CallableBackend(lambda req: "from the plugin")

def make_nothing(**kwargs):
    return "not a backend"
"""


def register(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry_points: str) -> None:
    """Install a real (if tiny) distribution: a module and a dist-info with entry points."""
    (tmp_path / "loom_plugin_fixture.py").write_text(FACTORY_MODULE)
    info = tmp_path / "loom_plugin_fixture-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: loom-plugin-fixture\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(entry_points)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "loom_plugin_fixture", raising=False)


async def test_a_registered_prefix_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(
        tmp_path,
        monkeypatch,
        "[loom.backends]\nmistral = loom_plugin_fixture:make\n",
    )
    resolved = resolve_backend("mistral/large-2", base_url="http://x/v1", api_key="k", timeout=9)
    assert resolved.model == "large-2"
    assert (await resolved.backend.acomplete(_chat())).content == "from the plugin"
    await resolved.backend.aclose()
    plugin = sys.modules["loom_plugin_fixture"]
    assert plugin.calls == [
        {"base_url": "http://x/v1", "api_key": "k", "timeout": 9, "max_connections": 512}
    ]
    # The registered prefix is listed when another prefix is unknown.
    with pytest.raises(LoomUsageError, match="known: anthropic, openai, mistral;"):
        resolve_backend("other/x")


def test_a_factory_that_returns_no_backend_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(tmp_path, monkeypatch, "[loom.backends]\nbad = loom_plugin_fixture:make_nothing\n")
    with pytest.raises(LoomUsageError, match=r"entry point 'bad'.*returned str"):
        resolve_backend("bad/x")


def test_an_entry_point_that_does_not_load_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(tmp_path, monkeypatch, "[loom.backends]\ngone = loom_plugin_fixture:missing\n")
    with pytest.raises(LoomUsageError, match="cannot load entry point 'gone'"):
        resolve_backend("gone/x")


def _chat() -> Any:
    from loom_protocol import ChatRequest, Message

    return ChatRequest(model="m", messages=[Message(role="user", content="hi")])


def test_the_built_ins_win_over_an_entry_point_of_the_same_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(
        tmp_path,
        monkeypatch,
        "[loom.backends]\nanthropic = loom_plugin_fixture:make\n"
        "openai = loom_plugin_fixture:make\n",
    )
    anthropic = resolve_backend("anthropic/c", base_url="http://127.0.0.1:9", api_key="k")
    assert isinstance(anthropic.backend, AnthropicBackend)
    assert isinstance(resolve_backend("openai/m", api_key="k").backend, OpenAIChatBackend)
    assert sys.modules.get("loom_plugin_fixture") is None  # never loaded
    # ...and "known:" lists each prefix once.
    with pytest.raises(LoomUsageError, match="known: anthropic, openai;"):
        resolve_backend("other/x")


def test_a_broken_registration_does_not_touch_the_built_ins_or_plain_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(tmp_path, monkeypatch, "[loom.backends]\nclaude- = loom_plugin_fixture:missing\n")
    assert isinstance(resolve_backend("claude-x", api_key="k").backend, AnthropicBackend)
    assert isinstance(resolve_backend("gpt-4o", api_key="k").backend, OpenAIChatBackend)
    assert resolve_backend("anthropic/claude-x", api_key="k").model == "claude-x"
