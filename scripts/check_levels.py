#!/usr/bin/env python3
"""The dependency-level check (DESIGN §1). Standard library only, so it runs before `uv sync`.

For every package under ``packages/`` it reads the declared requirements
(``[project].dependencies`` and every ``[project.optional-dependencies]`` list) and every import
in ``src/`` (top-level, inside functions and classes, under ``if TYPE_CHECKING:``, in
``try``/``except``, and ``importlib.import_module("literal")``), and prints one
``path:line: message`` per violation of the level table below:

* a declared dependency that the package's row does not allow (a higher level, a same-level
  sibling, a third-party distribution not in the row, or an extra-only one outside an extra);
* an import of a higher-level Loom package or of a same-level sibling;
* an import of a third-party module the package does not declare (or may not use at all);
* an import cycle between modules of one package (see ``import_cycles.py`` for what counts);
* a package directory that the table does not know, a missing or unreadable pyproject.toml,
  a missing ``src/<import_name>/``, a module that does not parse.

Exit status: 0 when the tree is clean, 1 on any violation, 2 on bad command-line usage.

Usage::

    python scripts/check_levels.py [--root PATH]
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from import_cycles import find_cycles, module_name


@dataclass(frozen=True)
class Row:
    """One row of the level table.

    Attributes:
        import_name: The package's own top-level import name.
        level: 0 is the bottom; a package may only use Loom packages of a lower level.
        deps: Distributions it may declare anywhere (main dependencies or an extra).
        extra_deps: Distributions it may declare only inside an optional extra, mapped to the
            extra's required name (``None``: any extra).
        optional_imports: Third-party modules it may import *without* declaring them, only
            under ``if TYPE_CHECKING:`` or inside ``try``/``except ImportError`` (a feature that
            lights up when the user installed the module).
        via: Third-party distributions it may import without declaring them, mapped to the
            declared Loom package whose public API is written in them (it owns the version
            range). Declaring them directly is allowed too.
    """

    import_name: str
    level: int
    deps: frozenset[str]
    extra_deps: dict[str, str | None] = field(default_factory=dict)
    optional_imports: frozenset[str] = frozenset()
    via: dict[str, str] = field(default_factory=dict)


# The contracts of loom-protocol are pydantic models: whoever uses them uses pydantic (to
# validate a response_model, to catch a ValidationError). loom-protocol pins its range.
_PYDANTIC_VIA_PROTOCOL = {"pydantic": "loom-protocol"}

# DESIGN §1. Distribution names are PEP 503-normalised.
TABLE: dict[str, Row] = {
    "loom-protocol": Row(
        "loom_protocol",
        0,
        frozenset({"pydantic"}),
        # BatchResult.to_pandas() imports pandas lazily (DESIGN §2) and names the extra of
        # loom-core when it is missing; pydantic-only services never pay for it.
        optional_imports=frozenset({"pandas"}),
    ),
    "loom-backends": Row(
        "loom_backends",
        1,
        frozenset({"loom-protocol", "httpx", "httpx-aiohttp", "aiohttp"}),
        # The pytest plugin in loom_backends.testing; never a runtime requirement.
        extra_deps={"pytest": None},
        via=_PYDANTIC_VIA_PROTOCOL,
    ),
    "loom-store": Row(
        "loom_store",
        1,
        frozenset({"loom-protocol", "sqlalchemy"}),
        extra_deps={"psycopg": "postgres"},
        via=_PYDANTIC_VIA_PROTOCOL,
    ),
    "loom-core": Row(
        "loom_core",
        2,
        frozenset(
            {"loom-protocol", "loom-backends", "loom-store", "jinja2", "json-repair", "tqdm"}
        ),
        extra_deps={"pandas": "pandas"},
        via=_PYDANTIC_VIA_PROTOCOL,
    ),
}

# Top-level import names of every distribution the table mentions (plus the ones we know to be
# tempting but forbidden, so the message can name the distribution).
IMPORT_NAMES: dict[str, tuple[str, ...]] = {
    "aiohttp": ("aiohttp",),
    "httpx": ("httpx",),
    "httpx-aiohttp": ("httpx_aiohttp",),
    "jinja2": ("jinja2",),
    "json-repair": ("json_repair",),
    "pandas": ("pandas",),
    "psycopg": ("psycopg",),
    "pydantic": ("pydantic",),
    "pydantic-core": ("pydantic_core",),
    "pytest": ("pytest", "_pytest"),
    "sqlalchemy": ("sqlalchemy",),
    "tqdm": ("tqdm",),
    **{dist: (row.import_name,) for dist, row in TABLE.items()},
}
MODULE_TO_DIST: dict[str, str] = {
    module: dist for dist, modules in IMPORT_NAMES.items() for module in modules
}
LOOM_BY_IMPORT: dict[str, str] = {row.import_name: dist for dist, row in TABLE.items()}

# PEP 508: a name, then optional extras, a version specifier or URL, and markers.
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(.*)$", re.DOTALL)
_REQ_EXTRAS = re.compile(r"^\[([^\]]*)\]\s*(.*)$", re.DOTALL)
_REQ_REST = re.compile(r"^(?:@\s*\S.*|[<>=!~(].*|;.*|)$", re.DOTALL)
_TOML_LINE = re.compile(r"line (\d+)")


def normalise(name: str) -> str:
    """PEP 503 normalisation of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True, order=True)
