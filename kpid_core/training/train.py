"""Fine-tuning loop: SGD/AdamW + cosine schedule, AMP/channels_last on CUDA, checkpoint/resume.

Determinism: every epoch reseeds torch's RNG and the train loader's shuffling generator from
``(seed, epoch)``, so an epoch's batches and augmentations do not depend on what ran before. With
the model/optimizer/scheduler states in the checkpoint, a resumed run on CPU ends with the same
weights and metrics as an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from kpid_core.config import TrainConfig, as_section
from kpid_core.errors import ConfigError, NonFiniteLossError, SpecError
from kpid_core.files import atomic_save
from kpid_core.training.distill import DistillLoss
from kpid_core.training.distributed import (
    average_gradients_and_loss,
    broadcast_parameters,
    eval_shard,
    mean_over_ranks,
    reduce_counts,
    shard_train_loader,
    sync_buffers,
    world,
)

__all__ = ["CHECKPOINT_FILE", "FitResult", "evaluate", "fit", "lr_factor", "resolve_device", "seed_everything", "train_flag"]

log = logging.getLogger("kpid_core.training.train")
CHECKPOINT_FILE = "train_state.pt"
EpochCallback = Callable[[int, dict], None]


@dataclass
class FitResult:
    """What :func:`fit` did: epochs completed, the per-epoch metrics, seconds spent."""

    epochs_done: int
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def last(self) -> dict:
        return self.history[-1] if self.history else {}


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str | torch.device = "auto", field: str = "train.device") -> torch.device:
    """The torch device a config names.

    Args:
        device: ``"auto"`` (cuda if available, else cpu), a device string or a ``torch.device``.
        field: the config key to name when a string asks for CUDA on a machine without it.

    Returns:
        The device. Raises ConfigError for ``cuda`` where torch sees no CUDA device (checked where the
        work runs, not when the config is read: a sweep's driver may have no GPU while its workers do).
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{field}={device}: CUDA is not available here (torch {torch.__version__}); "
                          "allowed: auto, cpu")
    return dev


def train_flag(value: str, device: torch.device) -> bool:
    """Resolve an ``auto``/``on``/``off`` switch (``train.amp``, ``train.channels_last``).

    Args:
        value: ``auto``, ``on`` or ``off``.
        device: the resolved device (``auto`` means on for CUDA, off otherwise).

    Returns:
        Whether the switch is on.
    """
    return value == "on" or (value == "auto" and device.type == "cuda")


_flag = train_flag


def _progress(iterable, desc: str, total: int | None = None, disable: bool = False):
    # disable=None: no bar when stderr is not a TTY (log files stay free of carriage-return spam);
    # mininterval keeps a TTY's bar from redrawing on every batch.
    return tqdm(iterable, desc=desc, total=total, leave=False, mininterval=2.0, disable=True if disable else None,
                file=sys.stderr, dynamic_ncols=True)


@torch.no_grad()
def evaluate(model: nn.Module, loader, device: str | torch.device | None = None,
             channels_last: bool = False, amp: bool = False) -> float:
    """Top-1 accuracy of ``model`` on ``loader``, in [0, 1].

    Inside an initialised process group (data-parallel training) each rank evaluates a disjoint
    share of a ``DataLoader``'s dataset and the counts are summed, so every rank returns the same
    number for the whole set. Every rank must call it then.
    """
    device = resolve_device(device or next(model.parameters()).device)
    was = model.training
    model.eval()
    correct = total = 0
    for x, y in (eval_shard(loader) if isinstance(loader, DataLoader) else loader):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, enabled=amp):
            out = model(x)
        correct += int((out.argmax(1) == y).sum())
        total += int(y.numel())
    model.train(was)
    correct, total = reduce_counts(correct, total, device)
    return correct / max(total, 1)


def _raise_non_finite(desc: str, parts: dict, epoch: int, lr: float) -> None:
    raise NonFiniteLossError(f"{desc}: non-finite loss ({parts['loss']}) at epoch {epoch + 1}, parts {parts}; "
                             f"lower the learning rate (lr={lr})")


