"""A Gradio page that summarises papers into a table growing row by row, with resume.

    uv run python examples/gradio_app.py          # needs OPENAI_API_KEY (LOOM_MODEL to choose)

Paste papers separated by blank lines and press the button: the table fills in as results
finish (fastest first) and the progress bar follows. Every finished result is committed to
the store before it is shown, so closing the page, a crash or a restart loses nothing: press
the button again and the finished papers come back from the store at once ("from store"),
only the rest are sent to the model.

``process_papers`` is a plain generator: Gradio drives it, and so can a test or a notebook.
Importing this module starts nothing; the page is built by ``build_demo()``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from typing import Any

# No telemetry: Gradio otherwise reports usage and checks its version online. Set before the
# import, which reads it; Blocks(analytics_enabled=False) below covers an explicit "True".
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr

from loom_core import TaskLoom

PROMPT = "Summarise the core method of this paper in one sentence: {{ text }}"
TASK_NAME = "gradio_paper_batch_v1"
HEADERS = ["Paper", "Status", "Extracted", "From store"]

_default: TaskLoom[Any] | None = None
_default_lock = threading.Lock()


def default_loom() -> TaskLoom[Any]:
    """The page's loom, made on first use (importing the module contacts nothing)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = TaskLoom(
                os.environ.get("LOOM_MODEL", "deepseek-chat"), PROMPT, response_model=dict
            )
        return _default


def split_papers(papers_text: str) -> list[dict[str, str]]:
    """One input per block of text; blocks are separated by blank lines."""
    blocks = [" ".join(block.split()) for block in papers_text.replace("\r\n", "\n").split("\n\n")]
    return [{"text": block} for block in blocks if block]


def process_papers(
    papers_text: str,
    progress: gr.Progress = gr.Progress(),  # noqa: B008 - Gradio injects its tracker this way
    *,
    loom: TaskLoom[Any] | None = None,
) -> Iterator[list[list[Any]]]:
    """Yield the results table after each finished paper (rows in the order they finish).

    Args:
        papers_text: The papers, separated by blank lines.
        progress: Gradio's progress tracker (any callable ``(fraction, desc=...)`` will do).
        loom: The loom to use; by default the page's own.
    """
    papers = split_papers(papers_text)
    if not papers:
        yield []
        return
    loom = loom if loom is not None else default_loom()
    total = len(papers)
    rows: list[list[Any]] = []
    # ordered=False: the fastest answers show first, which feels quickest on a page.
    stream = loom.stream(papers, task_name=TASK_NAME, max_workers=10)
    for done, task in enumerate(stream, 1):
        status = "✅ done" if task.is_success else "❌ failed"
        progress(done / total, desc=f"{done}/{total} | latest: {status}")
        paper = str(task.input_data.get("text", ""))
        extracted = (
            json.dumps(task.data, ensure_ascii=False) if task.is_success else str(task.error)
        )
        rows.append([paper[:60], status, extracted, task.cached])
        yield [list(row) for row in rows]  # a new table each time: the UI diffs it


def build_demo() -> gr.Blocks:
    """The page: a text box, a button and the growing table."""
    demo = gr.Blocks(title="Loom: paper summaries", analytics_enabled=False)
    with demo:
        gr.Markdown("Paste papers separated by blank lines. Re-running resumes from the store.")
        papers = gr.Textbox(label="Papers", lines=12)
        run = gr.Button("Summarise")
        table = gr.Dataframe(headers=HEADERS, label="Results", wrap=True)
        run.click(process_papers, inputs=papers, outputs=table)
    return demo


if __name__ == "__main__":
    build_demo().launch()
