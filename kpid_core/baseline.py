"""Same-data baselines: a compact architecture trained on the sweep's own data, under the same teacher.

The question a sweep answers is "prune, or pick a compact network of the same cost?". Published
ImageNet points answer it only on ImageNet; a same-data baseline answers it on any dataset: the
architecture (e.g. ``mobilenet_v3_small`` or ``efficientnet_b0``, at a width whose MACs match a
budget) is trained from random initialisation on the same split, for the same epochs, with the same
loss as the pruned students minus inner KD (its inner features have other shapes than the
teacher's): CE + logits KD from the same teacher.

Images smaller than :data:`SMALL_INPUT` pixels get a stride-1 stem (torchvision's stride-2 stem
plus four more downsamplings would leave a 16-px digit at 1×1 before the last stages), and the
stem takes the data's channel count. The result records the stem's input channels and stride.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from kpid_core.errors import ConfigError
from kpid_core.training.data import SMALL_MODEL_INPUT

__all__ = ["SMALL_INPUT", "build_compact", "has_width", "match_width", "run_baseline"]

log = logging.getLogger("kpid_core.baseline")
SMALL_INPUT = SMALL_MODEL_INPUT  # one rule: below this side an image counts as small


def has_width(arch: str) -> bool:
    """Whether ``arch`` takes a channel-width multiplier (the mobilenets, efficientnet_b0 and the
    CIFAR/digits ResNets: :func:`kpid_core.models.models_with_width`)."""
    from kpid_core.models import model_has_width

    return model_has_width(arch)


def _no_width(arch: str) -> str:
    from kpid_core.models import models_with_width

    return f"model {arch!r} has no width multiplier (these do: {', '.join(models_with_width())})"


def _stem(model: nn.Module) -> tuple[str, nn.Conv2d]:
    return next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))


def _stem_facts(model: nn.Module) -> dict[str, int]:
    conv = _stem(model)[1]
    return {"in_channels": conv.in_channels, "stride": conv.stride[0]}


def _adapt_stem(model: nn.Module, in_channels: int, stride1: bool) -> None:
    name, conv = _stem(model)
    if conv.in_channels == in_channels and (not stride1 or conv.stride == (1, 1)):
        return
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, 1 if stride1 else conv.stride, conv.padding,
                    bias=conv.bias is not None)
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], new)


def build_compact(arch: str, width: float, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """A randomly initialised ``arch`` at ``width`` for images of ``input_shape`` (C, H, W)."""
    from kpid_core.models import build_model, model_in_channels

    c, h, _ = input_shape
    if width != 1.0 and not has_width(arch):
        raise ConfigError(f"baselines: {_no_width(arch)}; use width: 1.0")
    if model_in_channels(arch) is None:
        return build_model(arch, num_classes=num_classes, in_channels=c, width=width)
    model = build_model(arch, num_classes=num_classes, width=width)
    _adapt_stem(model, c, stride1=h < SMALL_INPUT)
    return model


def match_width(arch: str, target_macs: int, input_shape: tuple[int, int, int], num_classes: int,
                iters: int = 20) -> tuple[float, int]:
    """The widest ``width`` of ``arch`` whose MACs at ``input_shape`` are ≤ ``target_macs``, found by
    bisection on (0.02, 4] to ``(4 - 0.02) / 2**iters``.

    Args:
        arch: a model with a width multiplier (:func:`has_width`).
        target_macs: the MAC budget (one image).
        input_shape: (C, H, W) of the data.
        num_classes: classes of the classifier.
        iters: sets the resolution, (4 - 0.02) / 2**iters.

    Returns:
        ``(width, macs)``.

    Raises:
        ConfigError: the architecture has no width multiplier, or even width 0.02 is over the budget.
    """
    from kpid_core.engine.macs import count_macs

    if not has_width(arch):
        raise ConfigError(f"baselines: width: match needs a width multiplier, and {_no_width(arch)}")

    def macs(w: float) -> int:
        return count_macs(build_compact(arch, w, input_shape, num_classes), input_shape)

    lo, hi = 0.02, 4.0
    tol = (hi - lo) / 2**iters  # the bisection's resolution on (0.02, 4]
    lo_macs = macs(lo)
    if lo_macs > target_macs:
        raise ConfigError(f"baselines: {arch} needs at least {lo_macs:,} MACs at {input_shape[1]} px, more than "
                          f"the budget's {target_macs:,}")
    # Bracket from width 1 upwards: the widest networks are the slowest to build, and a baseline is
    # usually matched to a budget under the full width's MACs.
    top = 1.0
    while True:
        top_macs = macs(top)
        if top_macs > target_macs:
            hi = top
            break
        lo, lo_macs = top, top_macs
        if top >= 4.0:
            return lo, lo_macs
        top = min(2 * top, 4.0)
    while hi - lo > tol:
        mid = (lo + hi) / 2
        mid_macs = macs(mid)
        if mid_macs <= target_macs:
            lo, lo_macs = mid, mid_macs
        else:
            hi = mid
    return lo, lo_macs


def run_baseline(cfg: Any, arch: str, width: float | None = None, on_epoch: Callable[[int, dict], None] | None = None,
                 *, out_dir: str | os.PathLike | None = None, shared: Any = None,
                 epochs: int | None = None) -> dict[str, Any]:
    """Train ``arch`` on the data of trial config ``cfg`` under ``cfg``'s teacher; return metrics.

    ``width``: a multiplier, or None to match ``cfg.prune.budget`` × the teacher's MACs
    (:func:`match_width`). ``epochs``: default ``cfg.train.epochs`` (what every pruned student gets).
    ``shared``: the sweep's artifacts (split + teacher), as for ``run_trial``. The result has the
    fields of ``run_trial`` plus ``kind="baseline"``, ``arch`` and ``width``; ``metric`` is None.
    """
    import json

    from kpid_core.config import TrialConfig
    from kpid_core.engine.macs import count_macs
    from kpid_core.files import atomic_write_text
    from kpid_core.shared import SharedArtifacts, load_teacher, trial_data
    from kpid_core.training.distill import DistillLoss
    from kpid_core.training.train import evaluate, fit, resolve_device, seed_everything

    t0 = time.perf_counter()
    cfg, shared = TrialConfig.coerce(cfg), SharedArtifacts.coerce(shared)
    seed_everything(cfg.seed)
    device = resolve_device(cfg.train.device)
    data = trial_data(cfg, split=shared.split if shared is not None else None)
    teacher = load_teacher(cfg, data, shared, device)
    shape, k = data.input_shape, data.num_classes
    dense_macs = count_macs(teacher.model, shape)
    dense_params = sum(p.numel() for p in teacher.model.parameters())
    if width is None:
        width, _ = match_width(arch, int(cfg.prune.budget * dense_macs), shape, k)
        target = cfg.prune.budget
    else:
        target = None
    seed_everything(cfg.seed)
    student = build_compact(arch, float(width), shape, k)
    macs = count_macs(student, shape)
    log.info("baseline %s width %.4f: %d MACs (%.4f of the teacher's)", arch, width, macs, macs / dense_macs)
    d = cfg.distill
    loss = DistillLoss(ce_weight=d.ce_weight, kd_weight=d.kd_weight, inner_weight=0.0, temperature=d.temperature,
                       kd_form=d.kd_form, label_smoothing=cfg.train.label_smoothing)
    loss.attach(student, teacher.model.to(device), [], {})
    fr = fit(student, teacher.model, data, loss, cfg.train, on_epoch=on_epoch, seed=cfg.seed, epochs=epochs,
             desc=f"baseline {arch}")
    loss.detach()
    student.eval()
    metrics = {
        "accuracy": evaluate(student, data.test, device),
        "val_accuracy": fr.last.get("accuracy", float("nan")), "teacher_accuracy": teacher.accuracy,
        "macs": int(macs), "macs_dense": int(dense_macs), "macs_ratio": macs / dense_macs,
        "params": int(sum(p.numel() for p in student.parameters())), "params_dense": int(dense_params),
        "budget": target, "metric": None, "status": "finished", "epochs_done": fr.epochs_done,
        "kind": "baseline", "arch": arch, "width": float(width),
        "stem": _stem_facts(student),
        "times": {"finetune_s": fr.seconds, "total_s": time.perf_counter() - t0}, "config": cfg.to_dict(),
    }
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1))
    return metrics
