"""The level table of DESIGN §1: which package may declare and import what."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "IMPORT_NAMES",
    "LOOM_BY_IMPORT",
    "MODULE_TO_DIST",
    "TABLE",
    "Row",
    "allowed_text",
    "normalise",
]


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
    # Level 3: the distributed front ends. loom-core and what it brings, plus ray[data]; the
    # batches Ray hands a map_batches stage are numpy arrays (ray[data] pins numpy).
    "loom-ray": Row(
        "loom_ray",
        3,
        frozenset({"loom-protocol", "loom-backends", "loom-store", "loom-core", "ray"}),
        via={**_PYDANTIC_VIA_PROTOCOL, "numpy": "ray"},
    ),
}

# Top-level import names of every distribution the table mentions (plus the ones we know to be
# tempting but forbidden, so the message can name the distribution).
IMPORT_NAMES: dict[str, tuple[str, ...]] = {
    "aiohttp": ("aiohttp",),
    "httpx": ("httpx",),
    "httpx-aiohttp": ("httpx_aiohttp",),
    "jinja2": ("jinja2",),
    "numpy": ("numpy",),
    "json-repair": ("json_repair",),
    "pandas": ("pandas",),
    "psycopg": ("psycopg",),
    "pydantic": ("pydantic",),
    "pydantic-core": ("pydantic_core",),
    "pyarrow": ("pyarrow",),
    "pytest": ("pytest", "_pytest"),
    "ray": ("ray",),
    "sqlalchemy": ("sqlalchemy",),
    "tqdm": ("tqdm",),
    **{dist: (row.import_name,) for dist, row in TABLE.items()},
}
MODULE_TO_DIST: dict[str, str] = {
    module: dist for dist, modules in IMPORT_NAMES.items() for module in modules
}
LOOM_BY_IMPORT: dict[str, str] = {row.import_name: dist for dist, row in TABLE.items()}


def normalise(name: str) -> str:
    """PEP 503 normalisation of a distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def allowed_text(row: Row) -> str:
    """What ``row`` allows, for a message: its distributions, extras, vias and the stdlib."""
    names = sorted(row.deps) + [f"{d} (extra)" for d in sorted(row.extra_deps)]
    names += [f"{d} (via {via})" for d, via in sorted(row.via.items())]
    return ", ".join(names) + " and the standard library"
