"""docs/install.md, done: its commands install OUR four packages into fresh virtual environments.

The slow tests run what the page shows, with its placeholder URL and revision replaced by a
``file://`` URL of a temporary clone of this repository and the clone's commit: so they install
what is committed (HEAD), not uncommitted edits. Third-party dependencies come from the usual
package index (uv's and pip's caches keep this quick). Each environment then imports
``loom_core``, runs a small batch against a ``FakeLLMServer`` and calls the ``loom`` command;
``pip freeze`` / ``uv pip freeze`` must show every one of our packages coming from the clone
or its wheels, never from an index.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from loom_backends.testing import FakeLLMServer

from ._doc_blocks import fences
from .conftest import REPO, cli_env

_T = TypeVar("_T", bound=Callable[..., Any])
INSTALL_MD = REPO / "docs" / "install.md"
DOC_URL = "https://example.com/loom.git"
DOC_REV = "v0.2.0"
PACKAGES = ("loom-protocol", "loom-backends", "loom-store", "loom-core")
VERSION = "0.2.0"
_NAME_FROM_INDEX = re.compile(
    r"\b(?:pip install|uv add|uv pip install)\s+(?:-\S+\s+)*['\"]?"
    r"loom-(?:core|protocol|backends|store)\b(?!\S* @)"
)

_UV = shutil.which("uv")
_GIT = shutil.which("git")
_SLOW_INSTALL = (
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(_UV is None, reason="uv is not installed: it builds and installs Loom here"),
    pytest.mark.skipif(_GIT is None, reason="git is not installed: the tests clone the repository"),
)


def slow_install(test: _T) -> _T:
    """Mark an install test: slow, a longer timeout, skipped without uv or git."""
    for mark in _SLOW_INSTALL:
        test = mark(test)
    return test


# What runs in the new environment: our package, a batch on the fake server, the result store.
_BATCH = """\
import json

from pydantic import BaseModel

import loom_core
from loom_core import TaskLoom


class Profile(BaseModel):
    name: str
    skills: list[str]


with TaskLoom("gpt-4o-mini", "Extract: {{ text }}", response_model=Profile) as loom:
    results = loom.map(
        [{"text": "Ada Lovelace writes Python"}, {"text": "Alan Turing does statistics"}],
        task_name="install_check",
    )
print(json.dumps({
    "file": loom_core.__file__,
    "data": [r.data.model_dump() for r in results],
    "rows": len(results.to_pandas()),
}))
"""


# --- the page --------------------------------------------------------------------------------


def _page() -> str:
    return INSTALL_MD.read_text(encoding="utf-8")


def _block(info: str, containing: str) -> str:
    found = [f.body for f in fences(_page()) if f.info == info and containing in f.body]
    assert len(found) == 1, f"docs/install.md has {len(found)} ```{info} blocks with {containing!r}"
    return found[0]


def _commands(prefix: str) -> list[list[str]]:
    """The page's ```bash command lines starting with ``prefix``, split as a shell would."""
    lines = [
        line.split("  #")[0].strip()
        for f in fences(_page())
        if f.info == "bash"
        for line in f.body.splitlines()
    ]
    return [shlex.split(line) for line in lines if line.startswith(prefix)]


def _one_command(prefix: str) -> list[str]:
    found = _commands(prefix)
    assert len(found) == 1, f"docs/install.md shows {len(found)} commands starting {prefix!r}"
    return found[0]


def test_the_readme_sends_readers_to_the_install_page() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    install = readme.split("## Install", 1)[1].split("\n## ", 1)[0]
    assert "(docs/install.md)" in install


def test_no_doc_installs_our_names_from_the_index() -> None:
    pages = [
        REPO / "README.md",
        *sorted((REPO / "docs").glob("*.md")),
        *sorted((REPO / "packages").glob("*/README.md")),
        *sorted((REPO / "packages").glob("*/src/**/*.py")),
    ]
    offenders = [
        f"{page.relative_to(REPO)}:{number}: {line.strip()}"
        for page in pages
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
        if _NAME_FROM_INDEX.search(line)
    ]
    assert not offenders, "our packages are not on the index:\n" + "\n".join(offenders)


