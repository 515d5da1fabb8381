"""PromptTemplate: sandboxed, strict Jinja2 rendering with clear errors."""

from __future__ import annotations

import threading
from types import MappingProxyType
from typing import Any

import pytest

from loom_core._render import PromptTemplate, TemplateRenderError
from loom_protocol import LoomUsageError


def test_renders_variables_and_filters() -> None:
    template = PromptTemplate("Summarise: {{ text | upper }} ({{ meta.lang }})")
    assert template.render({"text": "hi", "meta": {"lang": "en"}}) == "Summarise: HI (en)"
    assert template.source == "Summarise: {{ text | upper }} ({{ meta.lang }})"


def test_no_html_escaping_and_trailing_newline_kept() -> None:
    template = PromptTemplate("{{ text }}\n")
    assert template.render({"text": "<b>Tom & 'Jerry'</b>"}) == "<b>Tom & 'Jerry'</b>\n"


def test_variables_are_the_undeclared_ones() -> None:
    template = PromptTemplate(
        "{% set greeting = 'hi' %}{{ greeting }} {{ name }}"
        "{% for item in items %}{{ item }}{% endfor %}{{ loop_free | default('') }}"
    )
    assert template.variables == frozenset({"name", "items", "loop_free"})


def test_accepts_any_mapping() -> None:
    template = PromptTemplate("{{ a }}-{{ b }}")
    assert template.render(MappingProxyType({"a": 1, "b": None})) == "1-None"


def test_missing_variable_names_it_and_the_input_keys() -> None:
    template = PromptTemplate("Summarise: {{ text }}")
    with pytest.raises(TemplateRenderError) as caught:
        template.render({"id": 7, "body": "x"})
    assert caught.value.message == (
        "template variable 'text' is undefined in prompt_template (input keys: body, id)"
    )
    assert str(caught.value) == caught.value.message


def test_missing_variable_with_an_empty_input() -> None:
    template = PromptTemplate("{{ text }}", name="system_prompt")
    with pytest.raises(TemplateRenderError, match="input keys: none") as caught:
        template.render({})
    assert "'text' is undefined in system_prompt" in caught.value.message


def test_many_input_keys_are_shortened() -> None:
    template = PromptTemplate("{{ text }}")
    with pytest.raises(TemplateRenderError) as caught:
        template.render({f"k{i:03d}": i for i in range(50)})
    assert "k000, k001" in caught.value.message
    assert "(30 more)" in caught.value.message
    assert "k049" not in caught.value.message


def test_missing_attribute_names_it_and_the_line() -> None:
    template = PromptTemplate("first line\n{{ meta.lang }}")
    with pytest.raises(TemplateRenderError) as caught:
        template.render({"meta": {}})
    message = caught.value.message
    assert "has no attribute 'lang'" in message
    assert "line 2" in message
    assert "input keys: meta" in message


@pytest.mark.parametrize(
    "source",
    [
        "{{ text.__class__.__mro__ }}",
        "{{ ''.__class__.__subclasses__() }}",
        "{{ text.format.__globals__ }}",
    ],
)
def test_sandbox_blocks_unsafe_access(source: str) -> None:
    template = PromptTemplate(source)
    with pytest.raises(TemplateRenderError, match="sandbox forbids") as caught:
        template.render({"text": "x"})
    assert "unsafe" in caught.value.message


def test_any_other_failure_while_rendering_is_a_render_error() -> None:
    template = PromptTemplate("a\nb\n{{ 1 / divisor }}")
    with pytest.raises(TemplateRenderError) as caught:
        template.render({"divisor": 0})
    assert caught.value.message == (
        "rendering prompt_template failed (line 3): ZeroDivisionError: division by zero"
    )


def test_non_mapping_input_is_a_render_error() -> None:
    template = PromptTemplate("{{ text }}")
    bad: Any = ["text"]
    with pytest.raises(TemplateRenderError, match="needs a mapping of variables, got list"):
        template.render(bad)


def test_template_that_does_not_parse_is_a_usage_error() -> None:
    with pytest.raises(LoomUsageError) as caught:
        PromptTemplate("Hello\n{{ name ", name="system_prompt")
    message = str(caught.value)
    assert message.startswith("system_prompt does not parse: line 2: ")
    assert "end of print statement" in message


def test_unknown_tag_is_a_usage_error() -> None:
    with pytest.raises(
        LoomUsageError, match=r"prompt_template does not parse: line 1: .*frobnicate"
    ):
        PromptTemplate("{% frobnicate %}")


@pytest.mark.parametrize("source", [None, b"{{ text }}", 42])
def test_non_string_source_is_a_usage_error(source: Any) -> None:
    with pytest.raises(LoomUsageError, match="prompt_template must be a string, got"):
        PromptTemplate(source)


def test_render_from_many_threads() -> None:
    template = PromptTemplate("{{ n }}:{{ n * 2 }}")
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def work(start: int) -> None:
        try:
            for n in range(start, start + 200):
                results[n] = template.render({"n": n})
        except BaseException as exc:  # pragma: no cover - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i * 200,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(results) == 1600
    assert all(results[n] == f"{n}:{n * 2}" for n in results)


def test_repr_names_template_and_variables() -> None:
    assert repr(PromptTemplate("{{ b }}{{ a }}", name="t")) == (
        "PromptTemplate(name='t', variables=['a', 'b'])"
    )


@pytest.mark.parametrize(
    "source",
    [
        "{{ items.append('x') }}",
        "{{ items.extend([1]) }}",
        "{{ items.insert(0, 1) }}",
        "{{ items.sort() }}",
        "{{ meta.update({'k': 1}) }}",
        "{{ meta.setdefault('k', 1) }}",
        "{{ meta.popitem() }}",
        "{% set _ = meta.clear() %}",
        "{{ tags.add(1) }}",
    ],
)
def test_templates_cannot_change_their_input(source: str) -> None:
    variables: dict[str, Any] = {"items": [2, 1], "meta": {"a": 1}, "tags": {0}}
    with pytest.raises(TemplateRenderError, match="sandbox forbids") as info:
        PromptTemplate(source).render(variables)
    assert "unsafe" in info.value.message
    assert variables == {"items": [2, 1], "meta": {"a": 1}, "tags": {0}}


def test_reading_methods_still_work() -> None:
    template = PromptTemplate("{{ meta.get('a') }} {{ items.index(1) }} {{ meta.items() | list }}")
    assert template.render({"meta": {"a": 1}, "items": [2, 1]}) == "1 1 [('a', 1)]"
