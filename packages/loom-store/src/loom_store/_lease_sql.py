"""What each database must provide for leases: its clock, a per-task lock, the batched claim.

Every lease time is seconds since the epoch read from the database's own clock
(:attr:`LeaseSQL.now_sql`), never from the machine running the worker: workers on several
machines compare their expiries against one clock, so a machine whose clock is a minute off
neither steals live leases nor keeps dead ones. The rest of the lease statements are
dialect-neutral and live in ``_leases.py``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

__all__ = ["LeaseSQL"]


class LeaseSQL(ABC):
    """The per-database half of the claims and the worker registry (a part of ``Dialect``)."""

    #: An SQL expression: the database's current time in seconds since the epoch (a float).
    now_sql: str

    @abstractmethod
    def lock_task(self, conn: Connection, task_name: str, config_fp: str) -> None:
        """Serialize joining and leaving one task's workers until ``conn`` commits.

        Called first in a write transaction.
        """

    @abstractmethod
    def claim(
        self,
        conn: Connection,
        task_name: str,
        config_fp: str,
        owner: str,
        ids: Sequence[str],
        lease_s: float,
    ) -> list[str]:
        """Claim ``ids`` (distinct, sorted) for ``owner`` until now + ``lease_s``, in one statement.

        An id is claimed when it has no succeeded row of ``config_fp``, and no claim or a claim
        that expired or is ``owner``'s own. Returns the ids claimed (in any order).
        """
