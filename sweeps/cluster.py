"""Ray start-up: a local cluster bound to loopback, or joining an existing one; resource checks.

What a local cluster exposes (Ray 2.60): every server Ray starts for it (GCS, raylet, object
manager, workers' gRPC ports, runtime-env agent) listens on 127.0.0.1 only, because
:func:`init_ray` sets Ray's own switch ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (:data:`LOCAL_ONLY_ENV`)
before Ray starts. Without it Ray rewrites ``_node_ip_address="127.0.0.1"`` to the machine's
external address (``ray._private.services.resolve_ip_for_localhost``) and its gRPC servers listen
on all interfaces. Ray's token authentication (a token under ``~/.ray``, on by default) is left on
as a second lock: a client on this machine without the token is refused too. The dashboard is off
unless asked for, and then bound to 127.0.0.1.

Everything here raises :class:`kpid_core.errors.ConfigError` for user-fixable problems (an address
that does not answer, more GPUs asked for than exist) so that ``run.py`` prints one line and exits 2.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from dataclasses import dataclass
from typing import Any

from kpid_core.errors import ConfigError

__all__ = [
    "LOCAL_ONLY_ENV",
    "TRIAL_SLOT",
    "Resources",
    "check_address",
    "cluster_totals",
    "init_ray",
    "local_gpu_count",
    "plan_resources",
    "quiet_environment",
]

#: Custom resource that the outer (coordinating) function of a data-parallel trial holds instead of
#: a CPU: Ray refuses ``{"cpu": 0}`` alone, and a CPU held there would starve the Train workers.
TRIAL_SLOT = "kpid_trial_slot"

#: Ray's switch for single-machine clusters (the default on macOS and Windows). Set to ``0``, Ray takes
#: 127.0.0.1 as the node's address instead of the external one and binds its servers there; the
#: processes Ray starts inherit it from the environment.
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOOPBACK = "127.0.0.1"


def quiet_environment(verbose: bool) -> None:
    """Silence Ray's console tables and deprecation spam unless ``verbose`` (call before importing ray)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # Tune saves its experiment state at most every 2 s, so a killed driver loses little and the
    # Optuna study and Tune's state stay close (a trial Optuna closed after Tune's last save makes
    # the restore raise UpdateFinishedTrialError; sweeps.search.KPIDOptunaSearch tolerates it).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    if not verbose:
        os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
        os.environ.setdefault("RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS", "0")
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "1e9")
        for name in ("ray", "ray.tune", "ray.train", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)


class _DropControllerNoise(logging.Filter):
    """This install has no dashboard HTTP server, so Ray Train keeps logging a harmless failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Failed to query Ray Train Controller" not in record.getMessage()


def local_gpu_count() -> int:
    """Number of CUDA devices torch sees on this machine (0 on a CPU build)."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken CUDA driver counts as no GPU
        return 0


def check_address(address: str, timeout_s: float = 3.0) -> None:
    """Fail fast (ConfigError) when a ``host:port`` Ray address does not answer; Ray itself would
    retry for about a minute before giving up."""
    hostport = address.split("://", 1)[-1]
    if address in ("auto", "local") or ":" not in hostport:
        return
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            return
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"--address: cannot reach a Ray cluster at {address!r} ({exc.__class__.__name__}); "
            "start one with `ray start --head` or omit --address for a local cluster"
        ) from None


def init_ray(
    address: str | None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    dashboard: bool = False,
    verbose: bool = False,
    temp_dir: str | None = None,
) -> bool:
    """Start or join Ray; returns True when this call started it (and so must shut it down).

    A local cluster listens on 127.0.0.1 only (see the module docstring) with Ray's token
    authentication as Ray configures it (on by default), and has no dashboard unless ``dashboard``
    (then on 127.0.0.1). When Ray is already initialised in this process (tests, notebooks) that
    cluster is used as it is.

    Args:
        address: ``host:port`` or ``auto`` of an existing cluster; None starts a local one.
        num_cpus: CPUs of a local cluster (default: all of the machine).
        num_gpus: GPUs of a local cluster (default: what torch sees).
        dashboard: start Ray's dashboard (local cluster: bound to 127.0.0.1).
        verbose: show Ray's logs.
        temp_dir: Ray's temp dir for a local cluster (default Ray's, ``/tmp/ray``).

    Returns:
        Whether this call connected (and so must call ``ray.shutdown()``). Raises ConfigError when
        ``address`` does not answer, or when a local cluster could not be bound to loopback.
    """
    import ray

    for name in ("ray.train", "ray.train.v2", "ray.tune"):
        logging.getLogger(name).addFilter(_DropControllerNoise())
    if address:
        check_address(address)
    if ray.is_initialized():
        return False
    common = {
        "log_to_driver": verbose,
        "logging_level": logging.INFO if verbose else logging.ERROR,
        "include_dashboard": dashboard,
    }
    if address:
        _join(address, common)
    else:
        _start_local(num_cpus, num_gpus, temp_dir, common)
    return True


