"""The README's Python blocks run, against a FakeLLMServer, and print what the README shows.

A ```python block directly followed by a ```text block must print exactly that text.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from loom_backends.testing import FakeLLMServer

from .conftest import REPO, cli_env

README = REPO / "README.md"
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def readme_examples(text: str) -> list[tuple[str, str | None]]:
    """(code, expected output or None) for every ```python block of ``text``."""
    blocks = [(m.group(1), m.group(2), m.start(), m.end()) for m in _FENCE.finditer(text)]
    examples: list[tuple[str, str | None]] = []
    for i, (lang, body, _, end) in enumerate(blocks):
        if lang != "python":
            continue
        expected = None
        if i + 1 < len(blocks) and blocks[i + 1][0] == "text":
            between = text[end : blocks[i + 1][2]]
            if len(between.strip()) < 200:  # a short lead-in such as "It prints:"
                expected = blocks[i + 1][1]
        examples.append((body, expected))
    return examples


def test_extraction_finds_code_and_output() -> None:
    text = "x\n```python\nprint(1)\n```\nIt prints:\n```text\n1\n```\n```bash\nls\n```\n"
    assert readme_examples(text) == [("print(1)\n", "1\n")]


def test_the_first_example_is_the_resume_extraction() -> None:
    examples = readme_examples(README.read_text(encoding="utf-8"))
    assert examples, "the README has no ```python block"
    code, expected = examples[0]
    assert "class UserProfile(BaseModel)" in code
    assert "task_name=" in code
    assert expected is not None, "the first example must be followed by its ```text output"


def _run(script: Path, srv: FakeLLMServer, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=cwd,
        env=cli_env(OPENAI_BASE_URL=srv.base_url),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
        check=False,
    )


def test_readme_python_blocks_run_and_print_what_is_shown(
    server: FakeLLMServer, tmp_path: Path
) -> None:
    examples = readme_examples(README.read_text(encoding="utf-8"))
    for number, (code, expected) in enumerate(examples, 1):
        script = tmp_path / f"readme_block_{number}.py"
        script.write_text(code, encoding="utf-8")
        done = _run(script, server, tmp_path)
        assert done.returncode == 0, f"README block {number} failed:\n{done.stderr}"
        if expected is not None:
            assert done.stdout == expected, f"README block {number} printed:\n{done.stdout}"


def test_rerunning_the_first_example_is_served_from_the_store(
    server: FakeLLMServer, tmp_path: Path
) -> None:
    code, expected = readme_examples(README.read_text(encoding="utf-8"))[0]
    assert expected is not None
    script = tmp_path / "first.py"
    script.write_text(code, encoding="utf-8")
    assert _run(script, server, tmp_path).returncode == 0
    calls = server.request_count
    again = _run(script, server, tmp_path)
    assert again.returncode == 0, again.stderr
    assert server.request_count == calls  # no new request: everything came from the store
    assert "from the store: False" in expected
    assert again.stdout == expected.replace("from the store: False", "from the store: True")
