"""Pruning quality on the bundled digits: test error at MAC budgets 0.5 / 0.25 / 0.1.

Per seed, every method starts from the same trained teacher (digits_resnet, one data split per
seed) and gets the same fine-tuning recipe (``train.*`` of the default trial config):

* ``ours``       — KPID: knapsack allocation on Taylor scores + CE + logits KD + inner KD
                   (``kpid_core.trial.run_trial``).
* ``uniform``    — uniform per-layer pruning (same kept fraction everywhere, L1-ranked), same
                   MACs, plain fine-tune (CE only; ``run_trial`` with KD weights 0).
* ``tp_global``  — torch-pruning global magnitude pruning bisected to the same MAC target, plain
                   fine-tune (CE only, ``kpid_core.train.fit``).
* ``scratch``    — a same-MACs compact architecture trained from scratch (CE): torchvision
                   mobilenet_v3_small with its stem adapted to 1×16×16 digits (1 input channel,
                   stride 1 instead of 2: with stride 2 the 16-px input is 1×1 after four of its five
                   downsamplings) and ``width_mult`` bisected so its MACs are ≤ the budget's MACs. It is
                   trained for teacher.epochs + train.epochs at the teacher's learning rate (the
                   training the pruned models received in total).

Prints mean ± std test error per method and budget over the seeds, and the ratio
ours ÷ tp_global at budget 0.25 (goal ≤ 0.8). Usage:
  python bench/quality.py [--quick] [--seeds N] [--budgets 0.5,0.25,0.1] [--md FILE]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench._anchors import tp_global_to_macs
from kpid_core.baseline import build_compact, match_width
from kpid_core.config import load_config
from kpid_core.data import build_data
from kpid_core.distill import DistillLoss
from kpid_core.macs import count_macs
from kpid_core.models import build_model, model_in_channels
from kpid_core.teacher import load_state_dict_file, model_kwargs
from kpid_core.train import evaluate, fit, resolve_device, seed_everything
from kpid_core.trial import prepare_shared, run_trial

__all__ = ["METHODS", "compact_mobilenet", "main", "run_seed"]

METHODS = ["ours", "uniform", "tp_global", "scratch"]
BUDGETS = [0.5, 0.25, 0.1]
GOAL_RATIO = 0.8


def compact_mobilenet(target_macs: int, input_shape: tuple[int, int, int], num_classes: int) -> tuple[nn.Module, float, int]:
    """The widest adapted mobilenet_v3_small whose MACs at ``input_shape`` are ≤ ``target_macs``
    (``kpid_core.baseline``: the same builder a sweep's same-data baselines use).
    Returns (model, width_mult, MACs)."""
    width, macs = match_width("mobilenet_v3_small", target_macs, input_shape, num_classes)
    seed_everything(0)
    return build_compact("mobilenet_v3_small", width, input_shape, num_classes), width, macs


def _plain_finetune(model: nn.Module, data, cfg, seed: int, *, lr: float | None = None,
                    epochs: int | None = None, desc: str) -> float:
    """CE-only training with the trial recipe; returns test accuracy (0-1)."""
    loss = DistillLoss(ce_weight=1.0, kd_weight=0.0, inner_weight=0.0, label_smoothing=cfg.train.label_smoothing)
    fit(model, None, data, loss, cfg.train, seed=seed, lr=lr, epochs=epochs, desc=desc)
    model.eval()
    return evaluate(model, data.test, resolve_device(cfg.train.device))


def run_seed(seed: int, budgets: list[float], overrides: list[str], tmp: Path, log) -> list[dict]:
    """All methods at all budgets for one seed: rows {seed, budget, method, error, macs_ratio}."""
    cfg = load_config(overrides=[f"seed={seed}", *overrides])
    shared = prepare_shared(cfg, tmp / f"seed{seed}", ["taylor", "l1"])
    data = build_data(cfg.data, cfg.seed, split=shared.split, channels=model_in_channels(cfg.model.name))
    kw = model_kwargs(cfg, data.input_shape[0])
    teacher = build_model(cfg.model.name, num_classes=data.num_classes, **kw)
    load_state_dict_file(shared.teacher, teacher, what="shared teacher")
    teacher.eval()
    x = torch.zeros(1, *data.input_shape)
    dense_macs = count_macs(teacher, data.input_shape)
    rows = [{"seed": seed, "budget": 1.0, "method": "teacher", "error": 1 - shared.teacher_accuracy,
             "macs_ratio": 1.0}]
    for b in budgets:
        t0 = time.perf_counter()
        res = {}
        m = run_trial(cfg.with_overrides({"budget": b}), shared=shared)
        res["ours"] = (m["accuracy"], m["macs_ratio"])
        m = run_trial(cfg.with_overrides({"budget": b, "allocation": "uniform", "metric": "l1", "kd_weight": 0.0,
                                          "inner_weight": 0.0}), shared=shared)
        res["uniform"] = (m["accuracy"], m["macs_ratio"])
        seed_everything(seed)
        pruned, ratio = tp_global_to_macs(teacher, x, b)
        res["tp_global"] = (_plain_finetune(pruned, data, cfg, seed, desc="tp_global"), ratio)
        seed_everything(seed)
        net, width, macs = compact_mobilenet(int(b * dense_macs), data.input_shape, data.num_classes)
        acc = _plain_finetune(net, data, cfg, seed, lr=cfg.teacher.lr,
                              epochs=cfg.teacher.epochs + cfg.train.epochs, desc="scratch")
        res["scratch"] = (acc, macs / dense_macs)
        for meth, (acc, ratio) in res.items():
            rows.append({"seed": seed, "budget": b, "method": meth, "error": 1 - acc, "macs_ratio": ratio,
                         **({"width": width} if meth == "scratch" else {})})
        log(f"  seed {seed} budget {b}: " + ", ".join(f"{k} err {1 - v[0]:.4f} (MACs {v[1]:.3f})"
                                                       for k, v in res.items())
            + f" [scratch width {width:.3f}] ({time.perf_counter() - t0:.0f} s)")
    return rows


def summarize(rows: list[dict], budgets: list[float]) -> tuple[list[str], dict]:
    """Markdown table lines (mean ± std test error in %, mean MAC ratio) and the cells by key."""
    cells: dict[tuple[float, str], tuple[float, float, float, int]] = {}
    for b in budgets:
        for meth in METHODS:
            errs = [r["error"] for r in rows if r["budget"] == b and r["method"] == meth]
            macs = [r["macs_ratio"] for r in rows if r["budget"] == b and r["method"] == meth]
            sd = statistics.stdev(errs) if len(errs) > 1 else 0.0
            cells[(b, meth)] = (statistics.fmean(errs), sd, statistics.fmean(macs), len(errs))
    lines = ["| budget | " + " | ".join(METHODS) + " |", "|---|" + "---|" * len(METHODS)]
    for b in budgets:
        lines.append(f"| {b:g} | " + " | ".join(
            f"{cells[(b, m)][0] * 100:.2f} ± {cells[(b, m)][1] * 100:.2f} % (MACs {cells[(b, m)][2]:.3f})"
            for m in METHODS) + " |")
    t = [r["error"] for r in rows if r["method"] == "teacher"]
    lines.append(f"| teacher (1.0) | {statistics.fmean(t) * 100:.2f} ± "
                 f"{(statistics.stdev(t) if len(t) > 1 else 0) * 100:.2f} % | | | |")
    return lines, cells


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="2 seeds, budget 0.25 only, teacher 8 + fine-tune 3 epochs (< 3 min)")
    ap.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3; quick 2)")
    ap.add_argument("--budgets", default=None,
                    help="comma list of MAC fractions (default 0.5,0.25,0.1; quick 0.25)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="extra trial config override for every method, e.g. --set epochs=4")
    ap.add_argument("--md", default=None, help="also write the markdown table to this file")
    args = ap.parse_args(argv)
    try:
        budgets = [float(b) for b in args.budgets.split(",")] if args.budgets else (
            [0.25] if args.quick else BUDGETS)
    except ValueError:
        budgets = []
    if not budgets or not all(0 < b < 1 for b in budgets):
        print(f"error: --budgets {args.budgets!r}: expected comma-separated numbers in (0, 1)", file=sys.stderr)
        return 2
    n = args.seeds or (2 if args.quick else 3)
    if n < 1:
        print(f"error: --seeds must be >= 1, got {n}", file=sys.stderr)
        return 2
    overrides = (["teacher.epochs=8", "epochs=3"] if args.quick else []) + args.overrides
    torch.set_num_threads(1)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="kpid-quality-") as tmp:
        for seed in range(n):
            rows += run_seed(seed, budgets, overrides, Path(tmp), log)
    lines, cells = summarize(rows, budgets)
    cfg = load_config(overrides=overrides)
    setting = (f"{'quick' if args.quick else 'full'} setting: {n} seeds, teacher {cfg.teacher.epochs} epochs, "
               f"fine-tune {cfg.train.epochs} epochs, scratch {cfg.teacher.epochs + cfg.train.epochs} epochs")
    print(f"Test error on digits (digits_resnet teacher), {setting}")
    print("\n".join(lines))
    verdict = []
    if 0.25 in budgets:
        ratio = cells[(0.25, "ours")][0] / max(cells[(0.25, "tp_global")][0], 1e-12)
        verdict.append(f"ours / tp_global error at 0.25: {ratio:.2f} (goal <= {GOAL_RATIO}: "
                       f"{'met' if ratio <= GOAL_RATIO else 'MISSED'})")
    print("\n".join(verdict))
    print(f"({time.perf_counter() - t0:.0f} s)")
    if args.md:
        cmd = "python bench/quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
        with open(args.md, "w") as f:
            f.write("# Pruning quality on digits: test error at the same MACs\n\n")
            f.write(f"- Date: {datetime.date.today()}; machine: {platform.machine()}, {os.cpu_count()} CPUs "
                    f"(shared with other jobs), torch {torch.__version__}, CPU, 1 thread\n")
            f.write(f"- Command: `{cmd.strip()}` ({setting})\n")
            f.write("- Cells: mean ± std over seeds of test error (1 − top-1) and the mean MAC ratio reached; "
                    "each seed has its own data split and teacher, shared by all methods.\n\n")
            f.write("\n".join(lines) + "\n\n" + "\n".join(f"- {v}" for v in verdict) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
