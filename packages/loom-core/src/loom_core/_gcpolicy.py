"""Fewer garbage collections while batches run, scoped to them and yielding to the host.

A batch keeps every result it makes alive (each a handful of container objects), and
CPython's collector, at its default generation-0 threshold of 700 surviving allocations, then
runs a full collection every time the survivors grow by a quarter, walking every object in
the process, again and again. Measured on a resumed run of 100,000 cached results: 21,000
results/s with the default threshold, 54,000/s with 50,000, 59,000/s with the collector off;
measured again after the store's dialect split (issue 12), on a quiet machine: 54,148 and
57,988 results/s without this policy against 108,897 and 126,311/s with it (about 2x).

The collector is process-wide, so the policy is kept narrow, so as not to surprise an
application that embeds Loom:

* it applies only while at least one batch runs (reference-counted over concurrent batches)
  and is undone when the last one ends;
* it only ever replaces CPython's own default threshold (700): an application that tuned its
  collector (any other threshold) or disabled it is left exactly as it is;
* a change the application makes while batches run is kept (not undone at the end);
* ``LOOM_GC_THRESHOLD`` sets the raised threshold (default 50,000); ``0`` turns the policy off.

Cyclic garbage is still collected, a little later.
"""

from __future__ import annotations

import gc
import os
import threading

__all__ = ["relaxed_gc"]

_DEFAULT_THRESHOLD = 50_000
#: CPython's own generation-0 threshold: the only one the policy replaces.
_CPYTHON_DEFAULT = 700


def _threshold() -> int:
    raw = os.environ.get("LOOM_GC_THRESHOLD", "")
    try:
        return max(0, int(raw)) if raw.strip() else _DEFAULT_THRESHOLD
    except ValueError:
        return _DEFAULT_THRESHOLD


class _RelaxedGC:
    """A process-wide, reference-counted raise of the generation-0 threshold."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._saved: tuple[int, ...] | None = None
        self._ours: tuple[int, ...] | None = None

    def enter(self) -> None:
        """A batch starts."""
        with self._lock:
            self._depth += 1
            if self._depth > 1:
                return
            target = _threshold()
            current = gc.get_threshold()
            if not target or not gc.isenabled() or current[0] != _CPYTHON_DEFAULT:
                return  # off, or the application runs its collector its own way
            self._saved = current
            self._ours = (target, *current[1:])
            gc.set_threshold(*self._ours)

    def exit(self) -> None:
        """A batch ended."""
        with self._lock:
            self._depth -= 1
            if self._depth > 0 or self._saved is None:
                return
            saved, ours = self._saved, self._ours
            self._saved = self._ours = None
            if gc.get_threshold() == ours:  # the application did not change it meanwhile
                gc.set_threshold(*saved)


#: The one policy of the process (the collector is process-wide too).
relaxed_gc = _RelaxedGC()