def test_the_name_check_tells_an_index_install_from_a_url_install() -> None:
    assert _NAME_FROM_INDEX.search("uv add 'loom-core[pandas]'")
    assert _NAME_FROM_INDEX.search("pip install -U loom-store[postgres]")
    assert not _NAME_FROM_INDEX.search("pip install 'loom-core @ git+https://x/l.git'")
    assert not _NAME_FROM_INDEX.search("uv pip install dist/loom_*.whl 'loom-core[pandas]'")


def test_the_page_names_all_four_packages_on_every_git_source() -> None:
    sources = _block("toml", "[tool.uv.sources]")
    requirements = _block("text", "git+")
    for name in PACKAGES:
        assert f'{name} = {{ git = "{DOC_URL}", subdirectory = "packages/{name}", ' in sources
        assert f"@ git+{DOC_URL}@{DOC_REV}#subdirectory=packages/{name}" in requirements
    assert "--find-links" not in "".join(" ".join(c) for c in _commands(""))


# --- installing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clone:
    path: Path
    commit: str

    @property
    def url(self) -> str:
        return self.path.as_uri()


def _env() -> dict[str, str]:
    env = cli_env(PIP_DISABLE_PIP_VERSION_CHECK="1")
    # The workspace's own environment must not leak into the new ones.
    for key in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT", "UV_FROZEN", "UV_LOCKED", "UV_NO_SYNC"):
        env.pop(key, None)
    return env


