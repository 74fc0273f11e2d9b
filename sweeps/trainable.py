"""The Ray Tune trainable: one trial = ``kpid_core.trial.run_trial`` with per-epoch reports.

Each epoch the trial reports its metrics with the checkpoint ``run_trial`` just wrote
(``ray.tune.report(..., checkpoint=tune.Checkpoint.from_directory(d))``); a restarted trial
(``FailureConfig(max_failures)``) continues from that checkpoint through ``resume_from``. After
``run_trial`` returns, one more result carries the final (test) metrics and ``final=True``; a trial
stopped early never sends it, which is how results and the Optuna study tell the two apart.

Per-epoch results name the validation accuracy ``val_accuracy``; ``accuracy`` appears only in the
final result and is the test accuracy, as in docs/CONTRACTS.md.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kpid_core.results_schema import ERROR_KEY, FINAL_KEY
from sweeps.space import apply_params

__all__ = [
    "PID_FILE",
    "TrialFn",
    "default_trial_fn",
    "make_trainable",
    "scalar_metrics",
    "to_trial_config",
]

#: Written into the trial directory by the process running the trial (fault tests, debugging).
PID_FILE = "worker.pid"

TrialFn = Callable[..., dict]


def to_trial_config(cfg: dict[str, Any]) -> Any:
    """Nested config dict → validated ``kpid_core.config.TrialConfig``."""
    from kpid_core.config import TrialConfig

    return TrialConfig.from_dict(cfg)


def default_trial_fn(cfg: dict[str, Any], on_epoch: Callable | None = None, **kw: Any) -> dict:
    """The product's trial: ``kpid_core.trial.run_trial`` on the typed config."""
    from kpid_core.trial import run_trial

    return run_trial(to_trial_config(cfg), on_epoch, **kw)