def _optimizer(params, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    wd = float(cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    return torch.optim.SGD(params, lr=lr, momentum=float(cfg.momentum), weight_decay=wd,
                           nesterov=False)


def _rng_state() -> dict:
    # Plain ints and tensors only, so the checkpoint loads with ``weights_only=True``.
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    st = {"python": [int(version), torch.tensor(mt, dtype=torch.int64), gauss],
          "numpy": [str(kind), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                    float(cached)],
          "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    version, mt, gauss = st["python"]
    random.setstate((int(version), tuple(int(v) for v in mt.tolist()), gauss))
    kind, keys, pos, has_gauss, cached = st["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


class _Run(NamedTuple):
    """What one :func:`fit` call trains with, set up once and shared by its epochs."""

    device: torch.device
    amp: bool
    channels_last: bool
    epochs: int
    lr: float
    seed: int
    rank: int
    n_ranks: int
    desc: str


def fit(student: nn.Module, teacher: nn.Module | None, loaders: Any, loss: DistillLoss, cfg: Any,
        on_epoch: EpochCallback | None = None, checkpoint_dir: str | os.PathLike | None = None,
        resume: bool = False, *, seed: int = 0, lr: float | None = None, epochs: int | None = None,
        desc: str = "train") -> FitResult:
    """Train ``student`` with ``loss`` (already :meth:`~DistillLoss.attach`-ed to the teacher).

    After each epoch: validate, write ``checkpoint_dir/train_state.pt`` (if given), then call
    ``on_epoch``. Inside an initialised ``torch.distributed`` group of N > 1 ranks (Ray Train,
    torchrun) every rank calls ``fit`` with the same arguments and it trains data-parallel: see
    :mod:`kpid_core.training.distributed` (same global batch, gradients averaged, every rank ends with the
    same weights and metrics).

    Args:
        student: the model to train (moved to the config's device).
        teacher: the frozen teacher, or None (plain training, e.g. of the teacher itself).
        loaders: anything with ``.train`` and ``.val`` loaders (a ``DataBundle``).
        loss: the distillation loss; its projections are trained too.
        cfg: a ``TrainConfig`` or a dict of its fields (missing ones take the config's defaults).
        on_epoch: ``on_epoch(epoch, {"epoch", "accuracy" (val top-1, 0–1), "loss", "ce", "kd",
            "inner", "lr"})``, called after the epoch's checkpoint is written.
        checkpoint_dir: where the full training state is written after each epoch, or None.
        resume: continue from ``checkpoint_dir``'s state when it exists.
        seed: seeds each epoch's batches and augmentations (with the epoch number).
        lr: overrides ``cfg.lr``; epochs: overrides ``cfg.epochs`` (the teacher uses its own).
        desc: names the run in logs and progress bars.

    Returns:
        The epochs completed, the per-epoch metrics and the seconds spent. Raises
        NonFiniteLossError on a NaN/Inf loss, SpecError on an unreadable checkpoint.
    """
    t0 = time.perf_counter()
    cfg = as_section(TrainConfig, cfg)
    run = _make_run(cfg, seed, lr, epochs, desc)
    _place(student, teacher, loss, run)
    params = [p for p in student.parameters() if p.requires_grad] + list(loss.projections.parameters())
    broadcast_parameters(student, loss.projections)
    train_loader, dist_sampler = _train_loader(loaders.train, run)
    opt, sched, scaler = _optimisation(params, cfg, run, len(train_loader))
    state = {"model": student, "projections": loss.projections, "optimizer": opt, "scheduler": sched,
             "scaler": scaler}
    ckpt_path = _checkpoint_path(checkpoint_dir)
    start, history = _resume(ckpt_path, state, run) if resume else (0, [])
    sampler_gen = getattr(getattr(train_loader, "sampler", None), "generator", None)
    for epoch in range(start, run.epochs):
        _seed_epoch(run, epoch, sampler_gen, dist_sampler)
        metrics = _train_one_epoch(student, train_loader, loss, opt, sched, scaler, params, run, epoch)
        metrics.update(epoch=epoch + 1, accuracy=_validate(student, loaders.val, run), lr=opt.param_groups[0]["lr"])
        history.append(metrics)
        log.info("%s epoch %d/%d loss %.4f val_acc %.4f", desc, epoch + 1, run.epochs, metrics["loss"],
                 metrics["accuracy"])
        if ckpt_path is not None:
            _save_checkpoint(ckpt_path, state, epoch + 1, history)
        if on_epoch is not None:
            on_epoch(epoch + 1, dict(metrics))
    if run.channels_last:
        student.to(memory_format=torch.contiguous_format)
    return FitResult(epochs_done=len(history), history=history, seconds=time.perf_counter() - t0)


def _make_run(cfg: TrainConfig, seed: int, lr: float | None, epochs: int | None, desc: str) -> _Run:
    """The run's device, precision, schedule length, learning rate and place among the ranks."""
    device = resolve_device(cfg.device)
    rank, n_ranks = world()
    return _Run(device, _flag(cfg.amp, device), _flag(cfg.channels_last, device),
                int(epochs if epochs is not None else cfg.epochs), float(lr if lr is not None else cfg.lr),
                seed, rank, n_ranks, desc)


def _train_loader(loader: Any, run: _Run) -> tuple[Any, Any]:
    """This rank's share of the training data: ``(loader, DistributedSampler or None)``."""
    train_loader, dist_sampler = shard_train_loader(loader, run.seed) if isinstance(
        loader, DataLoader) else (loader, None)
    if run.n_ranks > 1:
        log.info("%s: data-parallel, rank %d of %d, %d samples per epoch in batches of %d on this rank", run.desc,
                 run.rank, run.n_ranks, len(dist_sampler) if dist_sampler is not None else -1,
                 getattr(train_loader, "batch_size", -1) or -1)
    return train_loader, dist_sampler


def _optimisation(params: list[torch.Tensor], cfg: TrainConfig, run: _Run, n_batches: int
                  ) -> tuple[torch.optim.Optimizer, Any, torch.amp.GradScaler]:
    """Optimizer, per-batch schedule (``cfg.warmup_epochs`` of linear warm-up, then cosine to 0 over
    the rest of the run), and the AMP gradient scaler."""
    opt = _optimizer(params, cfg, run.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_factor(run.epochs * n_batches, round(float(cfg.warmup_epochs) * n_batches)))
    scaler = torch.amp.GradScaler(run.device.type, enabled=run.amp and run.device.type == "cuda")
    return opt, sched, scaler


def lr_factor(steps: int, warmup: int = 0) -> Callable[[int], float]:
    """The learning-rate multiplier at optimizer step ``s`` (the ``LambdaLR`` lambda of :func:`fit`).

    Args:
        steps: optimizer steps in the whole run (epochs x batches per epoch).
        warmup: the first ``warmup`` steps rise linearly from ``1 / warmup`` to 1 (timm's and
            Goyal et al.'s warm-up); 0 = none. Capped at ``steps``.

    Returns:
        ``s -> factor``: the warm-up ramp, then a cosine from 1 to 0 over the remaining steps.
    """
    steps = max(1, int(steps))
    warmup = min(max(0, int(warmup)), steps)
    rest = max(1, steps - warmup)

    def factor(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(s - warmup, rest) / rest))
    return factor


def _checkpoint_path(checkpoint_dir: str | os.PathLike | None) -> Path | None:
    if checkpoint_dir is None:
        return None
    path = Path(checkpoint_dir) / CHECKPOINT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _resume(ckpt_path: Path | None, state: dict[str, Any], run: _Run) -> tuple[int, list[dict]]:
    """``(epochs done, history)`` from the checkpoint when there is one, else ``(0, [])``."""
    if ckpt_path is None or not ckpt_path.exists():
        return 0, []
    start, history = _load_checkpoint(ckpt_path, state, run.device)
    log.info("%s: resumed after epoch %d of %d", run.desc, start, run.epochs)
    return start, history


def _seed_epoch(run: _Run, epoch: int, sampler_gen: torch.Generator | None, dist_sampler: Any) -> None:
    """Reseed per epoch: batches/augmentations of epoch e are a function of (seed, e) only."""
    torch.manual_seed(run.seed * 100_003 + epoch + 7_919 * run.rank)  # ranks draw different augmentations
    if sampler_gen is not None:
        sampler_gen.manual_seed(run.seed * 100_003 + epoch)
    if dist_sampler is not None:
        dist_sampler.set_epoch(epoch)


def _save_checkpoint(path: Path, state: dict[str, Any], epochs_done: int, history: list[dict]) -> None:
    """The full training state after ``epochs_done`` epochs (read back by :func:`_load_checkpoint`)."""
    atomic_save({**{k: v.state_dict() for k, v in state.items()}, "rng": _rng_state(),
                 "epoch": epochs_done, "history": history}, path)


def _place(student: nn.Module, teacher: nn.Module | None, loss: DistillLoss, run: _Run) -> None:
    """Move the models and the loss's projections to the device (and memory format) of the run."""
    student.to(run.device)
    loss.to(run.device)
    if teacher is not None:
        teacher.to(run.device)
    if run.channels_last:
        student.to(memory_format=torch.channels_last)
        if teacher is not None:
            teacher.to(memory_format=torch.channels_last)


def _load_checkpoint(path: Path, state: dict[str, Any], device: torch.device) -> tuple[int, list[dict]]:
    """Restore ``state``'s objects and the RNGs from ``path``; returns ``(epochs done, history)``."""
    try:
        st = torch.load(path, map_location=device, weights_only=True)
        for key, obj in state.items():
            obj.load_state_dict(st[key])
        _set_rng_state(st["rng"])
    except (KeyError, ValueError, TypeError, RuntimeError, EOFError, OSError,
            pickle.UnpicklingError) as exc:
        raise SpecError(f"cannot resume from {str(path)!r}: {exc}") from None
    return int(st["epoch"]), list(st["history"])


def _train_one_epoch(student: nn.Module, loader: Any, loss: DistillLoss, opt: torch.optim.Optimizer,
                    sched: Any, scaler: torch.amp.GradScaler, params: list[torch.Tensor], run: _Run,
                    epoch: int) -> dict[str, float]:
    """One pass over ``loader``; returns the sample-weighted mean ``loss``, ``ce``, ``kd``, ``inner``
    (averaged over ranks). The scheduler steps once per batch."""
    student.train()
    sums = {"loss": 0.0, "ce": 0.0, "kd": 0.0, "inner": 0.0}
    n = 0
    for x, y in _progress(loader, f"{run.desc} {epoch + 1}/{run.epochs}", disable=run.rank > 0):
        x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
        if run.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(run.device.type, enabled=run.amp):
            total, parts, _ = loss.step(student, x, y)
        if run.n_ranks < 2 and not torch.isfinite(total):
            _raise_non_finite(run.desc, parts, epoch, run.lr)
        opt.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        # average over ranks; the loss rides along so that all ranks stop together
        if run.n_ranks > 1 and not torch.isfinite(average_gradients_and_loss(params, total)):
            _raise_non_finite(run.desc, parts, epoch, run.lr)
        scaler.step(opt)
        scaler.update()
        sched.step()
        b = int(y.shape[0])
        for k in sums:
            sums[k] += parts[k] * b
        n += b
    sync_buffers(student)
    return mean_over_ranks({k: v / max(n, 1) for k, v in sums.items()}, run.device)


def _validate(student: nn.Module, loader: Any, run: _Run) -> float:
    """Top-1 accuracy on ``loader`` (0–1) on the run's device, memory format and autocast."""
    return evaluate(student, loader, run.device, run.channels_last, run.amp)
