"""The dependency-level check behind ``scripts/check_levels.py`` (DESIGN §1). Standard library only.

* ``_table``: the level table (which distributions and Loom packages each package may use);
* ``_requirements``: a package's declared requirements (pyproject.toml) against its row;
* ``_imports``: every import of a module, and whether the row allows it;
* ``_checker``: the walk over ``packages/`` that applies both, plus ``import_cycles.py``.
"""

from __future__ import annotations

from ._checker import Checker, Violation
from ._table import TABLE, Row

__all__ = ["TABLE", "Checker", "Row", "Violation"]