class Violation:
    """One finding, printed as ``path:line: message``."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass(frozen=True)
class Requirement:
    """A declared requirement: its normalised name and where it was declared."""

    name: str
    text: str
    extra: str | None  # None: [project].dependencies
    line: int


@dataclass(frozen=True)
class ImportSite:
    """One import found in a module."""

    module: str  # the full dotted name, for messages
    top: str  # its top-level name
    line: int
    guarded: bool  # under `if TYPE_CHECKING:` or in a `try` that catches ImportError


class Checker:
    """Collects violations over one repository root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.violations: list[Violation] = []
        self.modules_checked = 0

    def report(self, path: Path, line: int, message: str) -> None:
        self.violations.append(Violation(self.rel(path), line, message))

    def rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()

    def run(self) -> None:
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
                    "scripts/check_levels.py first",
                )
                continue
            seen.add(dist)
            self.check_package(pkg_dir, dist, row)
        for dist in sorted(set(TABLE) - seen):
            self.report(packages / dist, 1, f"the level table names {dist} but it is missing")

    # -- declarations --------------------------------------------------------------------

    def check_package(self, pkg_dir: Path, dist: str, row: Row) -> None:
        declared = self.read_requirements(pkg_dir, dist, row)
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

    def read_requirements(self, pkg_dir: Path, dist: str, row: Row) -> set[str] | None:
        """Check the declarations; return the declared names, or None if unreadable."""
        pyproject = pkg_dir / "pyproject.toml"
        if not pyproject.is_file():
            self.report(pyproject, 1, f"{dist} has no pyproject.toml")
            return None
        text = pyproject.read_text(encoding="utf-8")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            match = _TOML_LINE.search(str(exc))
            self.report(pyproject, int(match.group(1)) if match else 1, f"invalid TOML: {exc}")
            return None
        project = data.get("project")
        if not isinstance(project, dict):
            self.report(pyproject, 1, "no [project] table")
            return None
        name = project.get("name")
        if not isinstance(name, str) or normalise(name) != dist:
            self.report(
                pyproject,
                _find_line(text, "name", set(), key=True),
                f"[project].name is {name!r}, but the directory packages/{pkg_dir.name} "
                f"says {dist!r}",
            )

        lists: list[tuple[str | None, object]] = [(None, project.get("dependencies", []))]
        optional = project.get("optional-dependencies", {})
        if isinstance(optional, dict):
            lists.extend(optional.items())
        else:
            self.report(pyproject, 1, "[project.optional-dependencies] must be a table")

        claimed: set[int] = set()
        requirements: list[Requirement] = []
        for extra, items in lists:
            where = "[project].dependencies" if extra is None else f"extra {extra!r}"
            if not isinstance(items, list):
                self.report(pyproject, 1, f"{where} must be a list of requirement strings")
                continue
            for item in items:
                line = _find_line(text, item, claimed) if isinstance(item, str) else 1
                if not isinstance(item, str) or (req_name := _requirement_name(item)) is None:
                    self.report(pyproject, line, f"{where}: {item!r} is not a PEP 508 requirement")
                    continue
                requirements.append(Requirement(normalise(req_name), item, extra, line))

        for req in requirements:
            self.check_requirement(pyproject, dist, row, req)
        return {req.name for req in requirements}

    def check_requirement(self, pyproject: Path, dist: str, row: Row, req: Requirement) -> None:
        own = f"{dist} (level {row.level})"
        if req.name == dist:
            if req.extra is None:
                self.report(pyproject, req.line, f"{dist} must not depend on itself")
            return  # a self-reference inside an extra ("pkg[a,b]") is the usual way to combine
        target = TABLE.get(req.name)
        if target is not None:
            if target.level > row.level:
                self.report(
                    pyproject,
                    req.line,
                    f"{own} must not depend on {req.name} (level {target.level}, higher)",
                )
            elif target.level == row.level:
                self.report(
                    pyproject,
                    req.line,
                    f"{own} must not depend on {req.name} (level {target.level} sibling)",
                )
            elif req.name not in row.deps:
                self.report(pyproject, req.line, f"{own} may not depend on {req.name}")
            return
        if req.name in row.deps or req.name in row.via:
            return
        if req.name in row.extra_deps:
            wanted = row.extra_deps[req.name]
            if req.extra is None:
                extra = f"the optional extra {wanted!r}" if wanted else "an optional extra"
                self.report(
                    pyproject,
                    req.line,
                    f"{own} may declare {req.name} only in {extra}, not in [project].dependencies",
                )
            elif wanted is not None and req.extra != wanted:
                self.report(
                    pyproject,
                    req.line,
                    f"{own} may declare {req.name} only in the extra {wanted!r}, "
                    f"not in {req.extra!r}",
                )
            return
        self.report(
            pyproject,
            req.line,
            f"{own} must not depend on {req.name!r}: its row allows {_allowed(row)}",
        )

    # -- imports --------------------------------------------------------------------------

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
        collector = _ImportCollector(package)
        collector.visit(tree)
        for line, level, module in collector.escapes:
            self.report(
                path,
                line,
                f"relative import {'.' * level}{module} goes above the top-level package "
                f"{row.import_name!r}",
            )
        for site in collector.sites:
            message = self.judge(dist, row, declared, site)
            if message:
                self.report(path, site.line, message)
        return tree

    def judge(self, dist: str, row: Row, declared: set[str], site: ImportSite) -> str | None:
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
            return (
                f"{own} imports {site.module} but declares neither {dist_of} nor {row.via[dist_of]}"
            )
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
                f"its row allows {_allowed(row)}"
            )
        return (
            f"{own} imports {site.module}, a third-party module it does not declare "
            f"(its row allows {_allowed(row)})"
        )


