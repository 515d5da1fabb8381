"""The walk over ``packages/``: each package's declarations, imports and import cycles."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from import_cycles import find_cycles, module_name

from ._imports import ImportCollector, judge_import
from ._requirements import read_requirements
from ._table import TABLE, Row, normalise

__all__ = ["Checker", "Violation"]


@dataclass(frozen=True, order=True)
class Violation:
    """One finding, printed as ``path:line: message``."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class Checker:
    """Collects violations over one repository root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.violations: list[Violation] = []
        self.modules_checked = 0

    def report(self, path: Path, line: int, message: str) -> None:
        """Record a violation at ``path:line`` (the path shown relative to the root)."""
        self.violations.append(Violation(self.rel(path), line, message))

    def rel(self, path: Path) -> str:
        """``path`` relative to the root, as in the printed violations."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()

    def run(self) -> None:
        """Check every package directory under ``packages/`` against the level table."""
        packages = self.root / "packages"
        if not packages.is_dir():
            self.report(packages, 1, "no packages/ directory under the repository root")
            return
        seen: set[str] = set()
        for pkg_dir in sorted(p for p in packages.iterdir() if p.is_dir()):
            if pkg_dir.name.startswith((".", "__")):
                continue
            dist = normalise(pkg_dir.name)
            row = TABLE.get(dist)
            if row is None:
                self.report(
                    pkg_dir,
                    1,
                    f"package directory {pkg_dir.name!r} is not in the level table "
                    f"(known: {', '.join(sorted(TABLE))}); add it to DESIGN §1 and "
                    "scripts/levels/_table.py first",
                )
                continue
            seen.add(dist)
            self.check_package(pkg_dir, dist, row)
        for dist in sorted(set(TABLE) - seen):
            self.report(packages / dist, 1, f"the level table names {dist} but it is missing")

    def check_package(self, pkg_dir: Path, dist: str, row: Row) -> None:
        """Check one package: its declarations, its ``src/`` layout, imports and cycles."""
        declared = read_requirements(pkg_dir, dist, row, self.report)
        if declared is None:
            # The declarations are already reported; still catch level leaks in the code,
            # taking everything the row allows as declared so the report stays short.
            declared = set(row.deps) | set(row.extra_deps) | set(row.via)
        src = pkg_dir / "src"
        own = src / row.import_name
        if not own.is_dir():
            self.report(pkg_dir, 1, f"{dist} has no src/{row.import_name}/ package")
        if src.is_dir():
            for entry in sorted(src.iterdir()):
                name = entry.stem if entry.suffix in (".py", ".pyi") else entry.name
                if entry.name.startswith((".", "__")) or name == row.import_name:
                    continue
                if entry.is_dir() or entry.suffix in (".py", ".pyi"):
                    self.report(
                        entry,
                        1,
                        f"src/ of {dist} holds {entry.name!r}, but its only import name is "
                        f"{row.import_name!r}",
                    )
        trees: dict[str, tuple[Path, ast.Module]] = {}
        for path in sorted(src.rglob("*.py*")) if src.is_dir() else []:
            if path.suffix in (".py", ".pyi") and "__pycache__" not in path.parts:
                tree = self.check_module(path, src, dist, row, declared)
                if tree is not None and path.suffix == ".py":
                    trees[module_name(path, src)] = (path, tree)
        self.check_cycles(row, trees)

    def check_cycles(self, row: Row, trees: dict[str, tuple[Path, ast.Module]]) -> None:
        """Report each import cycle among the package's modules, at its first import."""
        for cycle in find_cycles(trees):
            names = " -> ".join([cycle[0].source, *(edge.target for edge in cycle)])
            where = "; ".join(
                f"{edge.source} imports {edge.target} at {self.rel(edge.path)}:{edge.line}"
                for edge in cycle
            )
            self.report(
                cycle[0].path,
                cycle[0].line,
                f"import cycle in {row.import_name}: {names} ({where}); move what they share "
                "into a module of its own (an import needed only for annotations may go under "
                "`if TYPE_CHECKING:`)",
            )

    def check_module(
        self, path: Path, src: Path, dist: str, row: Row, declared: set[str]
    ) -> ast.Module | None:
        """Check one module's imports; return its tree (``None`` when it does not parse)."""
        self.modules_checked += 1
        try:
            tree = ast.parse(path.read_bytes(), filename=str(path))
        except (SyntaxError, ValueError) as exc:
            line = getattr(exc, "lineno", None) or 1
            self.report(path, line, f"cannot parse: {exc.__class__.__name__}: {exc}")
            return None
        parts = path.relative_to(src).with_suffix("").parts
        # The package a relative import starts from: the module's own package.
        package = list(parts if parts[-1] == "__init__" else parts[:-1])
        if package and package[-1] == "__init__":
            package.pop()
        collector = ImportCollector(package)
        collector.visit(tree)
        for line, level, module in collector.escapes:
            self.report(
                path,
                line,
                f"relative import {'.' * level}{module} goes above the top-level package "
                f"{row.import_name!r}",
            )
        for site in collector.sites:
            message = judge_import(dist, row, declared, site)
            if message:
                self.report(path, site.line, message)
        return tree
