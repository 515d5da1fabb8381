"""``loom`` never destroys a user's file: no output over an input, outputs replaced atomically."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loom_backends.testing import FakeLLMServer
from loom_core._cli.files import AtomicOutput, check_not_an_input, store_file
from loom_store import ResultStore

from .conftest import CliRunner, cli_env, read_jsonl, sensible_answer, write_jsonl

TEMPLATE = "Summarise: {{ text }}"
PEOPLE = ["Ann Lee knows Python", "Bob Stone does design", "Cy Park writes Rust"]


def _run_args(srv: FakeLLMServer, input_name: str, *extra: str) -> list[str]:
    return ["run", input_name, "--model", "fake-model", "--base-url", srv.base_url, *extra]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".loom-tmp"))


# -- an output is never one of the inputs ---------------------------------------------------


@pytest.mark.parametrize("spelling", ["in.jsonl", "./in.jsonl", "ABS", "link.jsonl", "hard.jsonl"])
def test_run_refuses_to_write_over_its_input(
    server: FakeLLMServer, run_cli: CliRunner, tmp_path: Path, spelling: str
) -> None:
    original = write_jsonl(tmp_path / "in.jsonl", PEOPLE).read_bytes()
    (tmp_path / "link.jsonl").symlink_to("in.jsonl")
    os.link(tmp_path / "in.jsonl", tmp_path / "hard.jsonl")
    out = str(tmp_path / "in.jsonl") if spelling == "ABS" else spelling

    done = run_cli(*_run_args(server, "in.jsonl", "-t", TEMPLATE), "-o", out)

    assert done.returncode == 2, done.stderr
    assert f"the output {out!r} is the input 'in.jsonl'" in done.stderr
    assert (tmp_path / "in.jsonl").read_bytes() == original
    assert server.request_count == 0
    assert not (tmp_path / ".loom.db").exists()  # nothing was opened either
    assert _leftovers(tmp_path) == []


def test_run_refuses_to_write_over_a_csv_input(
    server: FakeLLMServer, run_cli: CliRunner, tmp_path: Path
) -> None:
    (tmp_path / "in.csv").write_text("text\nAnn\nBob\n", encoding="utf-8")
    done = run_cli(*_run_args(server, "in.csv", "-t", TEMPLATE), "-o", "./in.csv")
    assert done.returncode == 2
    assert "is the input 'in.csv'" in done.stderr
    assert (tmp_path / "in.csv").read_text(encoding="utf-8") == "text\nAnn\nBob\n"


@pytest.mark.parametrize("db", ["store.jsonl", "sqlite:///store.jsonl"])
def test_run_refuses_to_write_over_the_store(
    server: FakeLLMServer, run_cli: CliRunner, tmp_path: Path, db: str
) -> None:
    write_jsonl(tmp_path / "in.jsonl", PEOPLE)
    first = run_cli(*_run_args(server, "in.jsonl", "-t", TEMPLATE, "--db", db))
    assert first.returncode == 0, first.stderr

    done = run_cli(*_run_args(server, "in.jsonl", "-t", TEMPLATE, "--db", db), "-o", "store.jsonl")

    assert done.returncode == 2
    assert "is the store (--db)" in done.stderr
    with ResultStore(tmp_path / "store.jsonl") as store:
        assert store.stats("in").succeeded == 3


def test_run_refuses_to_write_over_the_template_file_or_the_schema_module(
    server: FakeLLMServer, run_cli: CliRunner, tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "in.jsonl", PEOPLE)
    (tmp_path / "prompt.jsonl").write_text(TEMPLATE, encoding="utf-8")
    done = run_cli(*_run_args(server, "in.jsonl", "-T", "prompt.jsonl"), "-o", "prompt.jsonl")
    assert done.returncode == 2
    assert "is the --template-file 'prompt.jsonl'" in done.stderr
    assert (tmp_path / "prompt.jsonl").read_text(encoding="utf-8") == TEMPLATE

    module = "from pydantic import BaseModel\n\nclass Out(BaseModel):\n    text: str\n"
    (tmp_path / "schema_mod.py").write_text(module, encoding="utf-8")
    (tmp_path / "out.jsonl").symlink_to("schema_mod.py")  # a hostile or careless link
    done = run_cli(
        *_run_args(server, "in.jsonl", "-t", TEMPLATE, "--schema", "schema_mod:Out"),
        "-o",
        "out.jsonl",
    )
    assert done.returncode == 2
    assert "is the --schema module" in done.stderr
    assert (tmp_path / "schema_mod.py").read_text(encoding="utf-8") == module
    assert server.request_count == 0


def test_the_readme_sequence_no_longer_overwrites_the_input(
    server: FakeLLMServer, run_cli: CliRunner, tmp_path: Path
) -> None:
    original = write_jsonl(tmp_path / "people.jsonl", PEOPLE).read_bytes()
    run = run_cli(*_run_args(server, "people.jsonl", "-t", TEMPLATE), "-o", "profiles.jsonl")
    assert run.returncode == 0, run.stderr

    export = run_cli("export", "people", "-o", "people.jsonl")

    assert export.returncode == 2
    assert "the output 'people.jsonl' exists already; pass --force" in export.stderr
    assert (tmp_path / "people.jsonl").read_bytes() == original
    # --force replaces a file that is no input of the export, but never the --input itself.
    forced = run_cli("export", "people", "-o", "people.jsonl", "--input", "people.jsonl", "-f")
    assert forced.returncode == 2
    assert "is the --input file 'people.jsonl'" in forced.stderr
    assert (tmp_path / "people.jsonl").read_bytes() == original
    assert run_cli("export", "people", "-o", "profiles.jsonl", "--force").returncode == 0
    assert len(read_jsonl(tmp_path / "profiles.jsonl")) == 3


def test_export_refuses_the_store_as_output(run_cli: CliRunner, tmp_path: Path) -> None:
    ResultStore(tmp_path / "s.jsonl").close()
    done = run_cli("export", "x", "-o", "s.jsonl", "--db", "s.jsonl", "--force")
    assert done.returncode == 2
    assert "is the store (--db)" in done.stderr
    ResultStore(tmp_path / "s.jsonl").close()  # still a store


# -- an output is replaced only once complete -------------------------------------------------


def _start(tmp_path: Path, srv: FakeLLMServer, n: int) -> tuple[subprocess.Popen[str], Path]:
    write_jsonl(tmp_path / "batch.jsonl", [f"Person{i:02d} knows SQL" for i in range(n)])
    out = tmp_path / "out.jsonl"
    child = subprocess.Popen(
        [sys.executable, "-m", "loom_core._cli",
         *_run_args(srv, "batch.jsonl", "-t", TEMPLATE, "-w", "2", "-o", "out.jsonl")],
        cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, encoding="utf-8",
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while srv.request_count < 6:
        if time.monotonic() > deadline or child.poll() is not None:
            child.kill()
            pytest.fail(f"the child did not get going: {child.communicate()}")
        time.sleep(0.02)
    return child, out


def test_ctrl_c_mid_run_keeps_the_earlier_output_and_leaves_no_temp_file(tmp_path: Path) -> None:
    earlier = '{"earlier": "output"}\n'
    (tmp_path / "out.jsonl").write_text(earlier, encoding="utf-8")
    with FakeLLMServer(sensible_answer, latency=0.2) as srv:
        child, out = _start(tmp_path, srv, 40)
        try:
            assert _leftovers(tmp_path)  # the run writes its temporary file meanwhile
            child.send_signal(signal.SIGINT)
            _, stderr = child.communicate(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()
    assert child.returncode == 130, stderr
    assert "out.jsonl was not written (the earlier out.jsonl is left as it was)" in stderr
    assert out.read_text(encoding="utf-8") == earlier
    assert _leftovers(tmp_path) == []


def test_kill_9_mid_run_keeps_the_earlier_output_and_the_next_run_cleans_up(
    tmp_path: Path,
) -> None:
    earlier = '{"earlier": "output"}\n'
    (tmp_path / "out.jsonl").write_text(earlier, encoding="utf-8")
    with FakeLLMServer(sensible_answer, latency=0.2) as srv:
        child, out = _start(tmp_path, srv, 40)
        child.kill()
        child.communicate(timeout=60)
        assert out.read_text(encoding="utf-8") == earlier
        stale = _leftovers(tmp_path)
        assert len(stale) == 1 and stale[0].startswith(f".out.jsonl.{child.pid}.")

        # The same command again completes, replaces the output and removes the stale file.
        again = subprocess.run(
            [sys.executable, "-m", "loom_core._cli",
             *_run_args(srv, "batch.jsonl", "-t", TEMPLATE, "-o", "out.jsonl")],
            cwd=tmp_path, env=cli_env(), capture_output=True, text=True, encoding="utf-8",
            timeout=120, check=False,
        )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert [r["index"] for r in read_jsonl(out)] == list(range(40))
    assert _leftovers(tmp_path) == []


def test_a_complete_run_replaces_the_output_keeping_its_permissions(
    server: FakeLLMServer, run_cli: CliRunner, tmp_path: Path
) -> None:
    write_jsonl(tmp_path / "in.jsonl", PEOPLE)
    (tmp_path / "out.csv").write_text("old\n", encoding="utf-8")
    os.chmod(tmp_path / "out.csv", 0o640)
    (tmp_path / "real.jsonl").write_text("old\n", encoding="utf-8")
    (tmp_path / "link.jsonl").symlink_to("real.jsonl")

    assert run_cli(*_run_args(server, "in.jsonl", "-t", TEMPLATE), "-o", "out.csv").returncode == 0
    assert (
        run_cli(*_run_args(server, "in.jsonl", "-t", TEMPLATE), "-o", "new.jsonl").returncode == 0
    )
    assert (
        run_cli(*_run_args(server, "in.jsonl", "-t", TEMPLATE), "-o", "link.jsonl").returncode == 0
    )

    assert stat.S_IMODE((tmp_path / "out.csv").stat().st_mode) == 0o640
    assert (tmp_path / "out.csv").read_text(encoding="utf-8").startswith("index,task_id")
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "new.jsonl").stat().st_mode) == 0o666 & ~umask
    # A link is followed: the file it points to gets the results, the link stays a link.
    assert (tmp_path / "link.jsonl").is_symlink()
    assert len(read_jsonl(tmp_path / "real.jsonl")) == 3
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["folder", "device"])
def test_an_output_that_is_no_regular_file_is_refused_before_any_request(
    server: FakeLLMServer, run_cli: CliRunner, tmp_path: Path, kind: str
) -> None:
    write_jsonl(tmp_path / "in.jsonl", PEOPLE)
    if kind == "folder":
        (tmp_path / "out.jsonl").mkdir()
    else:
        (tmp_path / "out.jsonl").symlink_to(os.devnull)

    done = run_cli(*_run_args(server, "in.jsonl", "-t", TEMPLATE), "-o", "out.jsonl")

    assert done.returncode == 2, done.stderr
    assert "cannot write output 'out.jsonl': 'out.jsonl' is not a regular file" in done.stderr
    assert server.request_count == 0
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    assert _leftovers(tmp_path) == [] and _leftovers(Path(os.devnull).parent) == []


# -- the pieces, in process --------------------------------------------------------------------


def test_atomic_output_discard_and_exception_keep_the_target(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text("earlier\n", encoding="utf-8")

    out = AtomicOutput(str(target))
    out.file.write("half a line")
    out.discard()
    assert target.read_text(encoding="utf-8") == "earlier\n"
    assert _leftovers(tmp_path) == []

    def write_then_fail() -> None:
        out = AtomicOutput(str(target))
        try:
            out.file.write(json.dumps({"a": 1}) + "\n")
            raise RuntimeError("boom")
        finally:
            out.discard()

    with pytest.raises(RuntimeError):
        write_then_fail()
    assert target.read_text(encoding="utf-8") == "earlier\n"

    out = AtomicOutput(str(target))
    out.file.write("new\n")
    out.commit()
    out.discard()  # after a commit: nothing
    assert target.read_text(encoding="utf-8") == "new\n"
    assert _leftovers(tmp_path) == []
    with pytest.raises(FileNotFoundError, match="does not exist"):
        AtomicOutput(str(tmp_path / "nodir" / "x.jsonl"))


def test_stale_temp_files_of_live_processes_are_kept(tmp_path: Path) -> None:
    mine = tmp_path / f".out.jsonl.{os.getpid()}.abc.loom-tmp"
    dead = tmp_path / ".out.jsonl.999999999.abc.loom-tmp"
    other = tmp_path / ".other.jsonl.999999999.abc.loom-tmp"
    # The temporary file of another target whose name starts like this one's.
    longer = tmp_path / ".out.jsonl.5.x.999999999.abc.loom-tmp"
    for path in (mine, dead, other, longer):
        path.write_text("x")
    AtomicOutput(str(tmp_path / "out.jsonl")).discard()
    assert mine.exists() and other.exists() and longer.exists() and not dead.exists()


def test_store_file_and_check_not_an_input(tmp_path: Path) -> None:
    assert store_file(".loom.db") == ".loom.db"
    assert store_file("sqlite:///rel/x.db?timeout=5") == "rel/x.db"
    assert store_file("sqlite:////abs/x.db") == "/abs/x.db"
    assert store_file("sqlite://") is None
    assert store_file("postgresql+psycopg://u@h/db") is None
    (tmp_path / "a.jsonl").write_text("")
    inputs = [("the input", str(tmp_path / "a.jsonl")), ("nothing", None), ("stdin", "-")]
    assert check_not_an_input("-", inputs) is None
    assert check_not_an_input(str(tmp_path / "new.jsonl"), inputs) is None
    assert check_not_an_input(str(tmp_path / "missing.jsonl"), [("x", "nowhere.jsonl")]) is None
    problem = check_not_an_input(str(tmp_path / "." / "a.jsonl"), inputs)
    assert problem is not None and "is the input" in problem
