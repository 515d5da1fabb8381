"""The ``loom`` command line: ``run``, ``tasks``, ``show`` and ``export``, one module each.

``loom run`` streams a JSONL or CSV file through a :class:`~loom_core.TaskLoom` and writes one
row per input, in input order; the store keeps every finished result, so an interrupted run
resumes by running the same command again. An output file is never one of the inputs and is
replaced only once complete (:mod:`.files`). Exit status: 0 every input succeeded, 1 some
failed, 2 a usage error (bad arguments, an output that is an input, an unreadable input, a bad
``--schema``, an unusable store), 130 when interrupted (Ctrl-C).

Modules: :mod:`.main` (the parser and dispatcher), one per sub-command (:mod:`.run`,
:mod:`.tasks`, :mod:`.show`, :mod:`.export`), each adding its parser with
``set_defaults(func=...)`` (:mod:`.command`); shared pieces: :mod:`.args` (argument types,
``--db``, ``--config``), :mod:`.inputs` (reading JSONL and CSV), :mod:`.writers` (writing
them), :mod:`.files` (output files), :mod:`.store` (opening a store, choosing a
configuration), :mod:`.logs` (log records on stderr).
"""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
