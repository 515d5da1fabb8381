"""Finding what matters in a model's answer text: its reasoning apart, then its JSON value.

:func:`split_reasoning` separates a leading ``<think>…</think>`` block from the answer.
:func:`extract_json` reads the JSON value of an answer: whole, in a code fence, or embedded in
prose, repaired with ``json_repair`` when allowed. NaN and infinities are refused everywhere:
no strict JSON consumer of a result (an SSE client, the store) accepts them.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import json_repair

from loom_protocol import Error, ErrorCode

from ._output_errors import OutputError, trim

__all__ = ["all_finite", "extract_json", "split_reasoning"]

# How many JSON-looking spans of an answer are tried before giving up: bounds the work spent on
# an answer that is mostly prose with brackets in it.
_MAX_CANDIDATES = 8

_FENCE = re.compile(r"```[A-Za-z0-9_+.-]*[ \t]*\n?(.*?)```", re.DOTALL)
_OPEN_FENCE = re.compile(r"```[A-Za-z0-9_+.-]*[ \t]*\n?(.*)\Z", re.DOTALL)
_THINK_BLOCK = re.compile(r"\A\s*<(think|thinking)>(.*?)</\1>", re.DOTALL | re.IGNORECASE)
_THINK_OPEN = re.compile(r"\A\s*<(?:think|thinking)>(.*)\Z", re.DOTALL | re.IGNORECASE)


def split_reasoning(content: str | None, reasoning: str | None = None) -> tuple[str, str | None]:
    """Separate a model's reasoning from its answer.

    A leading ``<think>…</think>`` (or ``<thinking>…</thinking>``) block, possibly after
    whitespace, is removed from ``content`` and its stripped inner text becomes reasoning. An
    unclosed leading ``<think>`` means the answer was cut off while thinking: the answer is empty
    and the rest is reasoning. The backend's own reasoning (``reasoning_content``, thinking
    blocks) comes first when both exist, joined by a blank line.

    Args:
        content: The answer text from the backend; ``None`` counts as ``""``.
        reasoning: Reasoning the backend returned separately, if any.

    Returns:
        ``(answer, reasoning)``; reasoning is ``None`` when there is none.
    """
    text = content or ""
    found: str | None = None
    block = _THINK_BLOCK.match(text)
    if block is not None:
        found = block.group(2).strip()
        text = text[block.end() :].lstrip()
    else:
        unclosed = _THINK_OPEN.match(text)
        if unclosed is not None:
            found = unclosed.group(1).strip()
            text = ""
    pieces = [piece for piece in ((reasoning or "").strip(), found or "") if piece]
    return text, ("\n\n".join(pieces) if pieces else None)


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; accepting them would put values into results that break
    # every strict JSON consumer downstream (SSE clients, the store's JSON columns).
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    # "1e999" parses to inf without going through parse_constant: refuse it the same way.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of the range of a finite number")
    return value


# One decoder for every answer: json.loads with hooks builds a new JSONDecoder on each call, a
# cost paid per task (scripts/bench.py scenario "overhead"). A decoder keeps no state between
# calls (json.loads shares one the same way). A leading BOM fails here too, with another
# message than json.loads gives; extract_json never reports the whole answer's message.
_loads = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float).decode


def extract_json(content: str, *, repair: bool, prefer_object: bool) -> Any:
    """Find the JSON value in an answer: whole, fenced, or embedded in prose; repaired if allowed.

    Args:
        content: The answer text (reasoning already removed).
        repair: Whether dirty JSON may be repaired with ``json_repair``.
        prefer_object: Try the spans that open with ``{`` first, so that prose such as
            ``[see below]`` does not shadow the object that follows it.

    Returns:
        The decoded value (any JSON type when the whole answer or a fenced block is JSON; an
        object or array when found in prose or repaired).

    Raises:
        OutputError: With code ``json_invalid`` when nothing usable is found.
    """
    text = content.strip()
    if not text:
        raise OutputError(Error(code=ErrorCode.JSON_INVALID, message="the answer is empty"))
    try:
        return _loads(text)
    except ValueError as exc:
        first_error = str(exc)

    fenced = [match.group(1).strip() for match in _FENCE.finditer(text)]
    if not fenced and (opened := _OPEN_FENCE.search(text)) is not None:
        # An opening fence that never closes: the answer was cut off inside the code block.
        fenced = [opened.group(1).strip()]
    for block in fenced:
        try:
            return _loads(block)
        except ValueError:
            continue

    # Look for JSON embedded in prose, inside the first fenced block that has any.
    source = next((block for block in fenced if "{" in block or "[" in block), text)
    candidates = _bracket_spans(source)
    if prefer_object:
        # A top-level array still gets tried (and reported as the wrong shape) when no object
        # parses.
        candidates.sort(key=lambda span: not span.startswith("{"))
    for candidate in candidates:
        try:
            return _loads(candidate)
        except ValueError as exc:
            if candidate is candidates[0]:
                first_error = str(exc)

    if not candidates:
        message = "the answer contains no JSON object or array"
        detail = f"{message}; it begins: {trim(text, 200)}"
        raise OutputError(Error(code=ErrorCode.JSON_INVALID, message=message, detail=detail))
    if repair:
        for candidate in candidates:
            repaired = _repair(candidate)
            if repaired is not None:
                return repaired
        detail = f"json.loads: {first_error}; json_repair could not recover a JSON object or array"
    else:
        detail = f"json.loads: {first_error}; JSON repair is disabled"
    raise OutputError(
        Error(
            code=ErrorCode.JSON_INVALID,
            message=f"the answer is not valid JSON ({first_error})",
            detail=detail,
        )
    )


def _repair(candidate: str) -> dict[str, Any] | list[Any] | None:
    """What ``json_repair`` reads in a span; ``None`` unless it is a non-empty container."""
    try:
        value = json_repair.loads(candidate, skip_json_loads=True)
    except Exception:
        # json_repair raises ValueError (and occasionally others) on hopeless input; for us that
        # only means "not repairable", reported as json_invalid by the caller.
        return None
    # A valid empty container was already accepted by json.loads, so an empty one here is what
    # json_repair makes of garbage ("{:::}" → {}): not an answer. json_repair reads "1e999" as
    # an infinite float, which no strict JSON consumer (an SSE client, the store) accepts.
    if isinstance(value, dict | list) and value and all_finite(value):
        return value
    return None


def all_finite(value: Any) -> bool:
    """Whether ``value`` holds no NaN or infinite float, at any depth."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(all_finite(item) for item in value.values())
    if isinstance(value, list | tuple | set | frozenset):
        return all(all_finite(item) for item in value)
    return True


def _bracket_spans(text: str) -> list[str]:
    """Top-level spans that open with ``{`` or ``[`` and end at their matching bracket.

    A span whose bracket never closes (a truncated answer) runs to the end of the text and is
    the last one. Brackets inside double-quoted strings are ignored.
    """
    spans: list[str] = []
    position = 0
    while len(spans) < _MAX_CANDIDATES:
        starts = [i for i in (text.find("{", position), text.find("[", position)) if i >= 0]
        if not starts:
            break
        start = min(starts)
        end = _matching_end(text, start)
        if end is None:
            spans.append(text[start:])
            break
        spans.append(text[start : end + 1])
        position = end + 1
    return spans


def _matching_end(text: str, start: int) -> int | None:
    """Index of the bracket closing the one at ``start``, or ``None`` if it never closes."""
    depth = 0
    in_string = False
    escaped = False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return index
    return None
