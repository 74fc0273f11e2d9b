"""Shared set-up and helpers of the sweep tests (a module with a unique name, so test modules can
import it whatever other conftest.py files exist). Imported first by this directory's conftest.py.

The Ray cluster of the fixtures, in the style of Ray's own ``ray_start_2_cpus``:

One local cluster for the whole session: 2 CPUs, 8 *simulated* GPUs (Ray schedules them and sets
``CUDA_VISIBLE_DEVICES``; torch still sees none) and the custom resource that data-parallel trials
hold. It listens on 127.0.0.1, has no dashboard, keeps its sockets under a short temp dir, and is
shut down at the end (its own processes, by Ray). The ``ray_2_nodes`` fixture swaps it for a
``ray.cluster_utils.Cluster`` of two nodes for one test (those tests run last); ``ray_2_cpus`` starts it again on demand.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

# Ray's auth token would otherwise be created in HOME; tests run their own local cluster only.
os.environ["RAY_AUTH_MODE"] = "disabled"
# ... and, as the product's local cluster, the test clusters listen on loopback only (sweeps.cluster)
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
# Ray Train's controller looks at its workers every 2 s by default, so a data-parallel trial of a
# second's work ended up to 2 s after each report and after it finished (6 s of the DDP test's 20);
# set before the cluster starts, so that its workers inherit it.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
# Unix socket paths must fit in 107 bytes: keep Ray's temp dir short (≤ 35 characters).
SHORT_TMP = tempfile.mkdtemp(prefix="kr", dir="/tmp")
os.makedirs(os.path.join(SHORT_TMP, "ray"), exist_ok=True)
os.environ["TMPDIR"] = SHORT_TMP  # trainables killed mid-checkpoint leave tmp folders: keep them here
tempfile.tempdir = None
# Marker files of the counting wrappers (fake_trial.counting_*); set before Ray starts its workers.
MARKERS = os.path.join(SHORT_TMP, "markers")
os.makedirs(MARKERS, exist_ok=True)
os.environ["KPID_TEST_MARKERS"] = MARKERS

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fake_trial
from ray import cloudpickle

# Ship the stand-in to Ray workers by value: they need not find tests/ on their path.
cloudpickle.register_pickle_by_value(fake_trial)

NUM_SIM_GPUS = 8


def start_shared_ray() -> dict:
    """(Re)start the session's local cluster; returns its GCS address (host:port)."""
    import ray

    from sweeps.cluster import TRIAL_SLOT

    if ray.is_initialized():
        return ray.get_runtime_context().gcs_address  # type: ignore[return-value]
    ctx = ray.init(
        num_cpus=2, num_gpus=NUM_SIM_GPUS, resources={TRIAL_SLOT: 100}, include_dashboard=False,
        _temp_dir=os.path.join(SHORT_TMP, "ray"), _node_ip_address="127.0.0.1",
        log_to_driver=False, logging_level="ERROR",
    )
    return ctx.address_info["gcs_address"]


def count(markers: Path, kind: str) -> int:
    f = markers / f"{kind}.log"
    return len(f.read_text().splitlines()) if f.exists() else 0


def real_sweep(path: Path, *, name: str = "real", samples: int = 4, epochs: int = 2, budgets=(0.3, 0.6),
               early_stopping=None, extra_base=None, space=None, mode: str = "optuna", baselines=None) -> Path:
    """A tiny sweep YAML for the real run_trial on digits (1-epoch teacher, small importance, two
    candidate allocations scored on one batch each: the selection runs, at a fraction of its cost)."""
    import yaml

    cfg = {
        "name": name,
        "base": {"teacher.epochs": 1, "prune.importance_batches": 2, "prune.candidates": 2,
                 "prune.candidate_batches": 1, "epochs": epochs, **(extra_base or {})},
        "space": space or {"budget": list(budgets), "metric": ["taylor", "l1"],
                           "kd_weight": {"low": 0.0, "high": 2.0}},
        "search": {"mode": mode, "num_samples": samples, "early_stopping": early_stopping,
                   "max_failures": 1},
    }
    if baselines:
        cfg["baselines"] = baselines
    path.write_text(yaml.safe_dump(cfg))
    return path


def tiny_sweep(path: Path, root: Path, *, name: str = "tiny", samples: int = 4, epochs: int = 2,
               budgets=(0.3, 0.6), early_stopping=None, mode: str = "optuna", extra_base=None) -> Path:
    """Write a tiny sweep YAML steered by the fake trial's ``root`` directory."""
    import yaml

    cfg = {
        "name": name,
        "base": {"data.root": str(root), "epochs": epochs, **(extra_base or {})},
        "space": {"budget": list(budgets), "metric": ["taylor", "l1"], "kd_weight": {"low": 0.0, "high": 2.0}}
        if mode == "optuna" else {"budget": list(budgets), "kd_weight": [0.0, 1.0]},
        "search": {"mode": mode, "num_samples": samples, "early_stopping": early_stopping,
                   "max_failures": 2},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def sweep_args(*argv: str):
    from sweeps.run import build_parser

    return build_parser().parse_args(list(argv))