def _join(address: str, common: dict[str, Any]) -> None:
    """Connect to the cluster at ``address``; ConfigError when it does not answer."""
    import ray

    try:
        ray.init(address=address, **common)
    except (ConnectionError, RuntimeError) as exc:
        raise ConfigError(f"--address: cannot join the Ray cluster at {address!r}: {exc}") from None


def _start_local(num_cpus: int | None, num_gpus: int | None, temp_dir: str | None, common: dict[str, Any]) -> None:
    """Start a cluster on this machine bound to loopback; ConfigError (and no cluster) when Ray
    bound it to another address."""
    import ray

    _local_only()
    ray.init(
        num_cpus=num_cpus,
        num_gpus=num_gpus if num_gpus is not None else local_gpu_count(),
        resources={TRIAL_SLOT: 10_000},
        _node_ip_address=LOOPBACK,
        _temp_dir=temp_dir,
        dashboard_host=LOOPBACK,
        **common,
    )
    node_ip = ray.util.get_node_ip_address()
    if node_ip != LOOPBACK:  # fail closed: never run a sweep on a cluster open to the network
        ray.shutdown()
        raise ConfigError(
            f"local cluster: Ray chose the address {node_ip} instead of {LOOPBACK}; set "
            f"{LOCAL_ONLY_ENV}=0 in the environment before starting Python, or start a cluster yourself "
            "and pass --address"
        )


def _local_only() -> None:
    """Make the next ``ray.init`` start a loopback-only cluster (see :data:`LOCAL_ONLY_ENV`)."""
    os.environ[LOCAL_ONLY_ENV] = "0"  # for the processes Ray starts
    # Ray reads the switch into a constant when it is first imported; a process that imported Ray
    # before this call (a notebook) still has the old value, which decides the node's address.
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def cluster_totals() -> dict[str, float]:
    """Total resources of the connected cluster (``CPU``, ``GPU``, custom), from Ray."""
    import ray

    return {k: float(v) for k, v in ray.cluster_resources().items()}


@dataclass(frozen=True)
class Resources:
    """What one trial asks Ray for and how many trials fit at once.

    ``workers`` > 1 means a data-parallel trial: ``workers`` Ray Train workers, each with
    ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs, coordinated by a function holding only
    one :data:`TRIAL_SLOT`.
    """

    cpus_per_trial: float
    gpus_per_trial: float
    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    num_gpus: float
    slots: int

    def tune_request(self) -> dict[str, float]:
        """The ``tune.with_resources`` dict of the trial's own (outer) function."""
        if self.workers > 1:
            return {"cpu": 0, TRIAL_SLOT: 1}
        return {"cpu": self.cpus_per_trial, "gpu": self.gpus_per_trial}

    def as_dict(self) -> dict[str, float]:
        return {
            "cpus_per_trial": self.cpus_per_trial,
            "gpus_per_trial": self.gpus_per_trial,
            "workers_per_trial": self.workers,
            "num_gpus": self.num_gpus,
            "parallel_trials": self.slots,
        }


