"""Threads of a Ray task: torch's intra-op threads = the task's CPU allotment, whatever the shell exported.

Ray sets ``OMP_NUM_THREADS`` for its workers only when the environment has none, so an
``OMP_NUM_THREADS=8`` exported in the shell reaches every one-CPU trial: eight threads per trial on
a machine sized for one per trial, which on a busy machine slows depthwise/SE-heavy models many
times over. Each trial, baseline and preparation task calls :func:`use_allotted_threads` first.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Any

__all__ = ["allotted_cpus", "cap_loader_workers", "use_allotted_threads"]


def allotted_cpus() -> int | None:
    """CPUs Ray gave the calling task or actor, rounded down and at least 1; None outside Ray or when
    it holds no CPU (a data-parallel trial's coordinating function)."""
    import ray

    if not ray.is_initialized():
        return None
    cpus = float(ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0))
    return max(1, math.floor(cpus + 1e-9)) if cpus > 0 else None


def use_allotted_threads() -> int | None:
    """Set torch's intra-op threads (and ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` for processes this
    task starts) to :func:`allotted_cpus`.

    torch is not imported for this: a process that has not imported it yet gets the two variables,
    which OpenMP and MKL read when torch loads them (a trial function that never needs torch does
    not pay its ~2 s import); one that has gets ``torch.set_num_threads`` as well.

    Returns:
        The thread count set, or None when the task holds no CPU (nothing is changed).
    """
    n = allotted_cpus()
    if n is None:
        return None
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    return n


def cap_loader_workers(cfg: dict[str, Any], cpus: int | None) -> dict[str, Any]:
    """Cap ``cfg["data"]["num_workers"]`` (nested trial config, changed in place) at ``cpus - 1``:
    the training process keeps one of the task's CPUs.

    Args:
        cfg: the nested trial config.
        cpus: the task's CPUs (:func:`allotted_cpus`); None leaves the config alone.

    Returns:
        ``cfg``.
    """
    data = cfg.get("data")
    if cpus is not None and isinstance(data, dict) and int(data.get("num_workers", 0) or 0) > cpus - 1:
        data["num_workers"] = cpus - 1
    return cfg
