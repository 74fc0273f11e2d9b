"""One KPID trial end to end: teacher → channel importance → knapsack allocation → physical prune →
fine-tune under the teacher (CE + inner KD, + logits KD when ``distill.kd_weight`` > 0) → evaluate on the
held-out test split.

What every trial of a sweep shares (data split, teacher, importance per metric) is computed once by
``prepare_shared`` (kpid_core/shared.py); ``run_trial`` loads it instead of recomputing. The prune
phase (scores, allocation, surgery, the state a resume needs) is kpid_core/prune_phase.py. The return
fields and the ``on_epoch`` contract are pinned in docs/CONTRACTS.md; this module re-exports the
public names of both (``prepare_shared``, ``SharedArtifacts``, ``latency_settings``, ...).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kpid_core.config import TrialConfig
from kpid_core.engine.latency_table import paired_latency
from kpid_core.errors import ConfigError, NonFiniteLossError, SpecError
from kpid_core.models import build_model
from kpid_core.prune import save_pruned
from kpid_core.prune_phase import TRIAL_STATE_FILE, distill_loss, latency_settings, prune_phase
from kpid_core.shared import SharedArtifacts, load_teacher, prepare_shared, teacher_importance, trial_data
from kpid_core.training.teacher import model_kwargs
from kpid_core.training.train import evaluate, fit, resolve_device, seed_everything

__all__ = [
    "TRIAL_STATE_FILE",
    "SharedArtifacts",
    "check_taps",
    "final_epochs",
    "latency_settings",
    "load_teacher",
    "prepare_shared",
    "run_trial",
    "teacher_importance",
    "trial_data",
]

log = logging.getLogger("kpid_core.trial")


class _FileLog:
    """Route the ``kpid_core`` loggers to ``path`` for the duration of a trial."""

    def __init__(self, path: Path | None):
        self.path, self.handler = path, None

    def __enter__(self):
        if self.path is not None:
            self.handler = logging.FileHandler(self.path)
            self.handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
            root = logging.getLogger("kpid_core")
            root.addHandler(self.handler)
            self._level = root.level
            if root.level == logging.NOTSET or root.level > logging.INFO:
                root.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc):
        if self.handler is not None:
            root = logging.getLogger("kpid_core")
            root.removeHandler(self.handler)
            root.setLevel(self._level)
            self.handler.close()


def run_trial(cfg: Any, on_epoch: Callable[[int, dict], None] | None = None, *,
              out_dir: str | os.PathLike | None = None, shared: Any = None,
              checkpoint_dir: str | os.PathLike | None = None,
              resume_from: str | os.PathLike | None = None) -> dict[str, Any]:
    """Run one trial: teacher, importance, allocation, prune, fine-tune under the teacher, test.

    Args:
        cfg: the trial config (a TrialConfig or a nested dict).
        on_epoch: ``on_epoch(epoch, metrics)`` after each fine-tuning epoch (see docs/CONTRACTS.md).
        out_dir: where to write ``metrics.json``, ``model/`` (``save_pruned``) and ``trial.log``, or None.
        shared: :func:`prepare_shared`'s artifacts (an instance, its dict, or its directory); with
            them the trial neither trains a teacher nor computes importance.
        checkpoint_dir: after each epoch the full training state is written there (before
            ``on_epoch`` is called).
        resume_from: such a directory; the trial continues from it (copied into ``checkpoint_dir``
            first when both are given) and ends with the metrics of an uninterrupted run.

    Returns:
        The trial's metrics: test ``accuracy`` (0–1), ``val_accuracy``, ``teacher_accuracy``, MACs and
        params before/after, ``budget``, ``metric``, ``status``, ``epochs_done``, ``times`` (seconds),
        ``config``. Raises NonFiniteLossError on a NaN/Inf loss (``metrics.json`` then records
        ``status: "non_finite_loss"``).
    """
    cfg = TrialConfig.coerce(cfg)
    shared = SharedArtifacts.coerce(shared)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    ckdir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if resume_from is not None:
        src = Path(resume_from)
        if not (src / TRIAL_STATE_FILE).is_file():
            raise SpecError(f"resume_from {str(src)!r} holds no trial checkpoint ({TRIAL_STATE_FILE} missing)")
        if ckdir is None:
            ckdir = src
        elif ckdir.resolve() != src.resolve():
            shutil.copytree(src, ckdir, dirs_exist_ok=True)
    with _FileLog(out / "trial.log" if out is not None else None):
        try:
            return _run(cfg, on_epoch, out, shared, ckdir, resume_from is not None)
        except NonFiniteLossError as exc:
            log.error("trial stopped: %s", exc)
            if out is not None:
                (out / "metrics.json").write_text(json.dumps(
                    {"status": "non_finite_loss", "error": str(exc), "config": cfg.to_dict()}, indent=1))
            raise




def _run(cfg: TrialConfig, on_epoch, out: Path | None, shared: SharedArtifacts | None, ckdir: Path | None,
         resume: bool) -> dict[str, Any]:
    t_start = time.perf_counter()
    times: dict[str, float] = {}
    seed_everything(cfg.seed)
    device = resolve_device(cfg.train.device)
    data = trial_data(cfg, split=shared.split if shared is not None else None)
    log.info("trial: %s on %s, budget %.3f, metric %s, device %s", cfg.model.name, cfg.data.name,
             cfg.prune.budget, cfg.prune.metric, device)

    check_taps(cfg, data.input_shape[0], data.num_classes)  # before the teacher: a typo costs a second, not a teacher
    t = time.perf_counter()
    teacher = load_teacher(cfg, data, shared, device)
    times["teacher_s"] = time.perf_counter() - t
    result, times = prune_phase(cfg, teacher, data, shared, ckdir, resume, device, times)
    student = result.model.to(device)
    facts = {"macs": int(result.macs_after), "macs_dense": int(result.macs_before),
             "macs_ratio": result.macs_after / result.macs_before, "params": int(result.params_after),
             "params_dense": int(result.params_before), "budget": cfg.prune.budget}
    if cfg.prune.cost != "macs":  # a MAC-budgeted trial reports exactly what it always did
        facts.update(cost=cfg.prune.cost, cost_ratio=result.cost_ratio)
    log.info("pruned: %d -> %d MACs (ratio %.4f, budget %.3f)", facts["macs_dense"], facts["macs"],
             facts["macs_ratio"], cfg.prune.budget)

    done_before = cfg.train.epochs - final_epochs(cfg)  # a progressive prune's intermediate epochs

    def epoch_cb(epoch: int, m: dict) -> None:  # epochs count from the first cut, so ASHA compares like with like
        if on_epoch is not None:
            on_epoch(epoch + done_before, {**m, "epoch": epoch + done_before,
                                           **{x: facts[x] for x in ("macs", "macs_ratio", "budget", "params")}})

    loss = distill_loss(cfg, student, teacher.model.to(device), result, data, device)
    fr = fit(student, teacher.model, data, loss, cfg.train, on_epoch=epoch_cb, checkpoint_dir=ckdir,
             resume=resume and ckdir is not None and (ckdir / TRIAL_STATE_FILE).is_file(), seed=cfg.seed,
             epochs=final_epochs(cfg), desc="finetune")
    loss.detach()
    times["finetune_s"] = fr.seconds + times.get("step_finetune_s", 0.0)
    student.eval()
    acc = evaluate(student, data.test, device)
    val_acc = fr.last["accuracy"] if fr.history else evaluate(student, data.val, device)
    if cfg.latency.measure == "on" or (cfg.latency.measure == "auto" and cfg.prune.cost == "latency"):
        t = time.perf_counter()
        facts.update(paired_latency(teacher.model, student, data.input_shape, latency_settings(cfg, device)))
        times["latency_s"] = time.perf_counter() - t
        log.info("latency on %s (batch %d): dense %.2f ms, pruned %.2f ms (ratio %.3f)", facts["latency_device"],
                 cfg.latency.batch, facts["latency_dense_ms"], facts["latency_ms"], facts["latency_ratio"])
    times["total_s"] = time.perf_counter() - t_start
    metrics = {"accuracy": acc, "val_accuracy": val_acc, "teacher_accuracy": teacher.accuracy, **facts,
               "metric": cfg.prune.metric, "status": "finished",
               "epochs_done": fr.epochs_done + done_before,
               "times": times, "config": cfg.to_dict()}
    log.info("trial finished: test acc %.4f (teacher %.4f), MACs ratio %.4f", acc, teacher.accuracy or 0.0,
             facts["macs_ratio"])
    if out is not None:
        result.model = student.cpu()
        save_pruned(result, out / "model", overwrite=True)  # library call: a re-run replaces its own output
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def final_epochs(cfg: TrialConfig) -> int:
    """Fine-tuning epochs after the last cut: ``train.epochs`` less those of a progressive prune's
    intermediate steps (so that one-shot and progressive trials train equally long).

    Args:
        cfg: the trial config.

    Returns:
        ``train.epochs - (prune.steps - 1) * prune.step_epochs``.
    """
    return cfg.train.epochs - (cfg.prune.steps - 1) * cfg.prune.step_epochs


def check_taps(cfg: TrialConfig, in_channels: int | None = None, num_classes: int = 10) -> None:
    """Raise ``ConfigError`` in one line when ``cfg.distill.taps`` names a module the model lacks.

    Builds an untrained copy of ``cfg.model`` (module names do not depend on the class count or,
    for the models that adapt to it, the input channels), so a caller that trains the teacher itself,
    as the benchmarks do, can check a config before spending anything on it.

    Args:
        cfg: the trial config (its ``model`` and ``distill.taps``; nothing to check when taps is null).
        in_channels: the data's channel count, for models that adapt to it (None: the model's own).
        num_classes: classes of the copy built.
    """
    if cfg.distill.taps is None:
        return
    kw = model_kwargs(cfg, in_channels)
    names = {n for n, _ in build_model(cfg.model.name, num_classes=num_classes, **kw).named_modules() if n}
    bad = [t for t in cfg.distill.taps if t not in names]
    if bad:
        tops = sorted({n.split(".")[0] for n in names})
        raise ConfigError(f"distill.taps: no module {bad[0]!r} in {cfg.model.name}; taps are module names "
                          f"(model.named_modules()), e.g. {', '.join(tops[:8])}")
