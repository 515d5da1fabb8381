"""The package's public surface."""

from __future__ import annotations

import ast
import types
from pathlib import Path

import loom_store


def _isort_key(name: str) -> tuple[bool, bool, str]:
    # ruff's RUF022 order: CONSTANTS, then Classes, then functions.
    return (not name.isupper(), not name[:1].isupper(), name)


def test_all_is_sorted_and_complete() -> None:
    assert loom_store.__all__ == sorted(loom_store.__all__, key=_isort_key)
    public = {
        name
        for name, value in vars(loom_store).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(loom_store.__all__) == public
    for name in loom_store.__all__:
        assert getattr(loom_store, name).__doc__, f"{name} has no docstring"


def test_never_imports_a_higher_or_sibling_package() -> None:
    src = Path(loom_store.__file__).parent
    forbidden = ("loom_core", "loom_backends", "httpx", "jinja2", "openai", "anthropic")
    for path in src.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                assert not name.startswith(forbidden), f"{path.name} imports {name}"
