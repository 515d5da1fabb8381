"""The imports of one module, and whether a package's row allows each of them."""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass

from ._table import LOOM_BY_IMPORT, MODULE_TO_DIST, TABLE, Row, allowed_text

__all__ = ["ImportCollector", "ImportSite", "judge_import"]


@dataclass(frozen=True)
class ImportSite:
    """One import found in a module."""

    module: str  # the full dotted name, for messages
    top: str  # its top-level name
    line: int
    guarded: bool  # under `if TYPE_CHECKING:` or in a `try` that catches ImportError


def judge_import(dist: str, row: Row, declared: set[str], site: ImportSite) -> str | None:
    """The violation message for one import, or None when it is allowed."""
    own = f"{dist} (level {row.level})"
    top = site.top
    if top == row.import_name or top in sys.stdlib_module_names:
        return None
    target_dist = LOOM_BY_IMPORT.get(top)
    if target_dist is not None:
        target = TABLE[target_dist]
        if target.level > row.level:
            return f"{own} must not import {top} (level {target.level}, higher)"
        if target.level == row.level:
            return f"{own} must not import {top} (level {target.level} sibling)"
        if target_dist not in declared:
            return f"{own} imports {top} but does not declare {target_dist}"
        return None
    dist_of = MODULE_TO_DIST.get(top)
    allowed = dist_of is not None and (dist_of in row.deps or dist_of in row.extra_deps)
    if allowed and dist_of in declared:
        return None
    if dist_of in row.via:
        if row.via[dist_of] in declared:
            return None
        return f"{own} imports {site.module} but declares neither {dist_of} nor {row.via[dist_of]}"
    if top in row.optional_imports:
        if site.guarded:
            return None
        return (
            f"{own} imports {site.module} unguarded: it is optional for {dist}, so import it "
            "only under `if TYPE_CHECKING:` or inside `try: ... except ImportError`"
        )
    if allowed:
        return f"{own} imports {site.module} but does not declare {dist_of} in pyproject.toml"
    if dist_of is not None:
        return (
            f"{own} must not import {site.module} (distribution {dist_of}): "
            f"its row allows {allowed_text(row)}"
        )
    return (
        f"{own} imports {site.module}, a third-party module it does not declare "
        f"(its row allows {allowed_text(row)})"
    )


class ImportCollector(ast.NodeVisitor):
    """Every import in a module, with whether it sits behind a TYPE_CHECKING/ImportError guard."""

    def __init__(self, package: list[str]) -> None:
        self.package = package
        self.sites: list[ImportSite] = []
        self.escapes: list[tuple[int, int, str]] = []
        self._guard = 0

    def _add(self, module: str, line: int) -> None:
        if module:
            self.sites.append(ImportSite(module, module.split(".")[0], line, self._guard > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0:
            self._add(node.module or "", node.lineno)
            return
        # A relative import names the package itself, unless it climbs above the top level.
        if node.level > len(self.package):
            self.escapes.append((node.lineno, node.level, node.module or ""))

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self._guard += 1
            for stmt in node.body:
                self.visit(stmt)
            self._guard -= 1
            self.visit(node.test)
            for stmt in node.orelse:  # the else branch runs at run time
                self.visit(stmt)
            return
        self.generic_visit(node)

    def visit_Try(self, node: ast.Try) -> None:
        self._visit_try(node)

    def visit_TryStar(self, node: ast.TryStar) -> None:
        self._visit_try(node)

    def _visit_try(self, node: ast.Try | ast.TryStar) -> None:
        guarded = any(_catches_import_error(h.type) for h in node.handlers)
        self._guard += guarded
        for stmt in node.body:
            self.visit(stmt)
        self._guard -= guarded
        for part in (*node.handlers, *node.orelse, *node.finalbody):
            self.visit(part)

    def visit_Call(self, node: ast.Call) -> None:
        # importlib.import_module("x") / __import__("x") with a literal name is an import too.
        func = node.func
        name = (
            func.attr
            if isinstance(func, ast.Attribute)
            else func.id
            if isinstance(func, ast.Name)
            else ""
        )
        if (
            name in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and not node.args[0].value.startswith(".")
        ):
            self._add(node.args[0].value, node.lineno)
        self.generic_visit(node)


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _catches_import_error(handler_type: ast.expr | None) -> bool:
    if handler_type is None:
        return False  # a bare except hides every error; not a deliberate optional import
    names = handler_type.elts if isinstance(handler_type, ast.Tuple) else [handler_type]
    return any(
        (isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError"))
        or (isinstance(n, ast.Attribute) and n.attr in ("ImportError", "ModuleNotFoundError"))
        for n in names
    )
