"""A child process for the kill -9 tests: one map(batch=True) over numbered inputs.

Usage: ``python batch_child.py PROVIDER BASE_URL DB N MAX_REQUESTS OUT`` — writes every
result's ``[task text, data]`` as JSON lines to ``OUT`` once the map returns.
"""

from __future__ import annotations

import asyncio
import json
import sys

from loom_backends import AnthropicBackend, OpenAIChatBackend
from loom_core import BatchPolicy, TaskLoom
from loom_protocol import ProviderBatchLimits

POLICY = BatchPolicy(poll_interval=0.02, poll_max=0.1, submit_timeout=1.0, clock_skew=0.3)


def main() -> None:
    provider, base_url, db, n, max_requests, out = sys.argv[1:7]
    limits = ProviderBatchLimits(max_requests=int(max_requests), max_bytes=10_000_000)
    backend_type = OpenAIChatBackend if provider == "openai" else AnthropicBackend
    backend = backend_type(base_url=base_url, api_key="sk-crash-test", batch_limits=limits)
    model = "gpt-4o-mini" if provider == "openai" else "claude-3-5-haiku-latest"
    inputs = [f"item {i}" for i in range(int(n))]
    with TaskLoom(
        model,
        "{{ text }}",
        response_model=dict,
        backend=backend,
        db_path=db,
        max_tokens=32,
        batch_policy=POLICY,
    ) as loom:
        result = loom.map(inputs, task_name="crash", batch=True)
    asyncio.run(backend.aclose())
    with open(out, "w", encoding="utf-8") as f:
        for text, r in zip(inputs, result, strict=True):
            f.write(json.dumps([text, r.data, r.is_success]) + "\n")


if __name__ == "__main__":
    main()