def scalar_metrics(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Keep numbers/strings/bools (flattening dicts like ``times``); drop the config and tensors."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if k == "config":
            continue
        if isinstance(v, dict):
            out.update(scalar_metrics(v, f"{prefix}{k}/"))
        elif isinstance(v, (bool, int, float, str)) or v is None:
            out[f"{prefix}{k}"] = v
        elif hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
            out[f"{prefix}{k}"] = v.item()
    return out


def _epoch_result(epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
    m = scalar_metrics(metrics)
    m["epoch"] = int(epoch)
    if "accuracy" in m:  # run_trial's per-epoch accuracy is validation top-1
        m["val_accuracy"] = m.pop("accuracy")
    return m


def _placement() -> dict[str, Any]:
    """Which resources Ray gave this process (checked by the packing tests)."""
    import ray

    try:
        got = ray.get_runtime_context().get_assigned_resources()
    except Exception:  # noqa: BLE001 - informational only
        got = {}
    info: dict[str, Any] = {f"assigned/{k}": float(v) for k, v in got.items()}
    info["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    info["node_ip"] = ray.util.get_node_ip_address()
    info["node_id"] = ray.get_runtime_context().get_node_id()
    info["pid"] = os.getpid()
    return info


def _error_result(exc: BaseException, epoch: int) -> dict[str, Any]:
    return {FINAL_KEY: True, ERROR_KEY: f"{exc.__class__.__name__}: {exc}"[:500], "epoch": epoch}


def _final_result(res: dict[str, Any]) -> dict[str, Any]:
    out = scalar_metrics(res)
    out[FINAL_KEY] = True
    out["epoch"] = int(res.get("epochs_done", 0))
    for k in ("accuracy", "val_accuracy"):
        v = out.get(k)
        if isinstance(v, float) and not math.isfinite(v):
            out[ERROR_KEY] = f"non-finite {k}"
    return out


def _open_trial(base: dict, config: dict) -> tuple[dict, Path, str | None]:
    """What every trial does first, single-process or data-parallel.

    Args:
        base: the sweep's flat base config.
        config: the parameters Tune sampled for this trial.

    Returns:
        ``(cfg, trial_dir, resume_from)``: the trial's nested config, its directory (holding
        :data:`PID_FILE`), and the checkpoint Tune restarted it from, unpacked into
        ``trial_dir/resume_from`` (None on a first start).
    """
    from ray import tune

    cfg = apply_params(base, config)
    trial_dir = Path(tune.get_context().get_trial_dir())
    trial_dir.mkdir(parents=True, exist_ok=True)
    (trial_dir / PID_FILE).write_text(str(os.getpid()))
    resume_from = None
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        resume_dir = trial_dir / "resume_from"
        # A second restart must not find the first restart's files mixed into its checkpoint.
        shutil.rmtree(resume_dir, ignore_errors=True)
        resume_from = ckpt.to_directory(str(resume_dir))
    return cfg, trial_dir, resume_from


def _run_single(base: dict, shared: Any, trial_fn: TrialFn, config: dict) -> None:
    from ray import tune

    from kpid_core.errors import NonFiniteLossError
    from sweeps.threads import cap_loader_workers, use_allotted_threads

    cfg, trial_dir, resume_from = _open_trial(base, config)
    cap_loader_workers(cfg, use_allotted_threads())
    work = trial_dir / "ckpt_work"
    work.mkdir(exist_ok=True)
    placement = _placement()
    last_epoch = [0]

    def on_epoch(epoch: int, metrics: dict[str, Any]) -> None:
        last_epoch[0] = int(epoch)
        tune.report({**_epoch_result(epoch, metrics), **placement},
                    checkpoint=tune.Checkpoint.from_directory(str(work)))

    try:
        res = trial_fn(cfg, on_epoch, out_dir=trial_dir / "out", shared=shared,
                       checkpoint_dir=work, resume_from=resume_from)
    except NonFiniteLossError as exc:
        # Deterministic: a retry from the checkpoint would diverge again, so record and stop.
        tune.report({**_error_result(exc, last_epoch[0]), **placement})
        return
    tune.report({**_final_result(res), **placement})


def _train_loop(conf: dict) -> None:
    """Ray Train worker loop of a data-parallel trial (every rank runs the trial, rank 0 saves)."""
    import tempfile

    import ray.train

    from kpid_core.errors import NonFiniteLossError
    from sweeps.threads import cap_loader_workers, use_allotted_threads

    rank = ray.train.get_context().get_world_rank()
    cap_loader_workers(conf["cfg"], use_allotted_threads())
    work = Path(tempfile.mkdtemp(prefix=f"kpid-ddp{rank}-"))
    resume_from = conf.get("resume_from")

    def on_epoch(epoch: int, metrics: dict[str, Any]) -> None:
        ckpt = ray.train.Checkpoint.from_directory(str(work)) if rank == 0 else None
        ray.train.report(_epoch_result(epoch, metrics), checkpoint=ckpt)

    try:
        res = conf["trial_fn"](conf["cfg"], on_epoch, out_dir=Path(conf["out_dir"]) / f"rank{rank}",
                               shared=conf["shared"], checkpoint_dir=work, resume_from=resume_from)
    except NonFiniteLossError as exc:
        ray.train.report(_error_result(exc, 0))
        return
    ray.train.report({**_final_result(res), "workers": ray.train.get_context().get_world_size()})


def _run_ddp(base: dict, shared: Any, trial_fn: TrialFn, workers: int, cpw: float, gpw: float,
             config: dict) -> None:
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    cfg, trial_dir, resume_from = _open_trial(base, config)
    use_gpu = gpw > 0
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={"cfg": cfg, "shared": shared, "trial_fn": trial_fn,
                           "out_dir": str(trial_dir / "out"), "resume_from": resume_from},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpw, **({"GPU": gpw} if use_gpu else {})}),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            name="train", storage_path=str(trial_dir),
            callbacks=[TuneReportCallback()],
            # Workers that cannot be placed would otherwise be retried forever.
            failure_config=FailureConfig(max_failures=0, controller_failure_limit=1),
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error


def make_trainable(
    base: dict[str, Any],
    shared: Any,
    *,
    trial_fn: TrialFn | None = None,
    workers: int = 1,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
) -> Callable[[dict], None]:
    """A Tune function trainable closing over the flat ``base`` config and the prepared ``shared``
    artifacts. ``workers`` > 1: data-parallel through Ray Train's TorchTrainer."""
    fn = trial_fn or default_trial_fn
    if workers > 1:

        def kpid_trial_ddp(config: dict) -> None:
            _run_ddp(base, shared, fn, workers, cpus_per_worker, gpus_per_worker, config)

        return kpid_trial_ddp

    def kpid_trial(config: dict) -> None:
        _run_single(base, shared, fn, config)

    return kpid_trial
