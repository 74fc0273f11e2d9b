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


# The Ray lane: every Ray test in one xdist worker, one after another (tests/ray_lane.py says why).
from tests.ray_lane import lane_scheduler, stray_ray_tests, yield_cpu_outside_the_lane


@pytest.fixture(autouse=True)
def _outside_the_ray_lane_yield_the_cpu(request):
    """See :func:`tests.ray_lane.yield_cpu_outside_the_lane`."""
    yield_cpu_outside_the_lane(request.node.nodeid)
    yield


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # optional: the suite also runs without xdist (-p no:xdist)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadgroup`` (pyproject's addopts) with one more group, the Ray lane
    (:func:`tests.ray_lane.lane_scheduler`)."""
    return lane_scheduler(config, log)


def pytest_collection_modifyitems(config, items):
    """A test marked ``ray`` (it starts a Ray cluster) must be in the Ray lane, or it could run beside
    the sweep tests' cluster."""
    stray = stray_ray_tests(items)
    if stray:
        raise pytest.UsageError(f"marked ray but not in tests/ray_lane.py's RAY_LANE: {', '.join(stray)}")
