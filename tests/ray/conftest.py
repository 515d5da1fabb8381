"""One local Ray for the pipeline tests of this directory (``ray.init(num_cpus=2)``).

Started once per module, on first use; a test that needs it skips, saying why, when Ray
cannot start here.
"""

from __future__ import annotations

import gc
import os
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

# Under `uv run` (as CI runs pytest), Ray would start every worker with `uv run` and ship the
# working directory as its runtime env; the local test cluster needs neither. Ray reads this
# once, when it is first imported: here, before this directory's test modules import loom_ray.
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """The ``ray`` module, initialised with 2 CPUs, no dashboard, quiet Ray Data.

    Module-scoped (one module uses it), so that it is shut down before the next test of the
    "ray" xdist group (examples/ray_batch.py's test) starts a Ray of its own.
    """
    try:
        import ray
        import ray.data
    except Exception as exc:  # an import that fails for any reason is a skip, not an error
        pytest.skip(f"ray[data] cannot be imported here: {exc}")
    # The test process's own FakeLLMServer must be reachable by the actors: no proxy.
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    failure: Exception | None = None
    # Ray gives its raylet 30 s to register, which a loaded 2-core machine can miss: twice.
    for _ in range(2):
        try:
            ray.init(
                num_cpus=2,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        except Exception as exc:
            failure = exc
            # The failed start's process handles go here, quietly: not as "subprocess is
            # still running" warnings failing whichever test comes next.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                ray.shutdown()
                gc.collect()
            continue
        failure = None
        break
    if failure is not None:
        pytest.skip(f"a local Ray cannot start here: {type(failure).__name__}: {failure}")
    with warnings.catch_warnings():
        # Ray's DataContext warns about its own deprecated defaults when it is created.
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    try:
        yield ray
    finally:
        ray.shutdown()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use the local Ray share one pytest-xdist worker, so one Ray at a time.

    Two clusters on a 2-core machine start slowly enough to miss Ray's own time-outs.
    """
    for item in items:
        if "ray_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("ray"))
