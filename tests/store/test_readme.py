"""The package README's example runs and prints what the README shows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import loom_store

README = Path(loom_store.__file__).parents[2] / "README.md"
_BLOCK = re.compile(r"^```(python|text)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def test_readme_example_prints_what_it_shows(tmp_path: Path) -> None:
    blocks = _BLOCK.findall(README.read_text(encoding="utf-8"))
    assert [lang for lang, _ in blocks] == ["python", "text"]
    (_, code), (_, expected) = blocks
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,  # the example's results.db lands here
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected
    assert (tmp_path / "results.db").exists()
