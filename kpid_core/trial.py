"""One KPID trial end to end: teacher → channel importance → knapsack allocation → physical prune →
fine-tune under the teacher (CE + inner KD, + logits KD when ``distill.kd_weight`` > 0) → evaluate on the
held-out test split.

``prepare_shared`` computes what every trial of a sweep has in common (data split, teacher,
importance per metric) once; ``run_trial`` loads it instead of recomputing. The return fields and
the ``on_epoch`` contract are pinned in docs/CONTRACTS.md.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from kpid_core.config import TrialConfig
from kpid_core.engine.latency_table import LatencySettings, paired_latency
from kpid_core.engine.spec import cpu_state_dict
from kpid_core.errors import ConfigError, NonFiniteLossError, SpecError
from kpid_core.files import atomic_save, atomic_write_text
from kpid_core.models import build_model, default_taps, model_in_channels
from kpid_core.prune import PruneResult, output_channels, prune_to_budget, prune_to_kept, save_pruned
from kpid_core.training.data import DataBundle, build_data
from kpid_core.training.distill import DistillLoss
from kpid_core.training.teacher import Teacher, get_teacher, load_state_dict_file, model_kwargs
from kpid_core.training.train import evaluate, fit, resolve_device, seed_everything, train_flag

if TYPE_CHECKING:
    from kpid_core.engine.importance import ImportanceScores

__all__ = [
    "TRIAL_STATE_FILE",
    "SharedArtifacts",
    "final_epochs",
    "latency_settings",
    "load_teacher",
    "prepare_shared",
    "run_trial",
    "teacher_importance",
    "trial_data",
]

log = logging.getLogger("kpid_core.trial")
TRIAL_STATE_FILE = "trial_state.json"  # in checkpoint_dir: the prune result a resumed trial must reproduce
_SCORES_FILE = "scores.pt"


@dataclass
class SharedArtifacts:
    """Files a sweep computes once (paths are absolute): the data split (JSON), the teacher's state
    dict and its test accuracy, and one importance file per metric."""

    root: Path
    split: Path
    teacher: Path
    teacher_accuracy: float
    importance: dict[str, Path] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"root": str(self.root), "split": str(self.split), "teacher": str(self.teacher),
                "teacher_accuracy": self.teacher_accuracy,
                "importance": {k: str(v) for k, v in self.importance.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SharedArtifacts:
        """Build from :meth:`to_dict`'s fields (what Ray passes to a trial).

        Args:
            d: a mapping with ``root``, ``split``, ``teacher``, ``teacher_accuracy`` and optionally
                ``importance`` (metric name → path).

        Returns:
            The artifacts, with every path a :class:`~pathlib.Path`.
        """
        return cls(Path(d["root"]), Path(d["split"]), Path(d["teacher"]), float(d["teacher_accuracy"]),
                   {k: Path(v) for k, v in d.get("importance", {}).items()})

    @classmethod
    def load(cls, root: str | os.PathLike) -> SharedArtifacts:
        """Read ``root/shared.json`` written by :func:`prepare_shared`.

        Args:
            root: the directory :func:`prepare_shared` wrote.

        Returns:
            The artifacts recorded there. Raises SpecError when the file is missing or malformed.
        """
        p = Path(root) / "shared.json"
        try:
            return cls.from_dict(json.loads(p.read_text()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SpecError(f"shared artifacts {str(p)!r} are missing or malformed: {exc}") from None

    @classmethod
    def coerce(cls, shared: SharedArtifacts | Mapping[str, Any] | str | os.PathLike | None) -> SharedArtifacts | None:
        """Whatever a caller passed as ``shared`` (Ray hands trials strings and dicts) as artifacts.

        Args:
            shared: None, an instance, a :meth:`to_dict` mapping, or the directory holding ``shared.json``.

        Returns:
            None for None, else the artifacts.
        """
        if shared is None or isinstance(shared, SharedArtifacts):
            return shared
        if isinstance(shared, Mapping):
            return cls.from_dict(shared)
        return cls.load(shared)


def trial_data(cfg: TrialConfig, split: str | os.PathLike | None = None) -> DataBundle:
    """The data of a trial config, with the image channels its model takes.

    Args:
        cfg: the trial config (its ``data`` section and ``seed`` decide the split).
        split: a split file written by ``DataBundle.save_split`` (a sweep's shared split), or None
            to draw the split from the seed.

    Returns:
        The train/val/test loaders and the data's facts (``DataBundle``).
    """
    return build_data(cfg.data, cfg.seed, split=split, channels=model_in_channels(cfg.model.name))


def _example(data: DataBundle) -> torch.Tensor:
    return torch.zeros(1, *data.input_shape)


def teacher_importance(cfg: TrialConfig, teacher: nn.Module, data: DataBundle, metric: str,
                       device: torch.device) -> ImportanceScores:
    """Scores of ``metric`` on the teacher, over the first ``cfg.prune.importance_batches`` batches
    of the train loader reshuffled from ``cfg.seed``, so that shared and per-trial computation agree.

    Args:
        cfg: the trial config (seed and number of batches).
        teacher: the dense model to score.
        data: the trial's data (:func:`trial_data`).
        metric: a name from ``kpid_core.engine.importance.METRICS``.
        device: where to run the teacher.

    Returns:
        One score tensor per channel group.
    """
    from kpid_core.engine.importance import compute_importance

    gen = getattr(data.train.sampler, "generator", None)
    if gen is not None:
        gen.manual_seed(cfg.seed)
    return compute_importance(teacher, _example(data).to(device), metric, loader=data.train,
                              n_batches=cfg.prune.importance_batches, seed=cfg.seed, device=device)


def prepare_shared(cfg: Any, out_dir: str | os.PathLike, metrics: list[str] | None = None) -> SharedArtifacts:
    """Compute once what every trial of a sweep shares, as files under ``out_dir``.

    Args:
        cfg: the sweep's base trial config (a TrialConfig or a nested dict).
        out_dir: the directory to write (created); importance files already there are reused.
        metrics: importance metrics to score (one file each); default ``[cfg.prune.metric]``.

    Returns:
        The paths of the data split, the teacher's weights and each importance file, with the
        teacher's test accuracy (also recorded in ``out_dir/shared.json``).
    """
    cfg = TrialConfig.coerce(cfg)
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.train.device)
    data = trial_data(cfg)
    split = data.save_split(out / "split.json")
    teacher = get_teacher(cfg, data, device=device)
    tpath = out / "teacher.pt"
    atomic_save(cpu_state_dict(teacher.model), tpath)
    atomic_write_text(out / "teacher.json", json.dumps({
        "accuracy": teacher.accuracy, "model": cfg.model.name,
        "kwargs": model_kwargs(cfg, data.input_shape[0]), "source": teacher.source}))
    imp: dict[str, Path] = {}
    for metric in metrics or [cfg.prune.metric]:
        cfg_m = cfg.with_overrides({"prune.metric": metric})  # validates the metric name
        path = out / "importance" / f"{metric}.pt"
        if not (path.is_file() and _scores_fit(_load_scores(path), cfg_m)):  # absent, or over other batches
            teacher_importance(cfg_m, teacher.model, data, metric, device).save(path)
        imp[metric] = path
    shared = SharedArtifacts(out, split, tpath, float(teacher.accuracy or 0.0), imp)
    atomic_write_text(out / "shared.json", json.dumps(shared.to_dict(), indent=1))
    return shared


def load_teacher(cfg: TrialConfig, data: DataBundle, shared: SharedArtifacts | None,
                 device: torch.device) -> Teacher:
    """The trial's teacher: the sweep's shared weights when given, else :func:`~kpid_core.training.teacher.get_teacher`
    (trained, cached, from a checkpoint or pretrained, as ``cfg.teacher`` says).

    Args:
        cfg: the trial config (model and teacher sections).
        data: the trial's data (its classes and input channels shape the model).
        shared: the sweep's artifacts, or None.
        device: where the teacher is put, in eval mode.

    Returns:
        The teacher model with its test accuracy and where it came from.
    """
    if shared is None:
        return get_teacher(cfg, data, device=device)
    model = build_model(cfg.model.name, num_classes=data.num_classes, **model_kwargs(cfg, data.input_shape[0]))
    load_state_dict_file(shared.teacher, model, what="shared teacher")
    return Teacher(model.to(device).eval(), shared.teacher_accuracy, shared.teacher, "shared")


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


_STUDENT_FILE = "progressive_student.pt"  # in checkpoint_dir: the student a progressive prune handed over


def _run(cfg: TrialConfig, on_epoch, out: Path | None, shared: SharedArtifacts | None, ckdir: Path | None,
         resume: bool) -> dict[str, Any]:
    t_start = time.perf_counter()
    times: dict[str, float] = {}
    seed_everything(cfg.seed)
    device = resolve_device(cfg.train.device)
    data = trial_data(cfg, split=shared.split if shared is not None else None)
    log.info("trial: %s on %s, budget %.3f, metric %s, device %s", cfg.model.name, cfg.data.name,
             cfg.prune.budget, cfg.prune.metric, device)

    _check_taps(cfg, data)
    t = time.perf_counter()
    teacher = load_teacher(cfg, data, shared, device)
    times["teacher_s"] = time.perf_counter() - t
    result, times = _prune_phase(cfg, teacher, data, shared, ckdir, resume, device, times)
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

    loss = _distill_loss(cfg, student, teacher.model.to(device), result, data, device)
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


def _check_taps(cfg: TrialConfig, data: DataBundle) -> None:
    """``distill.taps`` must name modules of the model: checked on an untrained copy before the
    teacher is trained, so a typo costs a second, not a teacher and a prune."""
    if cfg.distill.taps is None:
        return
    kw = model_kwargs(cfg, data.input_shape[0])
    names = {n for n, _ in build_model(cfg.model.name, num_classes=data.num_classes, **kw).named_modules() if n}
    bad = [t for t in cfg.distill.taps if t not in names]
    if bad:
        tops = sorted({n.split(".")[0] for n in names})
        raise ConfigError(f"distill.taps: no module {bad[0]!r} in {cfg.model.name}; taps are module names "
                          f"(model.named_modules()), e.g. {', '.join(tops[:8])}")


def _distill_loss(cfg: TrialConfig, student: nn.Module, teacher: nn.Module, result: PruneResult, data: DataBundle,
                  device: torch.device) -> DistillLoss:
    """The trial's loss, attached to ``student`` and ``teacher`` (inner KD at the model's taps)."""
    taps = cfg.distill.taps if cfg.distill.taps is not None else default_taps(cfg.model.name)
    kept = {tap: output_channels(result, tap) for tap in taps}
    k = cfg.distill
    loss = DistillLoss(ce_weight=k.ce_weight, kd_weight=k.kd_weight, inner_weight=k.inner_weight,
                       temperature=k.temperature, kd_form=k.kd_form, match=k.match,
                       label_smoothing=cfg.train.label_smoothing)
    loss.attach(student, teacher, taps, kept, example_input=next(iter(data.val))[0][:2].to(device)
                if k.match == "projection" else None)
    return loss


def _shared_scores(cfg: TrialConfig, shared: SharedArtifacts | None):
    """The sweep's shared scores of the trial's metric, if they were computed over as many batches as
    this trial asks for; None otherwise (a sweep that varies ``prune.importance_batches``), and the
    trial scores its teacher itself. The seed is not compared: shared artifacts (teacher, split,
    scores) are the base config's whatever seed a trial draws."""
    if shared is None or cfg.prune.metric not in shared.importance:
        return None
    scores = _load_scores(shared.importance[cfg.prune.metric])
    return scores if _scores_fit(scores, cfg) else None


