"""Builds the 0.1-schema fixtures of test_migration.py with the REAL 0.1 code (not a test).

The 0.1 sources are those of commit a77e7a0; run this script with them first on the path::

    mkdir -p /tmp/loom01 && git archive a77e7a0 packages | tar -x -C /tmp/loom01
    PYTHONPATH=/tmp/loom01/packages/loom-store/src:/tmp/loom01/packages/loom-protocol/src \\
        uv run --frozen python tests/store/data/make_store_v01.py [POSTGRES_URL]

It writes ``store_v01.sqlite`` next to itself and, given a PostgreSQL URL, ``store_v01.sql``:
the statements the 0.1 code sent to create its tables, then one INSERT per row it wrote (read
back from a scratch schema, dropped afterwards). Both hold the same rows: two task names run
with two configurations each (the second overwriting some rows of the first, as 0.1 did),
successes and failures, and a task name with rows but no registered run.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url

import loom_store
from loom_store import ResultRow, ResultStore

HERE = Path(__file__).parent


def fp(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


FP_A, FP_B, FP_C, FP_D, FP_E = (fp(f"config {x}") for x in "ABCDE")


def row(task: str, key: str, config: str, status: str, **fields: Any) -> ResultRow:
    task_id = hashlib.sha256(f"{task}/{key}".encode()).hexdigest()
    fields.setdefault("input", json.dumps({"text": key}))
    fields.setdefault("attempts", 1)
    if status == "succeeded":
        fields.setdefault("data", json.dumps({"text": key, "config": config[:8]}))
        fields.setdefault("raw_output", fields["data"])
        fields.setdefault("usage", '{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}')
        fields.setdefault("latency_ms", 12.25)
        fields.setdefault("model", "gpt-4o-mini")
    else:
        fields.setdefault("error", json.dumps({"code": "json_invalid", "message": "no JSON"}))
    return ResultRow(task, task_id, config, status, **fields)  # type: ignore[arg-type]


def fill(store: ResultStore) -> None:
    """The same story on every database; pauses keep the timestamps apart."""
    store.register_run("invoices", FP_A, {"model": "gpt-4o-mini", "api_key": "sk-SECRET"})
    store.put_many(
        [row("invoices", f"inv-{i}", FP_A, "succeeded") for i in range(1, 5)]
        + [row("invoices", f"inv-{i}", FP_A, "failed") for i in (5, 6)]
    )
    time.sleep(0.05)
    store.register_run("invoices", FP_B, {"model": "gpt-4o", "temperature": 0.2})
    store.put_many(
        [
            row("invoices", "inv-5", FP_B, "succeeded", model="gpt-4o"),
            row(
                "invoices",
                "inv-6",
                FP_B,
                "failed",
                error=json.dumps({"code": "provider_timeout", "message": "slow"}),
                attempts=3,
            ),
            row("invoices", "inv-7", FP_B, "succeeded", reasoning="<think>é 漢字 🚀</think>"),
            row("invoices", "inv-8", FP_B, "failed", error=None),
        ]
    )
    time.sleep(0.05)
    store.register_run("people", FP_C, {"model": "claude", "prompt_template": "{{ name }}"})
    store.put_many(
        [
            row("people", "ada", FP_C, "succeeded", raw_output="```json\n{}\n```; it's done"),
            row("people", "bob", FP_C, "succeeded", latency_ms=None, usage=None, model=None),
            row("people", "cy", FP_C, "failed"),
        ]
    )
    time.sleep(0.05)
    store.register_run("people", FP_A, {"model": "gpt-4o-mini"})
    store.put_many([row("people", "dee", FP_A, "succeeded", data='{"text": "dee"}')])
    # Rows without a registered run (written through put_many alone).
    store.put_many([row("orphan", "o-1", FP_D, "succeeded"), row("orphan", "o-2", FP_D, "failed")])
    time.sleep(0.05)
    store.put_many([row("orphan", "o-3", FP_E, "succeeded")])


def literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"


def build_postgres(raw_url: str) -> None:
    base = make_url(raw_url)
    schema = f"loom_v01_{secrets.token_hex(4)}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = base.update_query_dict({"options": f"-csearch_path={schema}"})
    ddl: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("CREATE"):
            ddl.append(statement.strip())

    try:
        from sqlalchemy.engine import Engine

        event.listen(Engine, "before_cursor_execute", capture)
        try:
            with ResultStore(url.render_as_string(hide_password=False)) as store:
                fill(store)
        finally:
            event.remove(Engine, "before_cursor_execute", capture)
        lines = [
            "-- loom-store 0.1 schema (commit a77e7a0) and rows it wrote, for test_migration.py.",
            "-- Generated by make_store_v01.py: the CREATE statements the 0.1 code sent, then the",
            "-- rows read back. Unqualified names: load it with a scratch schema as search_path.",
        ]
        lines += [f"{statement};" for statement in ddl]
        engine = create_engine(url)
        with engine.connect() as conn:
            for table, order in (
                ("loom_meta", "key"),
                ("loom_runs", "task_name, config_fp"),
                ("loom_results", "task_name, task_id"),
            ):
                result = conn.execute(text(f"SELECT * FROM {table} ORDER BY {order}"))
                columns = ", ".join(result.keys())
                for values in result:
                    shown = ", ".join(literal(v) for v in values)
                    lines.append(f"INSERT INTO {table} ({columns}) VALUES ({shown});")
        engine.dispose()
        (HERE / "store_v01.sql").write_text("\n".join(lines) + "\n", encoding="utf-8")
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def main() -> None:
    if loom_store.SCHEMA_VERSION != 1:
        raise SystemExit(f"run with the 0.1 sources first on PYTHONPATH ({loom_store.__file__})")
    path = HERE / "store_v01.sqlite"
    for leftover in HERE.glob("store_v01.sqlite*"):
        leftover.unlink()
    with ResultStore(path) as store:
        fill(store)
    # One self-contained file: the WAL folded back in, the file made as small as it can be.
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("VACUUM")
    conn.close()
    if len(sys.argv) > 1:
        build_postgres(sys.argv[1])


if __name__ == "__main__":
    main()