def plan_resources(
    totals: dict[str, float],
    *,
    num_gpus: float | None,
    gpus_per_trial: float,
    cpus_per_trial: float,
    workers_per_trial: int = 1,
) -> Resources:
    """Validate the requested shape against the cluster ``totals`` and compute parallel slots.

    Args:
        totals: the cluster's resources (``CPU``, ``GPU``, custom), e.g. :func:`cluster_totals`.
        num_gpus: GPUs the sweep may use (None = all of the cluster's).
        gpus_per_trial: an integer > 1 means data-parallel over that many GPUs (one worker each);
            a fraction below 1 lets trials share a GPU.
        cpus_per_trial: CPUs per trial (split among its workers).
        workers_per_trial: on CPU, > 1 gives data-parallel CPU workers (gloo).

    Returns:
        The per-trial and per-worker shape and how many trials fit at once.

    Raises:
        ConfigError: one line naming the option when the shape does not fit the cluster.
    """
    have_gpus = totals.get("GPU", 0.0)
    have_cpus = totals.get("CPU", 0.0)
    if num_gpus is None:
        num_gpus = have_gpus
    _check_shape(have_gpus, have_cpus, num_gpus, gpus_per_trial, cpus_per_trial)
    workers = int(gpus_per_trial) if gpus_per_trial > 1 else max(1, int(workers_per_trial))
    if workers > 1:
        cpw = max(cpus_per_trial / workers, 0.5) if gpus_per_trial > 1 else cpus_per_trial / workers
        gpw = 1.0 if gpus_per_trial > 1 else 0.0
        if workers * cpw > have_cpus:
            raise ConfigError(
                f"--workers-per-trial: {workers} workers x {cpw:g} CPU do not fit the cluster's "
                f"{have_cpus:g} CPU(s)"
            )
        if totals.get(TRIAL_SLOT, 0) < 1:
            raise ConfigError(
                f"data-parallel trials need the custom resource {TRIAL_SLOT!r} on the cluster: start "
                f"nodes with `ray start ... --resources='{{\"{TRIAL_SLOT}\": 100}}'`"
            )
        slots_cpu = math.floor(have_cpus / (workers * cpw) + 1e-9)
        slots_gpu = math.floor(num_gpus / workers + 1e-9) if gpw else slots_cpu
    else:
        cpw, gpw = cpus_per_trial, gpus_per_trial
        slots_cpu = math.floor(have_cpus / cpus_per_trial + 1e-9)
        slots_gpu = math.floor(num_gpus / gpus_per_trial + 1e-9) if gpus_per_trial > 0 else slots_cpu
    return Resources(
        cpus_per_trial=float(cpus_per_trial),
        gpus_per_trial=float(gpus_per_trial),
        workers=workers,
        cpus_per_worker=float(cpw),
        gpus_per_worker=float(gpw),
        num_gpus=float(num_gpus),
        slots=max(1, min(slots_cpu, slots_gpu)),
    )


def _check_shape(have_gpus: float, have_cpus: float, num_gpus: float, gpus_per_trial: float,
                 cpus_per_trial: float) -> None:
    """One-line ConfigErrors for a trial shape the cluster cannot hold."""
    if num_gpus < 0 or num_gpus > have_gpus:
        raise ConfigError(
            f"--num-gpus: {num_gpus:g} requested but the cluster has {have_gpus:g} GPU(s); "
            f"allowed 0..{have_gpus:g}"
        )
    if gpus_per_trial < 0 or cpus_per_trial <= 0:
        raise ConfigError(f"--gpus-per-trial (resources.gpus_per_trial) must be >= 0 and --cpus-per-trial "
                          f"(resources.cpus_per_trial) > 0; got {gpus_per_trial:g} and {cpus_per_trial:g}")
    if gpus_per_trial > 0 and num_gpus == 0:
        raise ConfigError(
            f"--gpus-per-trial: {gpus_per_trial:g} asked but 0 GPUs are in use (--num-gpus / cluster)"
        )
    if gpus_per_trial > num_gpus:
        raise ConfigError(
            f"--gpus-per-trial: {gpus_per_trial:g} is more than the {num_gpus:g} GPU(s) available"
        )
    if gpus_per_trial > 1 and gpus_per_trial != int(gpus_per_trial):
        raise ConfigError(
            f"--gpus-per-trial: {gpus_per_trial:g}; above 1 it must be a whole number of GPUs "
            "(data-parallel), below 1 a fraction (trials share a GPU)"
        )
    if cpus_per_trial > have_cpus:
        raise ConfigError(
            f"--cpus-per-trial: {cpus_per_trial:g} is more than the {have_cpus:g} CPU(s) of the cluster"
        )
