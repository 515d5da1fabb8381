"""Every ```python block of README.md and docs/*.md runs as written, against a FakeLLMServer.

One test per page (a failure names the page, the block number and its line); the rules are in
``_doc_blocks`` and, for doc authors, in docs/testing.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from loom_backends.testing import FakeLLMServer

from ._doc_blocks import (
    NO_RUN,
    NO_RUN_ALLOWANCE,
    DocFormatError,
    block_env,
    check_page,
    fences,
    python_blocks,
)
from .conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _has_code(page: Path) -> bool:
    try:
        return bool(python_blocks(page.read_text(encoding="utf-8")))
    except DocFormatError:
        return True  # the page's test reports the problem


PAGES_WITH_CODE = [p for p in PAGES if _has_code(p)]


def _name(page: Path) -> str:
    return page.relative_to(REPO).as_posix()


@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=_name)
def test_every_python_block_of_the_page_runs(
    page: Path, server: FakeLLMServer, tmp_path: Path
) -> None:
    problems = check_page(_name(page), page.read_text(encoding="utf-8"), tmp_path, _env(server))
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


def _env(server: FakeLLMServer) -> dict[str, str]:
    return block_env(server.base_url, server.anthropic_base_url)


def test_the_pages_with_code_include_the_readme_guide_and_testing() -> None:
    names = {_name(p) for p in PAGES_WITH_CODE}
    assert {"README.md", "docs/guide.md", "docs/testing.md"} <= names


def test_no_page_fences_python_under_another_name() -> None:
    # python_blocks refuses ```py / ```python3 / ```python norun…; this reads every page.
    for page in PAGES:
        try:
            python_blocks(page.read_text(encoding="utf-8"))
        except DocFormatError as exc:
            pytest.fail(f"{_name(page)}: {exc}")


# --- the runner itself -------------------------------------------------------------------


def test_extraction_finds_code_output_and_no_run_blocks() -> None:
    text = (
        "x\n```python\nprint(1)\n```\nIt prints:\n```text\n1\n```\n```bash\nls\n```\n"
        "- a list item:\n\n  ```python no-run\n  import remote\n  ```\n"
    )
    blocks = python_blocks(text)
    assert [(b.number, b.line, b.code, b.run, b.expected) for b in blocks] == [
        (1, 2, "print(1)\n", True, "1\n"),
        (2, 14, "import remote\n", False, None),
    ]


def test_a_text_block_far_below_is_not_the_output() -> None:
    text = "```python\nprint(1)\n```\n" + "prose " * 60 + "\n```text\n1\n```\n"
    assert python_blocks(text)[0].expected is None


@pytest.mark.parametrize("info", ["py", "python3", "python norun", "python  no-run", "Python"])
def test_other_python_info_strings_are_refused(info: str) -> None:
    with pytest.raises(DocFormatError, match=re.escape(repr(info))):
        python_blocks(f"```{info}\nprint(1)\n```\n")


def test_an_unclosed_fence_is_refused() -> None:
    with pytest.raises(DocFormatError, match="line 2"):
        fences("a\n```python\nprint(1)\n")


def test_inline_code_at_the_start_of_a_line_is_not_a_fence() -> None:
    text = "* a\n```` ```python ```` is how\n```python\nprint(1)\n```\n"
    assert [b.line for b in python_blocks(text)] == [3]


def test_a_longer_fence_holds_a_shorter_one() -> None:
    text = "````markdown\n```python\nprint(1)\n```\n````\n"
    assert [f.info for f in fences(text)] == ["markdown"]
    assert python_blocks(text) == []


def _problems(text: str, server: FakeLLMServer, tmp_path: Path) -> list[str]:
    return check_page("page.md", text, tmp_path, _env(server))


def test_a_block_without_its_imports_fails_naming_page_and_block(
    server: FakeLLMServer, tmp_path: Path
) -> None:
    text = "```python\nprint('ok')\n```\n\n```python\nloom = TaskLoom('m', '{{ text }}')\n```\n"
    (problem,) = _problems(text, server, tmp_path)
    assert problem.startswith("page.md python block 2 (line 5) exited with 1")
    assert "NameError: name 'TaskLoom' is not defined" in problem


def test_a_wrong_output_fails_and_shows_both(server: FakeLLMServer, tmp_path: Path) -> None:
    text = "```python\nprint('two')\n```\nIt prints:\n```text\none\n```\n"
    (problem,) = _problems(text, server, tmp_path)
    assert "page.md python block 1 (line 1) printed\ntwo\n" in problem
    assert problem.endswith("but the page shows\none\n")


def test_blocks_run_in_order_in_one_folder_without_shared_names(
    server: FakeLLMServer, tmp_path: Path
) -> None:
    text = (
        "```python\nfrom pathlib import Path\nx = 1\nPath('made.txt').write_text('hi')\n```\n"
        "```python\nfrom pathlib import Path\nprint(Path('made.txt').read_text())\n```\n"
        "```text\nhi\n```\n"
        "```python\nprint(x)\n```\n"
    )
    (problem,) = _problems(text, server, tmp_path)
    assert problem.startswith("page.md python block 3")
    assert "NameError: name 'x' is not defined" in problem


def test_blocks_reach_the_fake_server_through_the_environment(
    server: FakeLLMServer, tmp_path: Path
) -> None:
    text = (
        "```python\nfrom loom_core import TaskLoom\n\n"
        "with TaskLoom('gpt-4o-mini', 'Summarise: {{ text }}') as loom:\n"
        "    print(loom.process({'text': 'Ada writes Rust'}).data)\n```\n"
        "```text\nSummary: Ada writes Rust\n```\n"
    )
    assert _problems(text, server, tmp_path) == []
    assert server.request_count == 1


def test_a_block_that_hangs_is_stopped_and_named(server: FakeLLMServer, tmp_path: Path) -> None:
    text = "```python\nimport time\n\ntime.sleep(60)\n```\n```python\nprint(1)\n```\n"
    problems = check_page("page.md", text, tmp_path, _env(server), timeout=1)
    assert problems == ["page.md python block 1 (line 1) did not finish within 1 s"]


def test_no_run_blocks_are_counted_and_compiled(server: FakeLLMServer, tmp_path: Path) -> None:
    one = f"```{NO_RUN}\nimport remote_only\n```\n"
    assert _problems(one * NO_RUN_ALLOWANCE, server, tmp_path) == []
    (too_many,) = _problems(one * (NO_RUN_ALLOWANCE + 1), server, tmp_path)
    assert f"at most {NO_RUN_ALLOWANCE} allowed" in too_many
    (broken,) = _problems(f"```{NO_RUN}\ndef f(:\n```\n", server, tmp_path)
    assert "is not valid Python" in broken
