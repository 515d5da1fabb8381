#!/usr/bin/env python3
"""The dependency-level check (DESIGN §1). Standard library only, so it runs before `uv sync`.

For every package under ``packages/`` it reads the declared requirements
(``[project].dependencies`` and every ``[project.optional-dependencies]`` list) and every import
in ``src/`` (top-level, inside functions and classes, under ``if TYPE_CHECKING:``, in
``try``/``except``, and ``importlib.import_module("literal")``), and prints one
``path:line: message`` per violation of the level table (``levels/_table.py``):

* a declared dependency that the package's row does not allow (a higher level, a same-level
  sibling, a third-party distribution not in the row, or an extra-only one outside an extra);
* an import of a higher-level Loom package or of a same-level sibling;
* an import of a third-party module the package does not declare (or may not use at all);
* an import cycle between modules of one package (see ``import_cycles.py`` for what counts);
* a package directory that the table does not know, a missing or unreadable pyproject.toml,
  a missing ``src/<import_name>/``, a module that does not parse.

Exit status: 0 when the tree is clean, 1 on any violation, 2 on bad command-line usage.

The table and the checks live in the ``levels`` package beside this script.

Usage::

    python scripts/check_levels.py [--root PATH]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from levels import TABLE, Checker


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
