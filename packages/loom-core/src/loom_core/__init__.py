"""loom-core: the Loom engine — ``TaskLoom`` and the ``loom`` command line.

Level 2: builds on loom-protocol, loom-backends and loom-store, with jinja2, json-repair and
tqdm. It never imports a provider SDK or a database driver directly.
"""

import logging as _logging

from loom_protocol import BatchResult, Error, ErrorCode, LoomError, LoomUsageError, TaskResult

from ._batch_policy import BatchPolicy
from ._batch_status import BatchJobStatus, ProviderBatchStatus
from ._estimate import CostEstimate
from ._loom import LoomConfigWarning, TaskLoom
from ._ratelimit import RateLimiter, estimate_tokens

__version__ = "0.2.0"

# A library configures no logging: without this, Python's last-resort handler would print every
# WARNING (a 429 pause, a give-up) to stderr of an application that set up no logging at all.
# Applications choose: logging.basicConfig(), or the `loom` command, which shows them on stderr.
_logging.getLogger("loom").addHandler(_logging.NullHandler())

__all__ = [
    "BatchJobStatus",
    "BatchPolicy",
    "BatchResult",
    "CostEstimate",
    "Error",
    "ErrorCode",
    "LoomConfigWarning",
    "LoomError",
    "LoomUsageError",
    "ProviderBatchStatus",
    "RateLimiter",
    "TaskLoom",
    "TaskResult",
    "estimate_tokens",
]
