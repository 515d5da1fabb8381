"""scripts/check_levels.py: the real tree passes; each planted violation is caught at its line."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "check_levels.py"


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_check(script: Path = SCRIPT, *args: str) -> Run:
    proc = subprocess.run(
        [sys.executable, str(script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of packages/ and scripts/ to plant violations in."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
    shutil.copytree(ROOT / "packages", tmp_path / "packages", ignore=ignore)
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts", ignore=ignore)
    return tmp_path


def check(tree: Path) -> Run:
    """Run the copied script; its default root is the parent of its scripts/ directory."""
    return run_check(tree / "scripts" / "check_levels.py")


def src(tree: Path, dist: str) -> Path:
    return tree / "packages" / dist / "src" / dist.replace("-", "_")


def plant(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def append(path: Path, text: str) -> int:
    """Append ``text`` (one line) to a module; return its line number."""
    body = path.read_text(encoding="utf-8")
    if not body.endswith("\n"):
        body += "\n"
    path.write_text(body + text + "\n", encoding="utf-8")
    return body.count("\n") + 1


def assert_caught(run: Run, location: str, *words: str) -> None:
    assert run.returncode == 1, run.output
    lines = [line for line in run.stdout.splitlines() if line.startswith(location + ": ")]
    assert lines, f"expected a violation at {location}, got:\n{run.output}"
    for word in words:
        assert any(word in line for line in lines), f"{word!r} not in {lines}"
    assert "Traceback" not in run.output


def assert_clean(run: Run) -> None:
    assert run.returncode == 0, run.output
    assert run.stdout.startswith("check_levels: OK"), run.output


# -- the real tree ------------------------------------------------------------------------


def test_real_tree_passes() -> None:
    assert_clean(run_check())


def test_runs_well_under_a_second() -> None:
    # The check itself takes ~0.15 s here; the bound is generous for a loaded 2-core machine.
    start = time.perf_counter()
    run = run_check()
    elapsed = time.perf_counter() - start
    assert run.returncode in (0, 1), run.output
    assert elapsed < 5.0, f"check_levels took {elapsed:.2f} s"


def test_root_option_checks_another_tree(tree: Path) -> None:
    line = append(src(tree, "loom-protocol") / "_version.py", "import loom_core")
    run = run_check(SCRIPT, "--root", str(tree))
    assert_caught(run, f"packages/loom-protocol/src/loom_protocol/_version.py:{line}")


def test_root_that_is_not_a_directory(tmp_path: Path) -> None:
    run = run_check(SCRIPT, "--root", str(tmp_path / "missing"))
    assert run.returncode == 2
    assert "not a directory" in run.stderr


# -- planted import cycles inside a package --------------------------------------------------


STORE = "packages/loom-store/src/loom_store"


def test_two_modules_importing_each_other(tree: Path) -> None:
    pkg = src(tree, "loom-store")
    plant(pkg / "_aa.py", '"""Planted."""\n\nfrom ._bb import B\n\nA = 1\n')
    plant(pkg / "_bb.py", '"""Planted."""\n\nfrom loom_store import _aa\n\nB = _aa\n')
    run = check(tree)
    assert_caught(
        run,
        f"{STORE}/_aa.py:3",
        "import cycle in loom_store: loom_store._aa -> loom_store._bb -> loom_store._aa",
        f"loom_store._bb imports loom_store._aa at {STORE}/_bb.py:3",
    )
    assert len([line for line in run.stdout.splitlines() if "import cycle" in line]) == 1


def test_a_lazy_import_inside_a_function_still_closes_a_cycle(tree: Path) -> None:
    # The shape loom-store had: the writer imported the store, the store the writer lazily.
    pkg = src(tree, "loom-store")
    plant(pkg / "_aa.py", '"""Planted."""\n\nfrom ._bb import B\n')
    plant(
        pkg / "_bb.py",
        '"""Planted."""\n\n\nclass B:\n    def make(self) -> object:\n'
        "        from ._cc import C\n\n        return C\n",
    )
    plant(pkg / "_cc.py", '"""Planted."""\n\nimport loom_store._aa\n\nC = loom_store._aa\n')
    assert_caught(
        check(tree),
        f"{STORE}/_aa.py:3",
        "loom_store._aa -> loom_store._bb -> loom_store._cc -> loom_store._aa",
        f"loom_store._bb imports loom_store._cc at {STORE}/_bb.py:6",
        f"loom_store._cc imports loom_store._aa at {STORE}/_cc.py:3",
    )


def test_a_cycle_through_the_package_init(tree: Path) -> None:
    # __init__ imports _store; a module importing back from the package closes a cycle.
    line = append(src(tree, "loom-store") / "_writer.py", "from loom_store import ResultStore")
    init = (src(tree, "loom-store") / "__init__.py").read_text(encoding="utf-8").splitlines()
    at = next(i for i, text in enumerate(init, start=1) if text.startswith("from ._writer"))
    assert_caught(
        check(tree),
        f"{STORE}/__init__.py:{at}",
        "import cycle in loom_store: loom_store -> loom_store._writer -> loom_store",
        f"loom_store._writer imports loom_store at {STORE}/_writer.py:{line}",
    )


def test_imports_under_type_checking_make_no_cycle(tree: Path) -> None:
    pkg = src(tree, "loom-store")
    plant(pkg / "_aa.py", '"""Planted."""\n\nfrom ._bb import B\n')
    plant(
        pkg / "_bb.py",
        '"""Planted."""\n\nfrom typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n'
        "    from ._aa import A\n\nB = 1\n",
    )
    assert_clean(check(tree))


# -- planted import violations ---------------------------------------------------------------


def test_protocol_importing_core_at_top_level(tree: Path) -> None:
    line = append(src(tree, "loom-protocol") / "_fingerprint.py", "import loom_core")
    assert_caught(
        check(tree),
        f"packages/loom-protocol/src/loom_protocol/_fingerprint.py:{line}",
        "loom-protocol (level 0) must not import loom_core (level 2, higher)",
    )


def test_backends_importing_sqlalchemy_inside_a_function(tree: Path) -> None:
    plant(
        src(tree, "loom-backends") / "_planted.py",
        '"""Planted."""\n\n\ndef connect() -> None:\n    import sqlalchemy\n\n    del sqlalchemy\n',
    )
    assert_caught(
        check(tree),
        "packages/loom-backends/src/loom_backends/_planted.py:5",
        "must not import sqlalchemy",
    )


def test_backends_importing_store_under_type_checking(tree: Path) -> None:
    plant(
        src(tree, "loom-backends") / "_planted.py",
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    import loom_store\n",
    )
    assert_caught(
        check(tree),
        "packages/loom-backends/src/loom_backends/_planted.py:4",
        "loom-backends (level 1) must not import loom_store (level 1 sibling)",
    )


def test_store_importing_from_core(tree: Path) -> None:
    plant(src(tree, "loom-store") / "_planted.py", '"""Planted."""\n\nfrom loom_core import x\n')
    assert_caught(
        check(tree),
        "packages/loom-store/src/loom_store/_planted.py:3",
        "loom-store (level 1) must not import loom_core (level 2, higher)",
    )


def test_store_importing_backends_in_a_class_body(tree: Path) -> None:
    plant(
        src(tree, "loom-store") / "_planted.py",
        "class Planted:\n    from loom_backends.testing import FakeLLMServer\n",
    )
    assert_caught(
        check(tree),
        "packages/loom-store/src/loom_store/_planted.py:2",
        "must not import loom_backends (level 1 sibling)",
    )


def test_core_importing_an_undeclared_module(tree: Path) -> None:
    plant(src(tree, "loom-core") / "_planted.py", "import json\nimport requests\n")
    assert_caught(
        check(tree),
        "packages/loom-core/src/loom_core/_planted.py:2",
        "requests, a third-party module it does not declare",
    )


def test_core_importing_ray_level_three(tree: Path) -> None:
    # Nothing below level 3 may import loom_ray, not even lazily.
    plant(
        src(tree, "loom-core") / "_planted.py",
        '"""Planted."""\n\n\ndef mapper() -> object:\n    from loom_ray import LoomMapper\n\n'
        "    return LoomMapper\n",
    )
    assert_caught(
        check(tree),
        "packages/loom-core/src/loom_core/_planted.py:5",
        "loom-core (level 2) must not import loom_ray (level 3, higher)",
    )


def test_ray_importing_what_its_row_does_not_allow(tree: Path) -> None:
    plant(src(tree, "loom-ray") / "_planted.py", '"""Planted."""\n\nimport openai\nimport ray\n')
    run = check(tree)
    assert_caught(run, "packages/loom-ray/src/loom_ray/_planted.py:3", "openai")
    assert "_planted.py:4:" not in run.stdout  # ray is its own row's


def test_ray_declaring_a_dependency_outside_its_row(tree: Path) -> None:
    line = add_requirement(tree, "loom-ray", '"ray[data]', "requests>=2")
    assert_caught(
        check(tree),
        f"packages/loom-ray/pyproject.toml:{line}",
        "loom-ray (level 3) must not depend on 'requests'",
    )


def test_store_declaring_loom_ray(tree: Path) -> None:
    line = add_requirement(tree, "loom-store", '"sqlalchemy', "loom-ray>=0.1")
    assert_caught(
        check(tree),
        f"packages/loom-store/pyproject.toml:{line}",
        "must not depend on loom-ray (level 3, higher)",
    )


def test_import_in_try_except_is_still_checked(tree: Path) -> None:
    plant(
        src(tree, "loom-core") / "_planted.py",
        "try:\n    import orjson\nexcept ImportError:\n    orjson = None\n",
    )
    assert_caught(check(tree), "packages/loom-core/src/loom_core/_planted.py:2", "orjson")


def test_dotted_import_is_judged_by_its_top_level_name(tree: Path) -> None:
    plant(src(tree, "loom-backends") / "_planted.py", "import sqlalchemy.orm.session\n")
    assert_caught(
        check(tree),
        "packages/loom-backends/src/loom_backends/_planted.py:1",
        "sqlalchemy.orm.session",
    )


def test_import_module_with_a_literal_name(tree: Path) -> None:
    plant(
        src(tree, "loom-protocol") / "_planted.py",
        'import importlib\n\nhttpx = importlib.import_module("httpx")\n',
    )
    assert_caught(check(tree), "packages/loom-protocol/src/loom_protocol/_planted.py:3", "httpx")


def test_pydantic_core_is_not_pydantic(tree: Path) -> None:
    plant(src(tree, "loom-protocol") / "_planted.py", "from pydantic_core import core_schema\n")
    assert_caught(
        check(tree), "packages/loom-protocol/src/loom_protocol/_planted.py:1", "pydantic_core"
    )


def test_optional_pandas_must_stay_guarded_in_protocol(tree: Path) -> None:
    plant(src(tree, "loom-protocol") / "_planted.py", '"""Planted."""\n\nimport pandas\n')
    assert_caught(
        check(tree),
        "packages/loom-protocol/src/loom_protocol/_planted.py:3",
        "unguarded",
        "TYPE_CHECKING",
    )


def test_else_branch_of_type_checking_is_not_guarded(tree: Path) -> None:
    plant(
        src(tree, "loom-protocol") / "_planted.py",
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    import pandas\n"
        "else:\n    import pandas\n",
    )
    run = check(tree)
    assert_caught(run, "packages/loom-protocol/src/loom_protocol/_planted.py:6", "unguarded")
    assert "_planted.py:4:" not in run.stdout


def test_relative_import_above_the_package(tree: Path) -> None:
    plant(src(tree, "loom-core") / "_planted.py", "from .. import loom_store\n")
    assert_caught(
        check(tree), "packages/loom-core/src/loom_core/_planted.py:1", "above the top-level"
    )


def test_module_that_does_not_parse(tree: Path) -> None:
    plant(src(tree, "loom-store") / "_planted.py", "import os\n\ndef broken(:\n")
    assert_caught(check(tree), "packages/loom-store/src/loom_store/_planted.py:3", "cannot parse")


# -- planted declaration violations -----------------------------------------------------------


def add_requirement(tree: Path, dist: str, after: str, requirement: str) -> int:
    """Insert ``requirement`` after the line holding ``after`` in a pyproject; return its line."""
    path = tree / "packages" / dist / "pyproject.toml"
    lines = path.read_text(encoding="utf-8").splitlines()
    index = next(i for i, line in enumerate(lines) if after in line)
    lines.insert(index + 1, f'    "{requirement}",')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return index + 2


def test_protocol_declaring_httpx(tree: Path) -> None:
    line = add_requirement(tree, "loom-protocol", '"pydantic', "httpx>=0.27")
    assert_caught(
        check(tree),
        f"packages/loom-protocol/pyproject.toml:{line}",
        "loom-protocol (level 0) must not depend on 'httpx'",
    )


def test_store_declaring_its_sibling(tree: Path) -> None:
    line = add_requirement(tree, "loom-store", '"sqlalchemy', "Loom_Backends>=0.1")
    assert_caught(
        check(tree),
        f"packages/loom-store/pyproject.toml:{line}",
        "must not depend on loom-backends (level 1 sibling)",
    )


def test_extra_only_dependency_in_main_dependencies(tree: Path) -> None:
    line = add_requirement(
        tree, "loom-store", '"sqlalchemy', "psycopg[binary]>=3.2 ; python_version>'3'"
    )
    assert_caught(
        check(tree),
        f"packages/loom-store/pyproject.toml:{line}",
        "psycopg only in the optional extra 'postgres'",
    )


def test_requirement_that_is_not_pep_508(tree: Path) -> None:
    line = add_requirement(tree, "loom-core", '"tqdm', "not a requirement!")
    assert_caught(check(tree), f"packages/loom-core/pyproject.toml:{line}", "PEP 508")


def test_unknown_package_directory(tree: Path) -> None:
    extra = tree / "packages" / "loom-extra"
    (extra / "src" / "loom_extra").mkdir(parents=True)
    plant(extra / "pyproject.toml", '[project]\nname = "loom-extra"\nversion = "0.1.0"\n')
    assert_caught(check(tree), "packages/loom-extra:1", "not in the level table")


def test_missing_pyproject_is_a_violation_not_a_crash(tree: Path) -> None:
    (tree / "packages" / "loom-store" / "pyproject.toml").unlink()
    line = append(src(tree, "loom-store") / "__init__.py", "import loom_core")
    run = check(tree)
    assert_caught(run, "packages/loom-store/pyproject.toml:1", "no pyproject.toml")
    # The code is still checked for level leaks.
    assert_caught(run, f"packages/loom-store/src/loom_store/__init__.py:{line}", "loom_core")


def test_project_name_must_match_the_directory(tree: Path) -> None:
    path = tree / "packages" / "loom-core" / "pyproject.toml"
    text = path.read_text(encoding="utf-8")
    line = text.splitlines().index('name = "loom-core"') + 1
    path.write_text(text.replace('name = "loom-core"', 'name = "loom-engine"'), encoding="utf-8")
    assert_caught(check(tree), f"packages/loom-core/pyproject.toml:{line}", "'loom-engine'")


def test_invalid_toml_is_a_violation_not_a_crash(tree: Path) -> None:
    plant(tree / "packages" / "loom-core" / "pyproject.toml", '[project]\nname = "loom-core\n')
    assert_caught(check(tree), "packages/loom-core/pyproject.toml:2", "invalid TOML")


# -- what stays fine --------------------------------------------------------------------------


def test_relative_import_is_the_package_itself(tree: Path) -> None:
    plant(
        src(tree, "loom-backends") / "_planted.py",
        "from . import _planted as again\nfrom ._planted import again as again2\n",
    )
    assert_clean(check(tree))


def test_stdlib_and_lower_level_imports_are_fine(tree: Path) -> None:
    plant(
        src(tree, "loom-core") / "_planted.py",
        "from __future__ import annotations\n\nimport asyncio\nimport concurrent.futures\n"
        "from typing import TYPE_CHECKING\n\nimport pydantic\nimport loom_protocol._chat\n"
        "from loom_store import ResultStore\n\nif TYPE_CHECKING:\n    import pandas\n\n\n"
        "def lazy() -> None:\n    import json_repair\n    import sqlite3\n",
    )
    assert_clean(check(tree))


def test_optional_pandas_guarded_in_protocol_is_fine(tree: Path) -> None:
    plant(
        src(tree, "loom-protocol") / "_planted.py",
        "def frame() -> None:\n    try:\n        import pandas\n"
        "    except ModuleNotFoundError:\n        return\n",
    )
    assert_clean(check(tree))
