"""Shared-artifact preparation, once per sweep: data split, teacher, importance of every metric.

Runs ``kpid_core.shared.prepare_shared`` in one Ray task (so it gets a GPU when the cluster has one)
writing into ``EXPERIMENT/shared/``; every trial then receives what it returned and neither trains a
teacher nor computes importance. On ``--resume`` the recorded result is reused. The wait on the task
is bounded (:mod:`sweeps.waits`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["SHARED_DIR", "PrepareFn", "default_prepare_fn", "prepare_shared_artifacts"]

SHARED_DIR = "shared"
PrepareFn = Callable[[dict, Path, list], Any]


def default_prepare_fn(cfg: dict[str, Any], out_dir: Path, metrics: list[str]) -> Any:
    """The product's preparation: ``kpid_core.shared.prepare_shared`` on the typed config."""
    from kpid_core.shared import prepare_shared
    from sweeps.trainable import to_trial_config

    return prepare_shared(to_trial_config(cfg), out_dir, metrics)


def prepare_shared_artifacts(
    cfg: dict[str, Any],
    exp_dir: Path,
    metrics: list[str],
    *,
    prepare_fn: PrepareFn | None = None,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    reuse: bool = False,
    waits: Any = None,
) -> Any:
    """Run the preparation once in a Ray task; returns its result (passed to every trial).

    ``cfg`` is the nested base trial config; ``metrics`` every importance metric of the space.
    ``prepared.json`` next to the artifacts records the metrics, the seconds it took and the value
    passed to trials; with ``reuse`` (``--resume``) that record is used and nothing is recomputed.
    ``waits`` (:class:`sweeps.waits.TaskWaits`, default its defaults) bounds the wait on the task.
    A record that is not valid JSON raises SpecError naming the file.
    """
    import ray

    from kpid_core.files import atomic_write_text
    from sweeps.waits import TaskWaits, submit, wait_any

    out_dir = Path(exp_dir) / SHARED_DIR
    marker = out_dir / "prepared.json"
    if reuse and marker.exists():
        record = _read_record(marker)
        if set(metrics) <= set(record["metrics"]):
            return record["shared"]
    out_dir.mkdir(parents=True, exist_ok=True)
    fn = prepare_fn or default_prepare_fn
    t0 = time.perf_counter()
    task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=1)(_prepare_task)
    pending = submit(task, (str(out_dir), fn, cfg, out_dir, list(metrics)), what="shared preparation",
                     ask={"CPU": num_cpus, "GPU": num_gpus}, out_dir=out_dir)
    done, _ = wait_any([pending], waits or TaskWaits())
    shared = ray.get(done.ref)  # ready: returns at once
    if hasattr(shared, "to_dict"):
        # kpid_core.shared.SharedArtifacts: trials reload it from out_dir/shared.json by path.
        shared = str(out_dir)
    record = {"metrics": list(metrics), "seconds": round(time.perf_counter() - t0, 3), "shared": shared}
    atomic_write_text(marker, json.dumps(record, indent=1))
    return shared


def _prepare_task(out_dir: str, fn: PrepareFn, cfg: dict, *args: Any) -> Any:
    from sweeps.threads import cap_loader_workers, use_allotted_threads
    from sweeps.waits import heartbeat

    cap_loader_workers(cfg, use_allotted_threads())
    return heartbeat(out_dir, fn, cfg, *args)


def _read_record(marker: Path) -> dict[str, Any]:
    from kpid_core.errors import SpecError

    try:
        record = json.loads(marker.read_text())
        record["metrics"], record["shared"]
    except (ValueError, KeyError, TypeError):
        raise SpecError(f"{marker}: the record of the shared preparation is corrupt or truncated; delete "
                        f"{marker.parent} to prepare again") from None
    return record
