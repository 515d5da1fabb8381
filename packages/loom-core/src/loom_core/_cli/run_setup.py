"""``loom run``'s checks before anything is sent: paths, schema, template, the loom itself."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from loom_core._batch_policy import DEFAULT_POLL_MAX, BatchPolicy
from loom_core._loom import TaskLoom
from loom_core._render import PromptTemplate, TemplateRenderError
from loom_core._task import prepare_input
from loom_protocol import LoomUsageError, StoreError

from .command import CliUsageError
from .cost import load_prices
from .files import check_not_an_input, store_file
from .inputs import InputSource

__all__ = [
    "build_loom",
    "check_paths",
    "check_template_fits",
    "default_task_name",
    "load_schema",
    "read_template",
    "resume_command",
]


def load_schema(spec: str) -> type[BaseModel]:
    """Import ``module:Model`` (the current directory first on ``sys.path``).

    Raises:
        CliUsageError: The spec is malformed, the module cannot be imported, the attribute is
            missing, or it is not a pydantic model class.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise CliUsageError(f"--schema must look like module:Model, got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise CliUsageError(
                f"--schema {spec!r}: no module named {module_name!r} "
                f"(looked in {cwd} and on sys.path)"
            ) from None
        raise CliUsageError(f"--schema {spec!r}: importing {module_name!r} failed: {exc}") from None
    except Exception as exc:
        raise CliUsageError(
            f"--schema {spec!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CliUsageError(f"--schema {spec!r}: module {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
        kind = f"the class {obj.__name__}" if isinstance(obj, type) else type(obj).__name__
        raise CliUsageError(f"--schema {spec!r} is {kind}, not a pydantic BaseModel subclass")
    return obj


def default_task_name(input_path: str) -> str:
    """The task name used when ``--task-name`` is not given: the input file's stem."""
    return "stdin" if input_path == "-" else Path(input_path).stem or "input"


def resume_command(argv: Sequence[str], task_name: str, named: bool) -> str:
    """The shell command that resumes this run (the same command, with the task name fixed)."""
    words = ["loom", *argv]
    if not named:
        words += ["--task-name", task_name]
    return shlex.join(words)


def read_template(args: argparse.Namespace) -> str:
    """The prompt template: ``--template``, or the text of ``--template-file``."""
    if args.template is not None:
        return str(args.template)
    try:
        return Path(args.template_file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CliUsageError(
            f"cannot read --template-file {args.template_file!r}: {reason}"
        ) from None


def _api_key(args: argparse.Namespace) -> str | None:
    if args.api_key_env is None:
        return None  # the backend reads OPENAI_API_KEY / ANTHROPIC_API_KEY itself
    key = os.environ.get(args.api_key_env)
    if not key:
        raise CliUsageError(
            f"the environment variable {args.api_key_env} (--api-key-env) is not set"
        )
    return key


def _base_url(given: list[str] | None) -> str | list[str] | None:
    """``--base-url``, given once (one URL) or repeated (several endpoints)."""
    if not given:
        return None
    return given[0] if len(given) == 1 else list(given)


def build_loom(args: argparse.Namespace, template: str, response_model: Any) -> TaskLoom[Any]:
    """The loom of ``loom run``'s arguments (misuse is a :class:`CliUsageError`)."""
    # Only the options given: the loom's own defaults stand for the others.
    llm_kwargs: dict[str, Any] = {
        name: getattr(args, name)
        for name in ("temperature", "max_tokens", "timeout")
        if getattr(args, name) is not None
    }
    # A dry run creates no store: a path that does not exist yet is opened only if used.
    dry_new = args.dry_run and "://" not in args.db and not os.path.exists(args.db)
    if getattr(args, "poll_interval", None) is not None:
        interval = args.poll_interval
        llm_kwargs["batch_policy"] = BatchPolicy(
            poll_interval=interval, poll_max=max(interval, DEFAULT_POLL_MAX)
        )
    try:
        return TaskLoom(
            args.model,
            template,
            system_prompt=args.system,
            response_model=response_model,
            max_retries=args.max_retries,
            store=None if dry_new else args.db,
            db_path=args.db,
            prices=load_prices(args.prices),
            base_url=_base_url(args.base_url),
            fallback_models=args.fallback_model,
            api_key=_api_key(args),
            rpm=args.rpm,
            tpm=args.tpm,
            adaptive=args.adaptive,
            image_root=args.image_root,
            lease_s=args.lease,
            **llm_kwargs,
        )
    except LoomUsageError as exc:
        raise CliUsageError(str(exc)) from None
    except StoreError as exc:
        # Before anything was sent: the command line names a store that cannot be opened.
        raise CliUsageError(f"the result store cannot be used: {exc}") from None


def _schema_file(spec: str | None) -> str | None:
    """The file of ``--schema``'s module, found without running it (``None`` if unknown)."""
    if spec is None:
        return None
    module_name = spec.partition(":")[0]
    if not module_name or "." in module_name:
        # A dotted name would import its parent packages to be found; the module itself is
        # still checked, once imported, by load_schema's caller.
        return None
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        found = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    return found.origin if found is not None and found.has_location else None


def check_paths(args: argparse.Namespace, out_path: str) -> None:
    """Refuse an output that is one of the run's inputs, before anything is read."""
    problem = check_not_an_input(
        out_path,
        [
            ("the input", args.input),
            ("the --template-file", args.template_file),
            ("the --schema module", _schema_file(args.schema)),
            ("the store (--db)", store_file(args.db)),
        ],
    )
    if problem is not None:
        raise CliUsageError(problem)


def check_template_fits(source: InputSource, template: str, system: str | None) -> None:
    """Render the templates with the input's first record; a missing variable is misuse.

    The render is the engine's own (the same :class:`PromptTemplate`, the input prepared by
    the engine's ``prepare_input``), so what passes here renders the same way in the run;
    a variable used only under ``{% if x is defined %}`` is no false alarm.

    Raises:
        CliUsageError: A template reads a variable the first record does not have.
    """
    try:
        templates = [PromptTemplate(template, name="prompt_template")]
        if system is not None:
            templates.append(PromptTemplate(system, name="system_prompt"))
    except LoomUsageError as exc:
        raise CliUsageError(str(exc)) from None
    first = source.first_record()
    if first is None:
        return  # no usable record: nothing is sent anyway
    line, record = first
    prepared = prepare_input(record)
    if prepared.failure is not None:
        return  # this input fails on its own, as input_invalid
    for prompt in templates:
        try:
            prompt.render(prepared.data)
        except TemplateRenderError as exc:
            if not _UNDEFINED.match(exc.message):
                continue  # a problem of this record's values, not of the template's variables
            where = "stdin" if source.path == "-" else repr(source.path)
            kind = "columns" if source.format == "csv" else "keys"
            raise CliUsageError(
                f"{exc.message}: the first record ({where}, line {line}) has no such "
                f"{kind[:-1]}; nothing was sent. Fix the template or the input's {kind}."
            ) from None


_UNDEFINED = re.compile(r"^template variable '[^']+' is undefined")
