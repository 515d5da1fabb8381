"""Quickstart: typed profiles out of short CVs, with a result store that makes re-runs free.

    uv run python examples/quickstart.py

With ``OPENAI_API_KEY`` set it asks the real provider (``OPENAI_BASE_URL`` and ``LOOM_MODEL``
choose another OpenAI-compatible server and model). Without it, it starts a FakeLLMServer: a
real HTTP server on 127.0.0.1 speaking the OpenAI protocol, answering from a tiny scripted
"model", so the quickstart runs offline. Run it twice: the second run is served from the
store (``.loom.db`` in the current directory).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from typing import Any

from pydantic import BaseModel

from loom_backends.testing import FakeLLMServer, RecordedRequest
from loom_core import TaskLoom


class UserProfile(BaseModel):
    name: str
    skills: list[str]


CVS = [
    {"text": "Zhang San is fluent in Python and SQL."},
    {"text": "Li Si does graphic design and some Python."},
    {"text": "Maria Garcia teaches statistics and writes Rust."},
    {"text": "Tom builds furniture."},
]

PROMPT = "Extract the person's name and skills from this CV: {{ text }}"


def scripted_model(request: RecordedRequest) -> str:
    """The offline stand-in for a model: leading capitalised words are the name, and a few
    known skills are picked out of the CV. Real models do better; the shape is the same."""
    cv = request.last_user_text.split(":", 1)[-1].strip()
    name = re.match(r"(?:[A-Z][a-z]+ ?)+", cv)
    known = ("Python", "SQL", "Rust", "design", "statistics")
    skills = [skill for skill in known if skill.lower() in cv.lower()]
    return json.dumps({"name": name.group(0).strip() if name else "?", "skills": skills})


def main() -> None:
    with contextlib.ExitStack() as stack:
        provider: dict[str, Any] = {}
        model = os.environ.get("LOOM_MODEL", "gpt-4o-mini")
        if not os.environ.get("OPENAI_API_KEY"):
            server = stack.enter_context(FakeLLMServer(scripted_model))
            provider = {"base_url": server.base_url, "api_key": "offline"}
            print(f"OPENAI_API_KEY is not set: using the offline fake model at {server.base_url}\n")

        loom = stack.enter_context(
            TaskLoom(model, PROMPT, response_model=UserProfile, max_retries=2, **provider)
        )
        # task_name turns the store on: finished inputs are never asked twice.
        results = loom.map(CVS, task_name="quickstart_cv_v1", max_workers=4)

    for result in results:
        if result.is_success and result.data is not None:
            source = "store" if result.cached else "model"
            print(f"{result.data.name:<14} {', '.join(result.data.skills) or '-':<28} ({source})")
        else:
            print(f"failed: {result.error}")
    summary = results.summary
    print(
        f"\n{summary.succeeded}/{summary.total} succeeded, {summary.cached} from the store, "
        f"{summary.total_tokens} tokens, {summary.elapsed_s:.2f} s"
    )


if __name__ == "__main__":
    main()
