"""Import cycles between the modules of one package (a part of ``check_levels.py``).

Standard library only. An edge ``a -> b`` is any import of module ``b`` (of the same top-level
package) in ``a``: at module level, in a class body or inside a function (a function-level
import is a runtime dependency too; making an import lazy hides a cycle, it does not remove
it), including ``importlib.import_module("literal")``. Not an edge:

* an import under ``if TYPE_CHECKING:``: it never runs, and a dependency of annotations alone
  creates no cycle at run time (type checkers resolve those themselves);
* the implicit import of a parent package (importing ``pkg.a`` first imports ``pkg``): a
  package's ``__init__`` importing its own modules is how packages are built;
* a module importing itself (it finds itself in ``sys.modules``).

A cycle is reported once, at the first of its imports, with the file and line of every import
in it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Edge", "find_cycles", "module_name"]


@dataclass(frozen=True)
class Edge:
    """One import of a module of the same package (not under ``TYPE_CHECKING``)."""

    source: str
    target: str
    path: Path
    line: int


def module_name(path: Path, src: Path) -> str:
    """The dotted module name of ``path`` under ``src`` (a package is its ``__init__``)."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def find_cycles(modules: dict[str, tuple[Path, ast.Module]]) -> list[list[Edge]]:
    """Every import cycle among ``modules`` (dotted name -> (path, parsed tree)), one each."""
    graph: dict[str, list[Edge]] = {name: [] for name in modules}
    for name, (path, tree) in modules.items():
        collector = _RuntimeImports(name, path, set(modules), path.stem == "__init__")
        collector.visit(tree)
        graph[name] = collector.edges
    cycles = []
    for component in _strongly_connected(graph):
        start = min(component)
        cycle = _cycle_through(start, component, graph)
        if cycle:
            cycles.append(cycle)
    return sorted(cycles, key=lambda c: (str(c[0].path), c[0].line))


class _RuntimeImports(ast.NodeVisitor):
    def __init__(self, name: str, path: Path, known: set[str], is_package: bool) -> None:
        self.name = name
        self.path = path
        self.known = known
        parts = name.split(".")
        self.package = parts if is_package else parts[:-1]
        self.edges: list[Edge] = []

    def _edge(self, target: str | None, line: int) -> None:
        if target is not None and target != self.name:
            self.edges.append(Edge(self.name, target, self.path, line))

    def _deepest_known(self, dotted: str) -> str | None:
        parts = dotted.split(".")
        for end in range(len(parts), 0, -1):
            candidate = ".".join(parts[:end])
            if candidate in self.known:
                return candidate
        return None

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        first = node.args[0] if node.args else None
        if (
            name in ("import_module", "__import__")
            and isinstance(first, ast.Constant)
            and isinstance(first.value, str)
            and not first.value.startswith(".")
        ):
            self._edge(self._deepest_known(first.value), node.lineno)
        self.generic_visit(node)

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        type_checking = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        )
        if not type_checking:
            self.generic_visit(node)
            return
        for stmt in node.orelse:  # the else branch runs
            self.visit(stmt)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._edge(self._deepest_known(alias.name), node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            if node.level - 1 > len(self.package):
                return  # climbs above the top level: check_levels reports it
            base_parts = self.package[: len(self.package) - (node.level - 1)]
            if node.module:
                base_parts = [*base_parts, *node.module.split(".")]
            base = ".".join(base_parts)
        else:
            base = node.module or ""
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            if submodule in self.known:
                self._edge(submodule, node.lineno)
            else:
                self._edge(self._deepest_known(base) if base else None, node.lineno)


def _strongly_connected(graph: dict[str, list[Edge]]) -> list[set[str]]:
    """Tarjan's components that hold a cycle (more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for edge in graph[node]:
            if edge.target not in index:
                visit(edge.target)
                low[node] = min(low[node], low[edge.target])
            elif edge.target in on_stack:
                low[node] = min(low[node], index[edge.target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _cycle_through(start: str, component: set[str], graph: dict[str, list[Edge]]) -> list[Edge]:
    """The shortest cycle from ``start`` back to itself within ``component`` (breadth first)."""
    came_by: dict[str, Edge] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for edge in sorted(graph[node], key=lambda e: (e.line, e.target)):
                if edge.target not in component:
                    continue
                if edge.target == start:
                    path = [edge]
                    while path[0].source != start:
                        path.insert(0, came_by[path[0].source])
                    return path
                if edge.target not in came_by:
                    came_by[edge.target] = edge
                    following.append(edge.target)
        frontier = following
    return []