def _load_scores(path: Path):
    """An importance file (a corrupt one raises SpecError naming it)."""
    from kpid_core.engine.importance import ImportanceScores

    return ImportanceScores.load(path)


def _scores_fit(scores: Any, cfg: TrialConfig) -> bool:
    """Whether stored ``scores`` answer ``cfg``: the same metric over as many batches (files written
    without the batch count are trusted)."""
    made = scores.meta.get("n_batches", cfg.prune.importance_batches)
    return scores.metric == cfg.prune.metric and made == cfg.prune.importance_batches


def _prune_phase(cfg: TrialConfig, teacher: Teacher, data: DataBundle, shared: SharedArtifacts | None,
                 ckdir: Path | None, resume: bool, device: torch.device, times: dict[str, float]
                 ) -> tuple[PruneResult, dict[str, float]]:
    """Scores, allocation and surgery (and, with ``prune.steps`` > 1, the intermediate fine-tunes);
    on resume the checkpoint's kept channels are reproduced (one shot) or rebuilt (progressive)."""
    from kpid_core.engine.importance import ImportanceScores

    t = time.perf_counter()
    state_path = ckdir / TRIAL_STATE_FILE if ckdir is not None else None
    saved: dict[str, Any] | None = None
    if resume and state_path is not None and state_path.is_file():
        saved = json.loads(state_path.read_text())
        scores = ImportanceScores.load(ckdir / _SCORES_FILE)
    else:
        scores = _shared_scores(cfg, shared) or teacher_importance(cfg, teacher.model, data,
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
            by_metric[metric] = compute_importance(model, _example(data), metric, seed=cfg.seed)
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
    return prune_to_budget(model, _example(data), budget, scores, min_keep=p.min_keep, allocation=p.allocation,
                           solver=p.solver, normalize=p.normalize, linearize=p.linearize, spread=spread,
                           cost=p.cost, round_to=p.round_to,
                           latency=latency_settings(cfg, device, table=True) if p.cost == "latency" else None,
                           model_name=cfg.model.name, model_kwargs=model_kwargs(cfg, data.input_shape[0]),
                           log=log.info)


def _rebuild(cfg: TrialConfig, dense: nn.Module, data: DataBundle, kept: dict[str, list[int]]) -> PruneResult:
    """``dense`` cut to exactly ``kept``, recorded with the trial's budget and allocation."""
    result = prune_to_kept(dense, _example(data), kept, allocation=cfg.prune.allocation, min_keep=cfg.prune.min_keep,
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
        loss = _distill_loss(cfg, student, teacher.model.to(device), result, data, device)
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
        dense, _example(data), cfg.prune.budget, cfg.prune.steps, scores,
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
    dev = resolve_device(lat.device if lat.device != "auto" else device)
    return LatencySettings(device=str(dev), batch=lat.batch, threads=lat.threads,
                           amp=train_flag(cfg.train.amp, dev) and dev.type == "cuda",
                           channels_last=train_flag(cfg.train.channels_last, dev),
                           repeats=lat.table_repeats if table else lat.repeats, cache_dir=lat.cache_dir,
                           land_rounds=lat.land_rounds, land_tolerance=lat.land_tolerance,
                           land_repeats=lat.land_repeats)


def _jsonable(kept: Mapping[str, Any]) -> dict[str, list[int]]:
    return {str(k): [int(i) for i in v] for k, v in kept.items()}
