"""loom_protocol imports in an environment where pydantic is its only third-party package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "packages" / "loom-protocol"

# pydantic and what pydantic itself needs.
ALLOWED_MODULES = {
    "loom_protocol",
    "pydantic",
    "pydantic_core",
    "typing_extensions",
    "typing_inspection",
    "annotated_types",
}
ALLOWED_DISTRIBUTIONS = {
    "loom-protocol",
    "pydantic",
    "pydantic-core",
    "typing-extensions",
    "typing-inspection",
    "annotated-types",
}

PROBE = textwrap.dedent(
    """
    import importlib.metadata, json, os, sys

    before = set(sys.modules)
    import loom_protocol
    from loom_protocol import TaskResult, fingerprint, parse_stream_event

    result = TaskResult[dict](task_id=fingerprint({"text": "x"}), is_success=True, data={"a": 1})
    event = parse_stream_event(
        {"type": "task_result", "batch_id": "b", "index": 0, "result": result.model_dump(),
         "done": 1, "total": 1}
    )
    loaded = {name.split(".")[0] for name in set(sys.modules) - before}
    stdlib_dir = os.path.dirname(os.__file__) + os.sep

    def third_party(name):
        if name in sys.stdlib_module_names:
            return False
        # Generated stdlib modules such as _sysconfigdata_* are not in stdlib_module_names.
        file = getattr(sys.modules.get(name), "__file__", None) or ""
        return not file.startswith(stdlib_dir) or "site-packages" in file

    print(json.dumps({
        "modules": sorted(filter(third_party, loaded)),
        "distributions": sorted(d.metadata["Name"] for d in importlib.metadata.distributions()),
        "event": event.type,
        "file": loom_protocol.__file__,
    }))
    """
)


def attempt(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        cwd=cwd,
        env=env,
    )


def run(*args: str | Path, cwd: Path) -> str:
    proc = attempt(*args, cwd=cwd)
    assert proc.returncode == 0, f"{args} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.slow
def test_protocol_needs_nothing_but_pydantic(tmp_path: Path) -> None:
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH; it builds the throwaway environment")
    venv = tmp_path / "venv"
    run(uv, "venv", "--quiet", "--python", sys.executable, venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    # Install from a copy so the build leaves nothing behind in the working tree.
    source = tmp_path / "loom-protocol"
    shutil.copytree(PACKAGE, source, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    install = (uv, "pip", "install", "--quiet", "--python", python, source)
    # uv's cache usually holds pydantic already; go to the index only when it does not.
    if attempt(*install, "--offline", cwd=tmp_path).returncode != 0:
        run(*install, cwd=tmp_path)

    report = json.loads(run(python, "-c", PROBE, cwd=tmp_path))

    assert report["event"] == "task_result"
    assert Path(report["file"]).is_relative_to(venv), "imported the workspace copy, not the venv's"
    assert set(report["modules"]) <= ALLOWED_MODULES, set(report["modules"]) - ALLOWED_MODULES
    assert {"loom_protocol", "pydantic"} <= set(report["modules"])
    names = {name.lower().replace("_", "-") for name in report["distributions"]}
    assert names <= ALLOWED_DISTRIBUTIONS, names - ALLOWED_DISTRIBUTIONS
