"""loom-store: Loom's result store — SQLite by default, PostgreSQL for several processes.

Level 1: depends on loom-protocol and SQLAlchemy (extra ``postgres``: psycopg); never imports
loom-backends or loom-core.

* :class:`ResultStore` keeps every task's result keyed by (task name, configuration, task id)
  and the run registry (which configurations a task name has been run with, and when last).
* :class:`StoreWriter` writes rows on one background thread with group commit; a row's future
  completes only after its transaction committed.
* The provider batch jobs (``add_provider_batches``, ``claim_provider_batch``…, records
  :class:`ProviderBatchRecord` and :class:`ProviderItem`): what the engine needs to submit
  to a provider's Batch API at most once and to resume after a crash.
* :class:`WorkerView` is what a worker learns of its task's other workers (leases of several
  workers on one task: ``ResultStore.join_task``, ``claim``, ``beat``, ``leave_task``).
* :class:`CachedHit` is the layout of one element of ``ResultStore.get_hits``, the engine's
  cache read.

Everything that differs between databases is one module of ``loom_store.dialects`` behind the
``Dialect`` interface (``_dialect.py``).
"""

import logging as _logging

from ._base import DEFAULT_TARGET
from ._job_rows import JOB_STATES, ProviderBatchRecord, ProviderItem
from ._jobs import NewProviderBatch
from ._leases import MAX_LEASE_S, MIN_LEASE_S, WorkerView
from ._rows import CachedHit, ConfigInfo, ResultRow, RunRecord, TaskStats
from ._schema import SCHEMA_VERSION
from ._secrets import scrub_config
from ._store import GET_MANY_CHUNK, ResultStore
from ._writer import StoreWriter

__version__ = "0.2.0"

# A library configures no logging: without this, Python's last-resort handler would print every
# WARNING (a 429 pause, a give-up) to stderr of an application that set up no logging at all.
# Applications choose: logging.basicConfig(), or the `loom` command, which shows them on stderr.
_logging.getLogger("loom").addHandler(_logging.NullHandler())

__all__ = [
    "DEFAULT_TARGET",
    "GET_MANY_CHUNK",
    "JOB_STATES",
    "MAX_LEASE_S",
    "MIN_LEASE_S",
    "SCHEMA_VERSION",
    "CachedHit",
    "ConfigInfo",
    "NewProviderBatch",
    "ProviderBatchRecord",
    "ProviderItem",
    "ResultRow",
    "ResultStore",
    "RunRecord",
    "StoreWriter",
    "TaskStats",
    "WorkerView",
    "scrub_config",
]