class _ImportCollector(ast.NodeVisitor):
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


def _requirement_name(text: str) -> str | None:
    match = _REQ_NAME.match(text)
    if match is None:
        return None
    name, rest = match.groups()
    extras = _REQ_EXTRAS.match(rest)
    if extras is not None:
        if not all(
            re.fullmatch(r"\s*[A-Za-z0-9][A-Za-z0-9._-]*\s*", e) for e in extras[1].split(",")
        ):
            return None
        rest = extras[2]
    return name if _REQ_REST.match(rest.strip()) else None


def _find_line(text: str, value: str, claimed: set[int], *, key: bool = False) -> int:
    """The 1-based line of the quoted string ``value`` (or of the key ``value``), else 1."""
    if key:
        pattern = re.compile(rf"^\s*{re.escape(value)}\s*=")
    else:
        pattern = re.compile(rf"(\"{re.escape(value)}\"|'{re.escape(value)}')")
    for number, line in enumerate(text.splitlines(), start=1):
        if number not in claimed and pattern.search(line):
            claimed.add(number)
            return number
    return 1


def _allowed(row: Row) -> str:
    names = sorted(row.deps) + [f"{d} (extra)" for d in sorted(row.extra_deps)]
    names += [f"{d} (via {via})" for d, via in sorted(row.via.items())]
    return ", ".join(names) + " and the standard library"


def main(argv: list[str] | None = None) -> int:
    """Run the check; print violations; return the exit status."""
    parser = argparse.ArgumentParser(description="Check the dependency levels of DESIGN §1.")
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(__file__).resolve().parent.parent,
        help="the repository root (default: the parent of scripts/)",
    )
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if not root.is_dir():
        print(f"check_levels: --root {args.root} is not a directory", file=sys.stderr)
        return 2
    checker = Checker(root)
    checker.run()
    for violation in sorted(set(checker.violations)):
        print(violation)
    if checker.violations:
        count = len(set(checker.violations))
        print(f"check_levels: {count} violation(s) of the level table (DESIGN §1)", file=sys.stderr)
        return 1
    print(f"check_levels: OK ({len(TABLE)} packages, {checker.modules_checked} modules)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
