"""Suite-wide isolation: nothing a test runs writes into HOME (matplotlib, Jupyter, Ray, torch hub)."""

import os
import tempfile

_SANDBOX = tempfile.mkdtemp(prefix="kpid-tests-")
for var, sub in {
    "MPLCONFIGDIR": "mpl",
    "IPYTHONDIR": "ipython",
    "JUPYTER_CONFIG_DIR": "jupyter/config",
    "JUPYTER_DATA_DIR": "jupyter/data",
    "JUPYTER_RUNTIME_DIR": "jupyter/runtime",
    "TORCH_HOME": "torch",
    "KPID_CACHE_DIR": "kpid-cache",
}.items():
    path = os.path.join(_SANDBOX, sub)
    os.makedirs(path, exist_ok=True)
    os.environ.setdefault(var, path)
os.environ.setdefault("MPLBACKEND", "Agg")
# The processes the tests start (CLIs, bench scripts, DDP ranks, Ray's workers until a task sets its
# allotment) run one intra-op thread: torch's default, one per core, halved the speed of a CLI
# test on the 2 shared cores of CI.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

import torch

torch.set_num_threads(1)  # 2 cores shared with Ray workers; oversubscription makes the suite slower

import pytest

_TORCH_THREADS = torch.get_num_threads()


@pytest.fixture(autouse=True)
def _torch_threads_stay_one():
    """Every test starts with one intra-op thread, whatever an earlier test set: code run in-process
    (the bench scripts' ``torch.set_num_threads(cpu_count // jobs)``, latency timers) may leave more,
    and two threads contending with Ray's workers made every later torch test ~15× slower."""
    torch.set_num_threads(_TORCH_THREADS)
    yield
    torch.set_num_threads(_TORCH_THREADS)


# The Ray lane (see pytest_xdist_make_scheduler): node ids under these prefixes. Tests outside
# tests/sweeps that start Ray are listed here and marked ``ray`` (collection checks the two agree).
RAY_LANE = ("tests/sweeps/", "tests/analysis/test_load.py::test_ray_experiment_directory_without_trials_table")


def in_ray_lane(nodeid: str) -> bool:
    """Whether the test ``nodeid`` runs in the Ray lane.

    Args:
        nodeid: pytest's node id, relative to the repository root.

    Returns:
        True for the tests under tests/sweeps and those listed in ``RAY_LANE``.
    """
    return nodeid.startswith(RAY_LANE)


@pytest.fixture(autouse=True)
def _outside_the_ray_lane_yield_the_cpu(request):
    """Under xdist, the worker running tests outside the Ray lane drops to nice 19 (for good: a
    process cannot raise its priority again, and the Ray lane always runs first in its worker).

    The Ray lane is the suite's critical path and waits on processes (drivers, Ray's daemons at nice
    0, its workers at nice 15); the other worker's plain torch work then takes only the CPU those
    leave idle instead of slowing the lane by half. Without xdist nothing changes.
    """
    if os.environ.get("PYTEST_XDIST_WORKER") and not in_ray_lane(request.node.nodeid) \
            and os.getpriority(os.PRIO_PROCESS, 0) < 19:
        os.setpriority(os.PRIO_PROCESS, 0, 19)
    yield


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # optional: the suite also runs without xdist (-p no:xdist)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup`` (pyproject's addopts) with one more group: the Ray lane.

    Every test in the lane runs in one xdist worker, one after another and in collection order, as in a
    serial run: the session's shared cluster (the 2-node tests last, tests/sweeps/conftest.py), the
    clusters tests start themselves and their timing bounds never meet a second Ray test. The other
    worker runs everything else meanwhile. xdist hands the largest group out first, so the lane starts
    at once. (xdist's own ``xdist_group`` marks cannot say this under pytest 9.2: xdist 3.8 renames the
    node by a private attribute that pytest no longer reads.)
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class RayLaneScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "ray-lane" if in_ray_lane(nodeid) else super()._split_scope(nodeid)

    return RayLaneScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """A test marked ``ray`` (it starts a Ray cluster) must be in the Ray lane, or it could run beside
    the sweep tests' cluster."""
    stray = [item.nodeid for item in items if item.get_closest_marker("ray") and not in_ray_lane(item.nodeid)]
    if stray:
        raise pytest.UsageError(f"marked ray but not in tests/conftest.py's RAY_LANE: {', '.join(stray)}")
