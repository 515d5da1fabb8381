"""``LoomMapper``: one TaskLoom per Ray actor, as a ``Dataset.map_batches`` stage."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from collections.abc import Sequence
from typing import Any

from loom_backends import DEFAULT_TIMEOUT, resolve_backend
from loom_core import TaskLoom
from loom_protocol import (
    MAX_TIMEOUT,
    ErrorCode,
    LoomError,
    LoomUsageError,
    check_int,
    check_non_empty_string,
    check_positive_number,
)

from ._batch import Batch, failed_columns, output_batch, result_columns
from ._limited import LimitedBackend
from ._loop import ActorLoop
from ._permits import PermitPool
from ._shared import SharedLimit

__all__ = ["DEFAULT_MAX_WORKERS", "LoomMapper", "load_response_model"]

_log = logging.getLogger("loom.ray")

#: Calls in flight per actor unless ``max_workers`` says otherwise.
DEFAULT_MAX_WORKERS = 32


def load_response_model(value: Any) -> Any:
    """A ``response_model`` given as a class, ``dict``, ``None`` or ``"module:Class"`` text.

    Text is imported in the actor, so a model living in an installed module reaches every
    worker by name rather than by value (Ray pickles a class defined in ``__main__`` or a
    notebook by value, which works too but copies it into every task).

    Raises:
        LoomUsageError: text that is not ``module:Class``, or that does not import.
    """
    if not isinstance(value, str):
        return value
    module_name, sep, attr = value.partition(":")
    if not sep or not module_name or not attr:
        raise LoomUsageError(
            f"response_model {value!r}: give a class, or its import path as 'module:Class'"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise LoomUsageError(
            f"response_model {value!r}: cannot import module {module_name!r} on this worker "
            f"({exc}); install it on every node or pass the class itself"
        ) from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise LoomUsageError(f"response_model {value!r}: {module_name} has no {attr!r}")
        target = getattr(target, part)
    return target


def _check_store(store: Any) -> str:
    if isinstance(store, os.PathLike):
        store = os.fspath(store)
    if not isinstance(store, str) or not store.strip():
        raise LoomUsageError(
            "LoomMapper needs store=: a database URL (postgresql+psycopg://… for a cluster) or "
            f"an absolute SQLite path on one machine, got {store!r} (a ResultStore object "
            "cannot travel to Ray's actors)"
        )
    if "://" not in store and not os.path.isabs(store):
        raise LoomUsageError(
            f"LoomMapper store={store!r} is a relative path: each Ray actor runs in its own "
            "working directory, so give an absolute path (or a database URL)"
        )
    return store


class LoomMapper:
    """A callable class for ``Dataset.map_batches``: Loom over each batch, one loom per actor.

    Example::

        out = ds.map_batches(
            LoomMapper,
            fn_constructor_kwargs={"model": "gpt-4o-mini", "prompt_template": "…{{ text }}",
                                   "response_model": "myapp.models:Profile",
                                   "task_name": "profiles_v1", "store": "postgresql+psycopg://…",
                                   "rpm": 5000},
            concurrency=4, batch_size=256, num_cpus=0.25,
        )

    Every output row is the input row's columns plus ``loom_task_id``, ``loom_ok``,
    ``loom_data`` (the result as JSON text), ``loom_error_code`` and ``loom_cached``, in the
    batch's order. A task that fails is a row with ``loom_ok=False``, never a failed Ray task;
    the store keeps it for ``loom show``, and the next run retries it. Results already in the
    store are not called again: re-running a pipeline calls only what is missing.

    Args:
        model: As for ``TaskLoom``.
        prompt_template: As for ``TaskLoom`` (a Jinja2 template over the row's columns).
        task_name: The store's task name (required: the store is the pipeline's cache and resume).
        store: A database URL, or an absolute SQLite path when every actor runs on one machine.
        response_model: A pydantic class, ``dict``, ``None``, or ``"module:Class"`` text.
        input_columns: The columns that make a row's input (default: all). Only these are
            rendered and fingerprinted, so an id column left out does not change the task id.
        max_workers: Calls in flight per actor.
        rpm: Requests per minute for the whole pipeline, shared by all its actors.
        tpm: Tokens per minute for the whole pipeline, shared by all its actors.
        limit_name: The name of the shared limit's Ray actor (default ``loom-limit:<task_name>``);
            pipelines of one job that give the same name share one limit.
        **loom_kwargs: Any other ``TaskLoom`` argument (``system_prompt``, ``base_url``,
            ``api_key``, ``max_retries``, ``timeout``, generation parameters…), not ``db_path``.

    Raises:
        LoomUsageError: A wrong argument, at construction (in the actor: build one in the
            driver first to fail before the pipeline starts).
        StoreError: The store cannot be opened.
    """

    def __init__(
        self,
        model: str,
        prompt_template: str,
        *,
        task_name: str,
        store: str | os.PathLike[str],
        response_model: Any = None,
        input_columns: Sequence[str] | None = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        rpm: float | None = None,
        tpm: float | None = None,
        limit_name: str | None = None,
        **loom_kwargs: Any,
    ) -> None:
        self._loop: ActorLoop | None = None
        self._loom: TaskLoom[Any] | None = None
        self._owned_inner: Any = None
        #: The pipeline-wide limit's handle (``None`` without rpm/tpm).
        self.shared_limit: SharedLimit | None = None
        self.task_name = check_non_empty_string("task_name", task_name, allow_blank=False)
        store = _check_store(store)
        if "db_path" in loom_kwargs:
            raise LoomUsageError("LoomMapper takes store=, not db_path=")
        for name in ("rpm_per_actor", "tpm_per_actor"):
            if name in loom_kwargs:
                raise LoomUsageError(f"LoomMapper has no {name}; rpm and tpm are pipeline-wide")
        if input_columns is not None:
            if isinstance(input_columns, str) or not all(isinstance(c, str) for c in input_columns):
                raise LoomUsageError(
                    f"input_columns must be a list of column names, got {input_columns!r}"
                )
            if not input_columns:
                raise LoomUsageError("input_columns must name at least one column")
            input_columns = list(input_columns)
        self.input_columns = input_columns
        self.max_workers = check_int("max_workers", max_workers, 1)
        for name, limit in (("rpm", rpm), ("tpm", tpm)):
            if limit is not None:
                check_positive_number(name, limit)
        if limit_name is not None:
            check_non_empty_string("limit_name", limit_name, allow_blank=False)
        self._loop = ActorLoop()
        if rpm is not None or tpm is not None:
            loom_kwargs["backend"] = self._limited_backend(
                model, loom_kwargs, rpm, tpm, limit_name or f"loom-limit:{self.task_name}"
            )
            loom_kwargs.pop("client", None)
        self._loom = TaskLoom(
            model,
            prompt_template,
            response_model=load_response_model(response_model),
            store=store,
            **loom_kwargs,
        )

    def _limited_backend(
        self,
        model: str,
        loom_kwargs: dict[str, Any],
        rpm: float | None,
        tpm: float | None,
        name: str,
    ) -> LimitedBackend:
        """The backend TaskLoom would resolve, behind the pipeline's shared limit."""
        timeout = check_positive_number(
            "timeout", loom_kwargs.get("timeout", DEFAULT_TIMEOUT), " of seconds", MAX_TIMEOUT
        )
        client = loom_kwargs.get("client")
        backend = loom_kwargs.get("backend")
        resolved = resolve_backend(
            model,
            client=client,
            backend=backend,
            base_url=loom_kwargs.pop("base_url", None),
            api_key=loom_kwargs.pop("api_key", None),
            timeout=timeout,
        )
        if client is None and backend is None:
            self._owned_inner = resolved.backend
        shared = SharedLimit(name, rpm, tpm)
        pool = PermitPool(shared.take, rpm, tpm)
        self.shared_limit = shared
        return LimitedBackend(
            resolved.backend, resolved.model, pool, shared.pause, count_tokens=tpm is not None
        )

    def __call__(self, batch: Any) -> Any:
        """Run Loom over one batch; return it with the ``loom_*`` columns added, in order.

        Raises:
            LoomUsageError: the batch cannot be read (see ``Batch``) or the mapper is closed.
        """
        if self._loom is None or self._loop is None:
            raise LoomUsageError("this LoomMapper is closed")
        rows = Batch(batch, self.input_columns)
        if rows.length == 0:
            return output_batch(rows, failed_columns(0, ""))
        loom = self._loom
        try:
            results = self._loop.run(
                loom.amap(rows.rows(), task_name=self.task_name, max_workers=self.max_workers)
            )
        except LoomUsageError:
            raise
        except LoomError as exc:
            # The store failed as a whole (a lookup, the schema): nothing of this batch was
            # called, so its rows fail as store_error and a later run computes them. Failing
            # the Ray task instead would fail the whole pipeline over rows that cost nothing.
            _log.error("LoomMapper: batch of %d rows failed: %s", rows.length, exc)
            return output_batch(rows, failed_columns(rows.length, ErrorCode.STORE_ERROR.value))
        except Exception:
            _log.exception("LoomMapper: batch of %d rows failed inside Loom", rows.length)
            return output_batch(rows, failed_columns(rows.length, ErrorCode.INTERNAL.value))
        return output_batch(rows, result_columns(results.results))

    def close(self) -> None:
        """Close the loom (drains its store writer) and the actor's loop. Idempotent.

        Ray Data calls it through ``__del__`` when it shuts an actor down gracefully; an
        actor killed outright loses only calls in flight, never a committed row.
        """
        loom, self._loom = self._loom, None
        loop, self._loop = self._loop, None
        inner, self._owned_inner = self._owned_inner, None
        if loop is None:
            return
        try:
            if loom is not None:
                loop.run(loom.aclose())
            if inner is not None:
                loop.run(inner.aclose())
        finally:
            loop.close()

    def __del__(self) -> None:
        # Ray Data's actor shutdown drops the UDF (MapWorker.__ray_shutdown__): close here.
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        return f"LoomMapper(task_name={self.task_name!r}, loom={self._loom!r})"