def _run(args: Sequence[str | Path], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env or _env(),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, (
        f"{shlex.join(str(a) for a in args)} (in {cwd}) exited with {done.returncode}\n"
        f"--- stdout\n{done.stdout}--- stderr\n{done.stderr}"
    )
    return done.stdout


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Clone:
    """A git repository holding this repository's HEAD, checked out on a branch."""
    path = tmp_path_factory.mktemp("repo") / "loom"
    assert _GIT is not None
    _run([_GIT, "init", "-q", path], cwd=path.parent)
    _run([_GIT, "fetch", "-q", REPO, "HEAD"], cwd=path)
    _run([_GIT, "checkout", "-q", "-b", "under-test", "FETCH_HEAD"], cwd=path)
    commit = _run([_GIT, "rev-parse", "HEAD"], cwd=path).strip()
    assert commit == _run([_GIT, "rev-parse", "HEAD"], cwd=REPO).strip()
    return Clone(path, commit)


def _bin(venv: Path, name: str) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin") / name


def _venv(path: Path, *, pip: bool) -> Path:
    assert _UV is not None
    _run(
        [_UV, "venv", "-q", "--python", sys.executable, *(["--seed"] if pip else []), path],
        path.parent,
    )
    return path


def _installer(command: list[str], venv: Path) -> list[str]:
    """A page's ``pip …`` / ``uv pip …`` command, aimed at ``venv``."""
    assert _UV is not None
    if command[:2] == ["uv", "pip"]:
        return [_UV, "pip", command[2], "--python", str(_bin(venv, "python")), *command[3:]]
    assert command[0] == "pip", command
    return [str(_bin(venv, "python")), "-m", "pip", *command[1:]]


def _expand(args: list[str], cwd: Path) -> list[str]:
    """What a shell does to the page's globs."""
    out: list[str] = []
    for arg in args:
        matches = sorted(glob.glob(arg, root_dir=cwd)) if "*" in arg else []
        out.extend(matches or [arg])
    return out


def _check_environment(
    venv: Path, server: FakeLLMServer, workdir: Path, origins: dict[str, str]
) -> None:
    """Ours are installed from ``origins``; a batch runs; the ``loom`` command answers."""
    assert _UV is not None
    frozen = _run([_UV, "pip", "freeze", "--python", _bin(venv, "python")], workdir)
    for name in PACKAGES:
        # pip records a wheel's hash after its URL; uv does not.
        line = re.compile(rf"{re.escape(f'{name} @ {origins[name]}')}(#sha256=[0-9a-f]{{64}})?")
        assert any(line.fullmatch(x) for x in frozen.splitlines()), f"{name}?\n{frozen}"
    env = {**_env(), "OPENAI_BASE_URL": server.base_url}
    script = workdir / "batch_check.py"
    script.write_text(_BATCH, encoding="utf-8")
    report = json.loads(_run([_bin(venv, "python"), script], workdir, env))
    assert Path(report["file"]).resolve().is_relative_to(venv.resolve()), report["file"]
    assert report["data"] == [
        {"name": "Ada Lovelace", "skills": ["Python"]},
        {"name": "Alan Turing", "skills": ["statistics"]},
    ]
    assert report["rows"] == 2
    assert server.request_count == 2
    loom = _bin(venv, "loom")
    usage = _run([loom, "--help"], workdir, env)
    assert usage.startswith("usage: loom")
    if "--version" in usage:  # `loom --version` arrives with issue 11 item 18
        assert VERSION in _run([loom, "--version"], workdir, env)
    assert "install_check" in _run([loom, "tasks"], workdir, env)


def _git_origin(clone: Clone, name: str) -> str:
    return f"git+{clone.url}@{clone.commit}#subdirectory=packages/{name}"


def _local(text: str, clone: Clone) -> str:
    """The page's text with its placeholders replaced by the clone's URL and commit."""
    assert DOC_URL in text and DOC_REV in text
    return text.replace(DOC_URL, clone.url).replace(DOC_REV, clone.commit)


@slow_install
@pytest.mark.parametrize("installer", ["uv pip", "pip"])
def test_install_from_git_requirements(
    installer: str, clone: Clone, server: FakeLLMServer, tmp_path: Path
) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(_local(_block("text", "git+"), clone), encoding="utf-8")
    venv = _venv(tmp_path / "venv", pip=installer == "pip")
    _run(_installer(_one_command(f"{installer} install -r"), venv), tmp_path)
    _check_environment(venv, server, tmp_path, {n: _git_origin(clone, n) for n in PACKAGES})


@slow_install
def test_install_from_git_sources_in_a_uv_project(
    clone: Clone, server: FakeLLMServer, tmp_path: Path
) -> None:
    assert _UV is not None
    project = tmp_path / "my-app"
    project.mkdir()
    pyproject = _local(_block("toml", "[tool.uv.sources]"), clone)
    (project / "pyproject.toml").write_text(pyproject, encoding="utf-8")
    assert _one_command("uv sync") == ["uv", "sync"]
    _run([_UV, "sync", "--python", sys.executable], project)
    assert clone.commit in (project / "uv.lock").read_text(encoding="utf-8")
    _check_environment(
        project / ".venv", server, project, {n: _git_origin(clone, n) for n in PACKAGES}
    )


@pytest.fixture(scope="module")
def wheels(clone: Clone) -> Path:
    """The page's build command, run in the clone: the folder of the four wheels."""
    assert _UV is not None
    command = _one_command("uv build")
    _run([_UV, *command[1:]], clone.path)
    dist = clone.path / "dist"
    # loom-ray (level 3, versioned on its own) is built too; the page installs it only for Ray.
    built = sorted(p.name for p in dist.glob("*.whl") if not p.name.startswith("loom_ray-"))
    assert built == sorted(_wheel_name(n) for n in PACKAGES)
    assert len(list(dist.glob("loom_ray-*.whl"))) == 1
    return dist


def _wheel_name(name: str) -> str:
    return f"{name.replace('-', '_')}-{VERSION}-py3-none-any.whl"


@slow_install
@pytest.mark.parametrize("installer", ["uv pip", "pip"])
def test_install_from_wheels_by_path(
    installer: str, clone: Clone, wheels: Path, server: FakeLLMServer, tmp_path: Path
) -> None:
    command = _one_command(f"{installer} install dist/")
    venv = _venv(tmp_path / "venv", pip=installer == "pip")
    # The page's paths are relative to the folder holding dist/: run it there.
    _run(_expand(_installer(command, venv), clone.path), clone.path)
    origins = {n: (wheels / _wheel_name(n)).as_uri() for n in PACKAGES}
    _check_environment(venv, server, tmp_path, origins)
