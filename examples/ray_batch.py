"""Loom on Ray Data: a map_batches stage with a per-row cache, resume and one global rate limit.

    uv run python examples/ray_batch.py

It starts a local Ray (2 CPUs) and classifies a small dataset of reviews with ``LoomMapper``:
two actors, each running one loom, share the work; every result is stored (``.loom-ray.db``
in the current directory) before Ray gets its row, so running the pipeline again asks the
model for nothing. ``rpm`` is a limit for the whole pipeline, whatever the number of actors.

With ``OPENAI_API_KEY`` set it asks the real provider (``OPENAI_BASE_URL`` and ``LOOM_MODEL``
choose another OpenAI-compatible server and model). Without it, a FakeLLMServer on 127.0.0.1
answers from a tiny scripted "model", so the example runs offline.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

# Under `uv run`, Ray would start each worker with `uv run` and ship this directory as the
# job's runtime env: what a cluster needs, not a local run. (Read when Ray is imported.)
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

import ray
import ray.data

from loom_backends.testing import FakeLLMServer, RecordedRequest
from loom_ray import LoomMapper

REVIEWS = [
    f"{text} (order {order})"
    for order in range(10)
    for text in (
        "Arrived broken and support never answered.",
        "Works as described, would buy again.",
        "Great battery, terrible screen.",
        "Best purchase this year!",
        "Stopped working after a week.",
        "Does the job.",
    )
]  # 60 distinct reviews

PROMPT = (
    "Classify the sentiment of this review as positive, negative or mixed, "
    'and answer JSON {"sentiment": ..., "reason": ...}: {{ text }}'
)


def scripted_model(request: RecordedRequest) -> str:
    """The offline stand-in for a model: a few words decide the sentiment."""
    review = request.last_user_text.rsplit(":", 1)[-1].lower()
    good = any(w in review for w in ("great", "best", "works", "does the job"))
    bad = any(w in review for w in ("broken", "terrible", "stopped"))
    sentiment = "mixed" if good and bad else "positive" if good else "negative"
    return json.dumps({"sentiment": sentiment, "reason": "scripted"})


def run(provider: dict[str, Any], model: str, store: str) -> list[dict[str, Any]]:
    """One run of the pipeline; returns its rows."""
    ds = ray.data.from_items([{"review_id": i, "text": t} for i, t in enumerate(REVIEWS)])
    out = ds.map_batches(
        LoomMapper,
        fn_constructor_kwargs={
            "model": model,
            "prompt_template": PROMPT,
            "response_model": dict,
            "task_name": "ray_reviews_v1",
            "store": store,
            "input_columns": ["text"],  # review_id is carried along, not part of the task id
            "rpm": 600,  # for the whole pipeline
            **provider,
        },
        concurrency=2,
        batch_size=16,
        num_cpus=0.5,  # the actors wait on HTTP: leave CPU to Ray's own tasks
    )
    rows: list[dict[str, Any]] = out.take_all()
    return rows


def main() -> None:
    with contextlib.ExitStack() as stack:
        provider: dict[str, Any] = {}
        model = os.environ.get("LOOM_MODEL", "gpt-4o-mini")
        server = None
        if not os.environ.get("OPENAI_API_KEY"):
            server = stack.enter_context(FakeLLMServer(scripted_model))
            provider = {"base_url": server.base_url, "api_key": "offline"}
            print(f"OPENAI_API_KEY is not set: using the offline fake model at {server.base_url}\n")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        stack.callback(ray.shutdown)
        ray.data.DataContext.get_current().enable_progress_bars = False
        store = os.path.abspath(".loom-ray.db")  # actors have their own working directory

        for attempt in ("first run", "second run"):
            before = server.request_count if server is not None else 0
            rows = run(provider, model, store)
            rows.sort(key=lambda row: row["review_id"])
            ok = sum(row["loom_ok"] for row in rows)
            cached = sum(row["loom_cached"] for row in rows)
            print(f"{attempt}: {ok}/{len(rows)} succeeded, {cached} from the store", end="")
            if server is not None:
                print(f", {server.request_count - before} requests to the model")
            else:
                print()
        for row in rows[:6]:
            sentiment = json.loads(row["loom_data"])["sentiment"] if row["loom_ok"] else "-"
            print(f"  {row['review_id']:>2}  {sentiment:<9} {row['text']}")


if __name__ == "__main__":
    main()
