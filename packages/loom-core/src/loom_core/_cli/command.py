"""What every ``loom`` sub-command shares: how it is called, its exit statuses, its usage error.

Each sub-command module defines ``add_parser(commands)``, which adds its parser and registers
its :data:`Command` with ``set_defaults(func=...)``; :func:`loom_core._cli.main.main` parses
the arguments and calls ``args.func(args, console)``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import IO, TypeAlias

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliUsageError",
    "Command",
    "Console",
    "Subcommands",
]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class CliUsageError(Exception):
    """A command-line mistake: printed as ``loom <command>: error: ...`` with exit status 2."""


class Console:
    """What a command reads and writes besides its parsed arguments.

    Args:
        argv: The arguments as given (``loom run`` repeats them in its resume command).
        stdout: Where results and listings go.
        stderr: Where messages go.
    """

    __slots__ = ("argv", "stderr", "stdout")

    def __init__(self, argv: Sequence[str], stdout: IO[str], stderr: IO[str]) -> None:
        self.argv = argv
        self.stdout = stdout
        self.stderr = stderr

    @property
    def stdin(self) -> IO[bytes]:
        """The binary standard input, looked up only by the command that reads it."""
        return sys.stdin.buffer


#: A sub-command: its parsed arguments and the console in, its exit status out.
Command = Callable[[argparse.Namespace, Console], int]

#: What ``add_parser`` of a sub-command module receives: ``ArgumentParser.add_subparsers()``.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
