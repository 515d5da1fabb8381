"""Every package's ``__all__``: sorted, unique, importable, and complete."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import re
from types import ModuleType

import pytest

PACKAGES = {
    "loom-protocol": "loom_protocol",
    "loom-backends": "loom_backends",
    "loom-store": "loom_store",
    "loom-core": "loom_core",
    "loom-ray": "loom_ray",
}


def isort_key(name: str) -> tuple[int, list[tuple[int, int | str]]]:
    """The order ruff's RUF022 keeps ``__all__`` in ("isort-style").

    SCREAMING_SNAKE_CASE names first, then CamelCase, then everything else; within a group a
    natural sort (digit runs compare as numbers).
    """
    if len(name) > 1 and name.isupper():
        group = 0
    elif name[:1].isupper():
        group = 1
    else:
        group = 2
    chunks = [
        (0, int(chunk)) if chunk.isdigit() else (1, chunk)
        for chunk in re.split(r"(\d+)", name)
        if chunk
    ]
    return group, chunks


def test_isort_key_matches_ruff_on_known_orders() -> None:
    # Orders produced by `ruff check --select RUF022 --fix` on these names.
    expected = [
        "ALPHA",
        "PROTOCOL_VERSION",
        "X1",
        "A_b",
        "B",
        "Backend",
        "HTTPError",
        "Zeta",
        "_x",
        "a2",
        "a10",
        "canonical_json",
    ]
    shuffled = expected[1::2] + expected[::2]
    assert shuffled != expected
    assert sorted(shuffled, key=isort_key) == expected


@pytest.fixture(params=sorted(PACKAGES.values()))
def package(request: pytest.FixtureRequest) -> ModuleType:
    return importlib.import_module(request.param)


def exported(package: ModuleType) -> list[str]:
    names = getattr(package, "__all__", None)
    assert isinstance(names, list), f"{package.__name__}.__all__ must be a list"
    assert all(isinstance(name, str) for name in names)
    return names


def test_all_is_sorted(package: ModuleType) -> None:
    names = exported(package)
    assert names == sorted(names, key=isort_key), (
        f"{package.__name__}.__all__ is not sorted the way ruff (RUF022) sorts it"
    )


def test_all_has_no_duplicates(package: ModuleType) -> None:
    names = exported(package)
    duplicates = sorted({name for name in names if names.count(name) > 1})
    assert not duplicates, f"{package.__name__}.__all__ repeats {duplicates}"


def test_every_name_in_all_imports(package: ModuleType) -> None:
    missing = [name for name in exported(package) if not hasattr(package, name)]
    assert not missing, f"{package.__name__}.__all__ names {missing}, which do not exist"
    namespace: dict[str, object] = {}
    exec(f"from {package.__name__} import *", namespace)
    namespace.pop("__builtins__", None)
    assert sorted(namespace) == sorted(set(exported(package)))


def test_every_public_class_and_function_is_in_all(package: ModuleType) -> None:
    prefix = package.__name__
    public = {
        name
        for name, value in vars(package).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and (value.__module__ == prefix or value.__module__.startswith(prefix + "."))
    }
    missing = sorted(public - set(exported(package)))
    assert not missing, f"{prefix} defines public {missing} but leaves them out of __all__"


@pytest.mark.parametrize(("dist", "import_name"), sorted(PACKAGES.items()))
def test_version_matches_the_distribution(dist: str, import_name: str) -> None:
    package = importlib.import_module(import_name)
    assert package.__version__ == importlib.metadata.version(dist)
