"""loom-core: the Loom engine — ``TaskLoom`` and the ``loom`` command line.

Level 2: builds on loom-protocol, loom-backends and loom-store, with jinja2, json-repair and
tqdm. It never imports a provider SDK or a database driver directly.
"""

from loom_protocol import BatchResult, Error, ErrorCode, LoomError, LoomUsageError, TaskResult

from ._loom import LoomConfigWarning, TaskLoom

__version__ = "0.2.0"

__all__ = [
    "BatchResult",
    "Error",
    "ErrorCode",
    "LoomConfigWarning",
    "LoomError",
    "LoomUsageError",
    "TaskLoom",
    "TaskResult",
]
