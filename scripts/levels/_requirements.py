"""The declared requirements of a package's pyproject.toml, checked against its row."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ._table import TABLE, Row, allowed_text, normalise

__all__ = ["Report", "Requirement", "check_requirement", "read_requirements"]

#: Where a violation goes: ``report(path, line, message)``.
Report = Callable[[Path, int, str], None]

# PEP 508: a name, then optional extras, a version specifier or URL, and markers.
_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(.*)$", re.DOTALL)
_REQ_EXTRAS = re.compile(r"^\[([^\]]*)\]\s*(.*)$", re.DOTALL)
_REQ_REST = re.compile(r"^(?:@\s*\S.*|[<>=!~(].*|;.*|)$", re.DOTALL)
_TOML_LINE = re.compile(r"line (\d+)")


@dataclass(frozen=True)
class Requirement:
    """A declared requirement: its normalised name and where it was declared."""

    name: str
    text: str
    extra: str | None  # None: [project].dependencies
    line: int


def read_requirements(pkg_dir: Path, dist: str, row: Row, report: Report) -> set[str] | None:
    """Check the declarations; return the declared names, or None if unreadable."""
    pyproject = pkg_dir / "pyproject.toml"
    if not pyproject.is_file():
        report(pyproject, 1, f"{dist} has no pyproject.toml")
        return None
    text = pyproject.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = _TOML_LINE.search(str(exc))
        report(pyproject, int(match.group(1)) if match else 1, f"invalid TOML: {exc}")
        return None
    project = data.get("project")
    if not isinstance(project, dict):
        report(pyproject, 1, "no [project] table")
        return None
    name = project.get("name")
    if not isinstance(name, str) or normalise(name) != dist:
        report(
            pyproject,
            _find_line(text, "name", set(), key=True),
            f"[project].name is {name!r}, but the directory packages/{pkg_dir.name} says {dist!r}",
        )

    lists: list[tuple[str | None, object]] = [(None, project.get("dependencies", []))]
    optional = project.get("optional-dependencies", {})
    if isinstance(optional, dict):
        lists.extend(optional.items())
    else:
        report(pyproject, 1, "[project.optional-dependencies] must be a table")

    claimed: set[int] = set()
    requirements: list[Requirement] = []
    for extra, items in lists:
        where = "[project].dependencies" if extra is None else f"extra {extra!r}"
        if not isinstance(items, list):
            report(pyproject, 1, f"{where} must be a list of requirement strings")
            continue
        for item in items:
            line = _find_line(text, item, claimed) if isinstance(item, str) else 1
            if not isinstance(item, str) or (req_name := _requirement_name(item)) is None:
                report(pyproject, line, f"{where}: {item!r} is not a PEP 508 requirement")
                continue
            requirements.append(Requirement(normalise(req_name), item, extra, line))

    for req in requirements:
        check_requirement(pyproject, dist, row, req, report)
    return {req.name for req in requirements}


def check_requirement(
    pyproject: Path, dist: str, row: Row, req: Requirement, report: Report
) -> None:
    """Report ``req`` when the row of ``dist`` does not allow it where it is declared."""
    own = f"{dist} (level {row.level})"
    if req.name == dist:
        if req.extra is None:
            report(pyproject, req.line, f"{dist} must not depend on itself")
        return  # a self-reference inside an extra ("pkg[a,b]") is the usual way to combine
    target = TABLE.get(req.name)
    if target is not None:
        if target.level > row.level:
            report(
                pyproject,
                req.line,
                f"{own} must not depend on {req.name} (level {target.level}, higher)",
            )
        elif target.level == row.level:
            report(
                pyproject,
                req.line,
                f"{own} must not depend on {req.name} (level {target.level} sibling)",
            )
        elif req.name not in row.deps:
            report(pyproject, req.line, f"{own} may not depend on {req.name}")
        return
    if req.name in row.deps or req.name in row.via:
        return
    if req.name in row.extra_deps:
        wanted = row.extra_deps[req.name]
        if req.extra is None:
            extra = f"the optional extra {wanted!r}" if wanted else "an optional extra"
            report(
                pyproject,
                req.line,
                f"{own} may declare {req.name} only in {extra}, not in [project].dependencies",
            )
        elif wanted is not None and req.extra != wanted:
            report(
                pyproject,
                req.line,
                f"{own} may declare {req.name} only in the extra {wanted!r}, not in {req.extra!r}",
            )
        return
    report(
        pyproject,
        req.line,
        f"{own} must not depend on {req.name!r}: its row allows {allowed_text(row)}",
    )


def _requirement_name(text: str) -> str | None:
    """The distribution name of a PEP 508 requirement, or None when it is not one."""
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
