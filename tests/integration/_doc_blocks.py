"""Find the ```python blocks of a Markdown page and run them as scripts, as a reader would.

The rules (written down for doc authors in docs/testing.md, "Code blocks in the docs are tests"):

* Every fence whose info string is ``python`` is a script: it runs as written, imports included,
  with ``python block_<n>.py`` in a temporary folder, ``OPENAI_BASE_URL`` (and
  ``ANTHROPIC_BASE_URL``) pointing at a ``FakeLLMServer`` and a fake API key.
* The blocks of one page run in order, each in its own process, in one folder: a later block may
  read a file an earlier one wrote, but shares no variables with it.
* A ```python block followed by a ```text block (with at most a short lead-in such as "It
  prints:" between them) must print exactly that text.
* ``python no-run`` (exactly) marks a block that cannot run offline; it must still compile, and a
  page may have at most :data:`NO_RUN_ALLOWANCE` of them.
* Any other info string starting with ``py`` (``py``, ``python3``, ``python norun``…) is refused,
  so that a typo cannot silently take a block out of the tests.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .conftest import cli_env

RUN = "python"
NO_RUN = "python no-run"
NO_RUN_ALLOWANCE = 1
"""At most this many ``python no-run`` blocks per page: prefer fixing a block to fencing it off."""

_LEAD_IN_MAX = 200  # characters of prose allowed between a python block and its ```text output
_PY_PREFIXES = ("py", "python", "python3", "pycon", "ipython")


class DocFormatError(ValueError):
    """A page's fences cannot be read: unclosed, or an unknown python info string."""


@dataclass(frozen=True)
class Fence:
    """One fenced block of a page: its info string, body (dedented) and place."""

    info: str
    body: str
    line: int  # 1-based line of the opening fence
    start: int  # index of the opening line
    end: int  # index of the closing line


@dataclass(frozen=True)
class PythonBlock:
    """A ```python block: its number among the page's python blocks, where it is, what it prints."""

    number: int
    line: int
    code: str
    run: bool
    expected: str | None

    def where(self, page: str) -> str:
        return f"{page} python block {self.number} (line {self.line})"


def fences(text: str) -> list[Fence]:
    """Every fenced block (```), including indented ones inside list items."""
    lines = text.splitlines(keepends=True)
    found: list[Fence] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].lstrip(" ")
        if not stripped.startswith("```"):
            i += 1
            continue
        indent = len(lines[i]) - len(stripped)
        marker = len(stripped) - len(stripped.lstrip("`"))
        info = stripped[marker:].strip()
        if "`" in info:  # CommonMark: not a fence, inline code at the start of a line
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not (
            lines[j].strip().startswith("`" * marker) and not lines[j].strip().strip("`")
        ):
            j += 1
        if j == len(lines):
            raise DocFormatError(f"the fence opened on line {i + 1} is never closed")
        body = "".join(
            line[indent:] if line[:indent].isspace() else line for line in lines[i + 1 : j]
        )
        found.append(Fence(info=info, body=body, line=i + 1, start=i, end=j))
        i = j + 1
    return found


def _is_python(info: str) -> bool:
    first = info.split()[0].lower() if info.split() else ""
    return first in _PY_PREFIXES or first.startswith("python")


def python_blocks(text: str) -> list[PythonBlock]:
    """The page's ```python and ```python no-run blocks, with the output each must print."""
    all_fences = fences(text)
    lines = text.splitlines(keepends=True)
    blocks: list[PythonBlock] = []
    for k, fence in enumerate(all_fences):
        if not _is_python(fence.info):
            continue
        if fence.info not in (RUN, NO_RUN):
            raise DocFormatError(
                f"line {fence.line}: info string {fence.info!r} is neither {RUN!r} nor {NO_RUN!r}"
            )
        expected = None
        following = all_fences[k + 1] if k + 1 < len(all_fences) else None
        if following is not None and following.info == "text":
            between = "".join(lines[fence.end + 1 : following.start])
            if len(between.strip()) < _LEAD_IN_MAX:
                expected = following.body
        blocks.append(
            PythonBlock(
                number=len(blocks) + 1,
                line=fence.line,
                code=fence.body,
                run=fence.info == RUN,
                expected=expected,
            )
        )
    return blocks


def run_block(
    code: str, cwd: Path, name: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Write ``code`` to ``cwd/name`` and run it there with this interpreter."""
    script = cwd / name
    script.write_text(code, encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=timeout,
        check=False,
    )


def block_env(openai_base_url: str, anthropic_base_url: str) -> dict[str, str]:
    """A child's environment: both providers' base URLs on the fake server, fake keys."""
    return cli_env(
        OPENAI_BASE_URL=openai_base_url,
        ANTHROPIC_BASE_URL=anthropic_base_url,
        ANTHROPIC_API_KEY="sk-ant-test-not-a-key",
    )


def check_page(
    page: str, text: str, cwd: Path, env: dict[str, str], timeout: float = 120
) -> list[str]:
    """Run every block of a page in order in ``cwd``; the problems found, empty when all is well.

    The first failing block stops the page (later blocks may need its files); a wrong output or a
    failed compile of a no-run block is reported and the page goes on.
    """
    try:
        blocks = python_blocks(text)
    except DocFormatError as exc:
        return [f"{page}: {exc}"]
    problems: list[str] = []
    no_run = [b for b in blocks if not b.run]
    if len(no_run) > NO_RUN_ALLOWANCE:
        problems.append(
            f"{page} has {len(no_run)} '{NO_RUN}' blocks (lines "
            f"{', '.join(str(b.line) for b in no_run)}); at most {NO_RUN_ALLOWANCE} allowed"
        )
    for block in blocks:
        if not block.run:
            try:
                compile(block.code, block.where(page), "exec")
            except SyntaxError as exc:
                problems.append(f"{block.where(page)} ({NO_RUN}) is not valid Python: {exc}")
            continue
        try:
            done = run_block(block.code, cwd, f"block_{block.number}.py", env, timeout)
        except subprocess.TimeoutExpired:
            problems.append(f"{block.where(page)} did not finish within {timeout:g} s")
            break
        if done.returncode != 0:
            problems.append(
                f"{block.where(page)} exited with {done.returncode}\n"
                f"--- stdout\n{done.stdout}--- stderr\n{done.stderr}"
            )
            break
        if block.expected is not None and done.stdout != block.expected:
            problems.append(
                f"{block.where(page)} printed\n{done.stdout}--- but the page shows\n"
                f"{block.expected}"
            )
    return problems
