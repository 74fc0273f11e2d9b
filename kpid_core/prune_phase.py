"""A trial's prune phase: the teacher's channel scores, the allocation (one knapsack cut, the best of
``prune.candidates`` cuts, or a progressive prune with fine-tunes between its cuts) and the surgery,
with the state a resumed trial needs to cut exactly the same channels again; and the trial's loss
(CE + inner KD, + logits KD), which the fine-tunes between progressive cuts use too.

``kpid_core.trial`` runs it between loading the teacher and fine-tuning the student.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kpid_core.config import TrialConfig
from kpid_core.engine.latency_table import LatencySettings
from kpid_core.engine.spec import cpu_state_dict
from kpid_core.errors import ConfigError, SpecError
from kpid_core.files import atomic_save
from kpid_core.models import default_taps
from kpid_core.prune import PruneResult, output_channels, prune_to_budget, prune_to_kept
from kpid_core.shared import SharedArtifacts, example_input, shared_scores, teacher_importance
from kpid_core.training.data import DataBundle
from kpid_core.training.distill import DistillLoss
from kpid_core.training.teacher import Teacher, load_state_dict_file, model_kwargs
from kpid_core.training.train import fit, resolve_device, train_flag

__all__ = ["TRIAL_STATE_FILE", "distill_loss", "latency_settings", "prune_phase"]

log = logging.getLogger("kpid_core.trial")  # the trial's log (its trial.log), as kpid_core.trial
TRIAL_STATE_FILE = "trial_state.json"  # in checkpoint_dir: the prune result a resumed trial must reproduce
_SCORES_FILE = "scores.pt"
_STUDENT_FILE = "progressive_student.pt"  # in checkpoint_dir: the student a progressive prune handed over


def distill_loss(cfg: TrialConfig, student: nn.Module, teacher: nn.Module, result: PruneResult, data: DataBundle,
                 device: torch.device) -> DistillLoss:
    """The trial's loss, attached to ``student`` and ``teacher`` (inner KD at the model's taps).

    Args:
        cfg: the trial config (its ``distill`` section and label smoothing).
        student: the pruned model being trained.
        teacher: the dense model.
        result: the prune that made ``student`` (which teacher channels each tap kept).
        data: the trial's data (a batch for ``distill.match=projection``).
        device: where both models run.

    Returns:
        The loss; call its ``detach()`` after training.
    """
    taps = cfg.distill.taps if cfg.distill.taps is not None else default_taps(cfg.model.name)
    kept = {tap: output_channels(result, tap) for tap in taps}
    k = cfg.distill
    loss = DistillLoss(ce_weight=k.ce_weight, kd_weight=k.kd_weight, inner_weight=k.inner_weight,
                       temperature=k.temperature, kd_form=k.kd_form, match=k.match,
                       label_smoothing=cfg.train.label_smoothing)
    loss.attach(student, teacher, taps, kept, example_input=next(iter(data.val))[0][:2].to(device)
                if k.match == "projection" else None)
    return loss


def prune_phase(cfg: TrialConfig, teacher: Teacher, data: DataBundle, shared: SharedArtifacts | None,
                ckdir: Path | None, resume: bool, device: torch.device, times: dict[str, float]
                ) -> tuple[PruneResult, dict[str, float]]:
    """Scores, allocation and surgery (and, with ``prune.steps`` > 1, the intermediate fine-tunes);
    on resume the checkpoint's kept channels are reproduced (one shot) or rebuilt (progressive).

    Args:
        cfg: the trial config.
        teacher: the dense model with its accuracy (left unchanged: the cut is made on a copy).
        data: the trial's data.
        shared: the sweep's artifacts (their scores are used when they answer ``cfg``), or None.
        ckdir: the trial's checkpoint directory (the kept channels and scores are written there
            before fine-tuning), or None.
        resume: continue from ``ckdir``: cut the channels it recorded, or fail with SpecError if the
            cut differs.
        device: where scores and candidates are computed.
        times: the trial's timings so far (``teacher_s``).

    Returns:
        The prune result and the timings with ``importance_s`` and ``prune_s`` added (a resumed
        trial's are those of its first run).
    """
    from kpid_core.engine.importance import ImportanceScores

    t = time.perf_counter()
    state_path = ckdir / TRIAL_STATE_FILE if ckdir is not None else None
    saved: dict[str, Any] | None = None
    if resume and state_path is not None and state_path.is_file():
        saved = json.loads(state_path.read_text())
        scores = ImportanceScores.load(ckdir / _SCORES_FILE)
    else:
        scores = shared_scores(cfg, shared) or teacher_importance(cfg, teacher.model, data,
                                                                   cfg.prune.metric, device)
    times["importance_s"] = time.perf_counter() - t

    t = time.perf_counter()
    dense = copy.deepcopy(teacher.model).cpu()
    if saved is not None and (cfg.prune.steps > 1 or cfg.prune.candidates > 1):
        result = _rebuild(cfg, dense, data, saved["kept"])
        if (ckdir / _STUDENT_FILE).is_file():
            load_state_dict_file(ckdir / _STUDENT_FILE, result.model, what="progressive student checkpoint")
    elif cfg.prune.steps > 1:
        result = _progressive(cfg, dense, teacher, data, scores, device, times)
    else:
        result = _prune_once(cfg, dense, data, scores, cfg.prune.budget, device)
    times["prune_s"] = time.perf_counter() - t - times.get("step_finetune_s", 0.0)
    if saved is not None and saved["kept"] != _jsonable(result.kept):
        raise SpecError(f"resume: the prune result differs from the checkpoint in {str(ckdir)!r} "
                        "(different teacher, scores or config?)")
    if state_path is not None and saved is None:
        state_path.parent.mkdir(parents=True, exist_ok=True)
        scores.save(ckdir / _SCORES_FILE)
        if cfg.prune.steps > 1:
            atomic_save(cpu_state_dict(result.model), ckdir / _STUDENT_FILE)
        state_path.write_text(json.dumps({"kept": _jsonable(result.kept), "config": cfg.to_dict(),
                                          "times": times}))
    elif saved is not None:
        times = {**saved["times"], "teacher_s": times["teacher_s"] + saved["times"].get("teacher_s", 0.0)}
    return result, times


def _prune_once(cfg: TrialConfig, model: nn.Module, data: DataBundle, scores: Any, budget: float,
                device: torch.device) -> PruneResult:
    """One knapsack cut of ``model`` to ``budget`` of its own cost, with the config's allocation
    (a knapsack with ``prune.candidates`` > 1: the best of that many by :mod:`kpid_core.engine.selection`)."""
    if cfg.prune.candidates > 1 and cfg.prune.allocation == "knapsack":
        return _select(cfg, model, data, scores, budget, device)
    return _cut_at(cfg, model, data, scores, budget, device, cfg.prune.spread)


def _select(cfg: TrialConfig, model: nn.Module, data: DataBundle, scores: Any, budget: float,
            device: torch.device) -> PruneResult:
    """The candidate allocation with the lowest training loss after adaptive batch norm; the table
    of candidates goes into the spec (``selection``)."""
    from kpid_core.engine.importance import compute_importance
    from kpid_core.engine.selection import candidate_plan, select_allocation, training_batches
    from kpid_core.training.distributed import agree_on_index

    p = cfg.prune
    by_metric = {p.metric: scores}

    def scores_for(metric: str) -> Any:
        if metric not in by_metric:  # the other ranking: data-free L1 (L2 beside L1)
            by_metric[metric] = compute_importance(model, example_input(data), metric, seed=cfg.seed)
        return by_metric[metric]

    recal, score = training_batches(data.train, p.candidate_batches, cfg.seed)
    result, rows = select_allocation(
        lambda s, spread: _cut_at(cfg, model, data, s, budget, device, spread),
        candidate_plan(p.metric, p.spread, p.candidates, cfg.seed, other_metric="l2" if p.metric == "l1" else "l1"),
        scores_for, recal, score, device,
        agree=agree_on_index, log=log.info)
    result.spec["selection"] = rows
    return result


def _cut_at(cfg: TrialConfig, model: nn.Module, data: DataBundle, scores: Any, budget: float,
            device: torch.device, spread: float) -> PruneResult:
    p = cfg.prune
    return prune_to_budget(model, example_input(data), budget, scores, min_keep=p.min_keep, allocation=p.allocation,
                           solver=p.solver, normalize=p.normalize, linearize=p.linearize, spread=spread,
                           cost=p.cost, round_to=p.round_to,
                           latency=latency_settings(cfg, device, table=True) if p.cost == "latency" else None,
                           model_name=cfg.model.name, model_kwargs=model_kwargs(cfg, data.input_shape[0]),
                           log=log.info)


def _rebuild(cfg: TrialConfig, dense: nn.Module, data: DataBundle, kept: dict[str, list[int]]) -> PruneResult:
    """``dense`` cut to exactly ``kept``, recorded with the trial's budget and allocation."""
    result = prune_to_kept(dense, example_input(data), kept, allocation=cfg.prune.allocation, min_keep=cfg.prune.min_keep,
                           model_name=cfg.model.name, model_kwargs=model_kwargs(cfg, data.input_shape[0]))
    result.budget = result.spec["budget"] = cfg.prune.budget
    result.spec["steps"] = cfg.prune.steps
    return result


def _progressive(cfg: TrialConfig, dense: nn.Module, teacher: Teacher, data: DataBundle, scores: Any,
                 device: torch.device, times: dict[str, float]) -> PruneResult:
    """:func:`~kpid_core.progressive.progressive_prune` with the trial's allocation, metric and loss."""
    from kpid_core.progressive import progressive_prune

    if cfg.prune.cost != "macs":
        raise ConfigError("prune.steps > 1 needs prune.cost=macs (a progressive prune composes MAC budgets)")

    def tune(result: PruneResult, step: int) -> None:
        student = result.model.to(device)
        loss = distill_loss(cfg, student, teacher.model.to(device), result, data, device)
        fr = fit(student, teacher.model, data, loss, cfg.train, seed=cfg.seed + 7919 * (step + 1),
                 epochs=cfg.prune.step_epochs, desc=f"step {step + 1}/{cfg.prune.steps}")
        loss.detach()
        times["step_finetune_s"] = times.get("step_finetune_s", 0.0) + fr.seconds
        log.info("progressive step %d/%d: val accuracy %.4f after %d epoch(s)", step + 1, cfg.prune.steps,
                 fr.last.get("accuracy", float("nan")) if fr.history else float("nan"), fr.epochs_done)
        result.model = student.cpu()

    def rescore(student: nn.Module) -> Any:
        return teacher_importance(cfg, student.to(device), data, cfg.prune.metric, device)

    return progressive_prune(
        dense, example_input(data), cfg.prune.budget, cfg.prune.steps, scores,
        prune=lambda m, b, s: _prune_once(cfg, m.cpu(), data, s, b, device), rescore=rescore, tune=tune,
        rebuild=lambda kept: _rebuild(cfg, dense, data, kept), log=log.info)


def latency_settings(cfg: TrialConfig, device: torch.device, *, table: bool = False) -> LatencySettings:
    """The latency measurement settings of a trial: ``cfg.latency`` on the trial's device (unless
    ``latency.device`` names one), with the trial's AMP and channels_last choices.

    Args:
        cfg: the trial config.
        device: the trial's resolved device.
        table: settings for measuring a latency table (``table_repeats`` rounds) rather than the
            dense/pruned timing (``repeats``).

    Returns:
        The settings.
    """
    lat = cfg.latency
    dev = resolve_device(lat.device if lat.device != "auto" else device, "latency.device")
    return LatencySettings(device=str(dev), batch=lat.batch, threads=lat.threads,
                           amp=train_flag(cfg.train.amp, dev) and dev.type == "cuda",
                           channels_last=train_flag(cfg.train.channels_last, dev),
                           repeats=lat.table_repeats if table else lat.repeats, cache_dir=lat.cache_dir,
                           land_rounds=lat.land_rounds, land_tolerance=lat.land_tolerance,
                           land_repeats=lat.land_repeats, min_sample_s=lat.min_sample_s)


def _jsonable(kept: Mapping[str, Any]) -> dict[str, list[int]]:
    return {str(k): [int(i) for i in v] for k, v in kept.items()}
