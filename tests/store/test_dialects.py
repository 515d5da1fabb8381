"""Dialects: a database is one module of loom_store.dialects, found by the URL's backend name."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import loom_store.dialects
from loom_protocol import LoomUsageError, StoreError
from loom_store import ResultRow, ResultStore

MakeRow = Callable[..., ResultRow]

# A "new database" that is SQLite underneath: the one module adding it, nothing else edited.
NEW_DIALECT = """
from loom_store.dialects.sqlite import SQLiteDialect


class PlantedDialect(SQLiteDialect):
    name = "plantedsql"

    def open(self, url, busy_timeout_s):
        self.opened = getattr(self, "opened", 0) + 1
        return super().open(url.set(drivername="sqlite+pysqlite"), busy_timeout_s)


DIALECT = PlantedDialect()
"""


@pytest.fixture
def dialects_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder searched for dialect modules after loom_store/dialects/ itself."""
    folder = tmp_path / "more_dialects"
    folder.mkdir()
    monkeypatch.setattr(
        loom_store.dialects, "__path__", [*loom_store.dialects.__path__, str(folder)]
    )
    yield folder
    for name in [m for m in sys.modules if m.startswith("loom_store.dialects.planted")]:
        del sys.modules[name]


def test_a_new_database_is_one_module(
    dialects_dir: Path, tmp_path: Path, make_row: MakeRow
) -> None:
    (dialects_dir / "plantedsql.py").write_text(NEW_DIALECT, encoding="utf-8")
    with ResultStore(f"plantedsql:///{tmp_path / 'planted.db'}") as store:
        assert store.dialect == "plantedsql"
        store.put_many([make_row("a"), make_row("b", status="failed")])
        assert store.get_many("task", ["a", "b"], "cfg-1").keys() == {"a"}
        assert [e[0] for e in json.loads(store.get_hits("task", ["b", "a"], "cfg-1"))] == [1]
        store.register_run("task", "cfg-1", {"model": "m"})
        assert store.latest_config("task") == "cfg-1"
    assert sys.modules["loom_store.dialects.plantedsql"].DIALECT.opened == 1


@pytest.mark.parametrize(
    ("module", "url"),
    [
        ("plantednodialect", "plantednodialect:///x.db"),  # a module without DIALECT
        (None, "plantedmissing:///x.db"),  # no module at all
    ],
)
def test_a_backend_without_a_dialect_is_a_usage_error(
    dialects_dir: Path, module: str | None, url: str
) -> None:
    if module is not None:
        (dialects_dir / f"{module}.py").write_text("DIALECT = object()\n", encoding="utf-8")
    with pytest.raises(LoomUsageError, match=r"is not supported; loom-store runs on SQLite"):
        ResultStore(url)


def test_a_dialect_module_that_fails_to_import_is_not_hidden(dialects_dir: Path) -> None:
    (dialects_dir / "plantedbroken.py").write_text("import no_such_module_here\n", "utf-8")
    with pytest.raises(
        StoreError, match=r"'plantedbroken' dialect .* cannot be loaded: .*no_such"
    ) as caught:
        ResultStore("plantedbroken:///x.db")
    assert caught.value.__cause__ is None
