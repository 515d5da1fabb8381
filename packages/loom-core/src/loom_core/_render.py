"""Prompt rendering: Jinja2 templates in a sandbox, strict about missing variables.

A template that does not parse is misuse and raises :class:`~loom_protocol.LoomUsageError` when the
:class:`PromptTemplate` is built. A problem while rendering one input (a missing variable, an
unsafe operation, a filter that fails) raises :class:`TemplateRenderError`, which the engine turns
into a ``template_error`` result for that input only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError, meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from loom_protocol import LoomUsageError

__all__ = ["PromptTemplate", "TemplateRenderError"]

# One environment for every template: it is immutable once built, thread-safe to render from, and
# caching compiled code per environment is cheaper than one environment per template.
# autoescape is off because prompts are plain text, not HTML: escaping would corrupt quotes and <>.
# The immutable sandbox also refuses methods that change a list, dict or set (append, update,
# pop...): the values rendered are the caller's own objects (no copy is made for speed), and a
# task's cached answer must not depend on what an earlier render did to them.
_ENV = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
)

_UNDEFINED_NAME = re.compile(r"^'([^']+)' is undefined$")
_MAX_KEYS_SHOWN = 20


class TemplateRenderError(Exception):
    """Rendering a template for one input failed.

    Attributes:
        message: A one-line explanation naming the problem, e.g.
            ``"template variable 'text' is undefined in prompt_template (input keys: body, id)"``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PromptTemplate:
    """A Jinja2 template compiled once and rendered for many inputs.

    Rendering runs in Jinja's immutable sandbox (inputs may come from untrusted sources: a
    template reaches no Python internals and cannot change the input's lists and dicts) with
    ``StrictUndefined``, so a missing variable is an error instead of an empty string.

    Args:
        source: The template text, in Jinja2 syntax (``"Summarise: {{ text }}"``).
        name: What the template is called in error messages (``"prompt_template"``,
            ``"system_prompt"``).

    Raises:
        LoomUsageError: ``source`` is not a string or does not parse.

    Attributes:
        source: The template text.
        name: The name used in error messages.
        variables: The variables the template reads from its input (those it does not set itself).
    """

    __slots__ = ("_globals", "_template", "name", "source", "variables")

    def __init__(self, source: str, *, name: str = "prompt_template") -> None:
        if not isinstance(source, str):
            raise LoomUsageError(f"{name} must be a string, got {type(source).__name__}")
        try:
            ast = _ENV.parse(source)
            template = _ENV.from_string(ast)
        except TemplateSyntaxError as exc:
            raise LoomUsageError(
                f"{name} does not parse: line {exc.lineno}: {exc.message or 'syntax error'}"
            ) from None
        self.source = source
        self.name = name
        self.variables: frozenset[str] = frozenset(meta.find_undeclared_variables(ast))
        self._template = template
        # Template.render copies the template's globals (a ChainMap, slow to copy) into a new
        # dict for every render; a plain-dict snapshot merged with the input is the same
        # context at a third of the cost.
        self._globals = dict(template.globals)

    def render(self, variables: Mapping[str, Any]) -> str:
        """Render the template with one input's variables.

        Args:
            variables: The input, keyed by variable name.

        Returns:
            The rendered text.

        Raises:
            TemplateRenderError: A variable is missing, the template tried an operation the
                sandbox forbids, or anything else went wrong while rendering.
        """
        if not isinstance(variables, Mapping):
            raise TemplateRenderError(
                f"{self.name} needs a mapping of variables, got {type(variables).__name__}"
            )
        try:
            template = self._template
            context = template.new_context({**self._globals, **variables}, shared=True)
            return _ENV.concat(template.root_render_func(context))
        except UndefinedError as exc:
            keys = _describe_keys(variables)
            found = _UNDEFINED_NAME.match(str(exc))
            if found:
                raise TemplateRenderError(
                    f"template variable {found.group(1)!r} is undefined in {self.name}"
                    f" (input keys: {keys})"
                ) from None
            # Attribute or item lookups on a present variable ("'dict object' has no attribute").
            line = _line_of(self._template, exc.__traceback__)
            raise TemplateRenderError(f"{self.name}{line}: {exc} (input keys: {keys})") from None
        except SecurityError as exc:
            line = _line_of(self._template, exc.__traceback__)
            raise TemplateRenderError(
                f"{self.name}{line} tried an operation the sandbox forbids: {exc}"
            ) from None
        except Exception as exc:
            # Filters and tests run user-controlled data through Python code; any failure there
            # concerns this input only, so it must not escape as a crash of the whole batch.
            raise TemplateRenderError(
                f"rendering {self.name} failed{_line_of(self._template, exc.__traceback__)}:"
                f" {type(exc).__name__}: {exc}"
            ) from None

    def __repr__(self) -> str:
        return f"PromptTemplate(name={self.name!r}, variables={sorted(self.variables)!r})"


def _describe_keys(variables: Mapping[str, Any]) -> str:
    """The input's keys as a short sorted list for an error message."""
    keys = sorted(str(key) for key in variables)
    if not keys:
        return "none"
    shown = ", ".join(keys[:_MAX_KEYS_SHOWN])
    if len(keys) > _MAX_KEYS_SHOWN:
        shown += f", ... ({len(keys) - _MAX_KEYS_SHOWN} more)"
    return shown


def _line_of(template: Template, tb: TracebackType | None) -> str:
    """``" (line N)"`` for the innermost template frame of a traceback, or ``""``.

    Template code runs as frames of a file named ``<template>``, numbered by the generated
    Python source; the template maps those numbers back to its own lines.
    """
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = template.get_corresponding_lineno(tb.tb_lineno)
        tb = tb.tb_next
    return f" (line {line})" if line is not None else ""
