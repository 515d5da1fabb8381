"""The README's first example: the resume extraction it promises, and its re-run from the store.

Every ```python block of the README (and of docs/*.md) runs and prints what is shown in
test_docs.py; this file holds what is particular to the README.
"""

from __future__ import annotations

from pathlib import Path

from loom_backends.testing import FakeLLMServer

from ._doc_blocks import block_env, python_blocks, run_block
from .conftest import REPO

README = REPO / "README.md"


def _first_example() -> tuple[str, str]:
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert blocks, "the README has no ```python block"
    first = blocks[0]
    assert first.run, "the README's first example must run"
    assert first.expected is not None, "the first example must be followed by its ```text output"
    return first.code, first.expected


def test_the_first_example_is_the_resume_extraction() -> None:
    code, _ = _first_example()
    assert "class UserProfile(BaseModel)" in code
    assert "task_name=" in code


def test_rerunning_the_first_example_is_served_from_the_store(
    server: FakeLLMServer, tmp_path: Path
) -> None:
    code, expected = _first_example()
    env = block_env(server.base_url, server.anthropic_base_url)
    first = run_block(code, tmp_path, "first.py", env)
    assert first.returncode == 0, first.stderr
    assert first.stdout == expected
    calls = server.request_count
    again = run_block(code, tmp_path, "first.py", env)
    assert again.returncode == 0, again.stderr
    assert server.request_count == calls  # no new request: everything came from the store
    assert "from the store: False" in expected
    assert again.stdout == expected.replace("from the store: False", "from the store: True")
