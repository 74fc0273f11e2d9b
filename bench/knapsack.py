"""Benchmark the knapsack solver: value vs the exact optimum (HiGHS MILP) and vs greedy, wall time.

Instances:
  resnet50  all 11,392 prunable channels of torchvision resnet50 in 36 groups (conv1/conv2 outputs of
            the 16 bottlenecks + the 4 residual stages), weight = MACs one channel costs at 224x224
            (its share of every conv/linear it is an output or an input of), value = |N(0,1)| x a
            per-group scale, capacity = 50 % of the total weight.
  random    uncorrelated integer items, float items, and pruning-like items (few equal-weight groups).

Usage: python bench/knapsack.py [--quick]    (--quick: fewer repeats, shorter MILP limit, < 1 min)
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._header import command_line, header_lines
from kpid_core.engine.knapsack import solve_detailed


def resnet50_instance(seed: int = 0) -> tuple[np.ndarray, np.ndarray, float, list[str]]:
    """(values, integer MAC weights, capacity, group name per item) for resnet50 at 224x224."""
    import torch

    from kpid_core._tv import torchvision

    model = torchvision.models.resnet50().eval()
    out_hw: dict[str, tuple[int, int]] = {}

    def hook(name):
        def fn(mod, inp, out):
            out_hw[name] = tuple(out.shape[2:]) if out.dim() == 4 else (1, 1)
        return fn

    for name, mod in model.named_modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
            mod.register_forward_hook(hook(name))
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))

    # (module, input group, output group); None = not prunable (image, stem, logits)
    links: list[tuple[str, str | None, str | None]] = []
    prev = None  # the stem's 64 channels are not one of the 36 groups
    for li in range(1, 5):
        stage = f"layer{li}"
        for bi, _ in enumerate(getattr(model, stage)):
            blk = f"{stage}.{bi}"
            inp = prev if bi == 0 else stage
            links += [(f"{blk}.conv1", inp, f"{blk}.conv1"), (f"{blk}.conv2", f"{blk}.conv1", f"{blk}.conv2"),
                      (f"{blk}.conv3", f"{blk}.conv2", stage)]
            if bi == 0:
                links.append((f"{blk}.downsample.0", prev, stage))
        prev = stage
    links.append(("fc", "layer4", None))

    mods = dict(model.named_modules())
    cost: dict[str, int] = {}
    size: dict[str, int] = {}
    for name, gin, gout in links:
        m = mods[name]
        h, w = out_hw[name]
        if isinstance(m, torch.nn.Linear):
            kk, cin, cout = 1, m.in_features, m.out_features
        else:
            kk, cin, cout = m.kernel_size[0] * m.kernel_size[1], m.in_channels // m.groups, m.out_channels
        if gout is not None:  # one output channel costs kk * cin * h * w
            cost[gout] = cost.get(gout, 0) + kk * cin * h * w
            size[gout] = cout
        if gin is not None:  # one input channel costs kk * cout * h * w
            cost[gin] = cost.get(gin, 0) + kk * cout * h * w
            size[gin] = m.in_features if isinstance(m, torch.nn.Linear) else m.in_channels
    names = sorted(size)
    rng = np.random.default_rng(seed)
    scale = rng.lognormal(0.0, 0.5, len(names))
    weights = np.concatenate([np.full(size[g], cost[g], dtype=np.int64) for g in names])
    values = np.concatenate([np.abs(rng.standard_normal(size[g])) * scale[i] for i, g in enumerate(names)])
    group = [g for g in names for _ in range(size[g])]
    return values, weights, 0.5 * float(weights.sum()), group


def random_instances(seed: int = 1) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    rng = np.random.default_rng(seed)
    out = {}
    n = 2000
    out["uncorrelated int n=2000"] = (
        rng.integers(1, 1001, n).astype(float), rng.integers(1, 1001, n), 0.3 * 500 * n)
    w = rng.uniform(1.0, 100.0, n)
    out["weakly corr. float n=2000"] = (np.maximum(w + rng.uniform(-10, 10, n), 0.0), w, 0.4 * w.sum())
    cls = rng.uniform(1e5, 5e7, 60)
    g = rng.integers(0, 60, 5000)
    w = cls[g]
    out["pruning-like float 60 groups n=5000"] = (np.abs(rng.standard_normal(5000)) * rng.lognormal(0, .5, 60)[g],
                                                  w, 0.35 * w.sum())
    return out


def milp_reference(values, weights, capacity, time_limit: float, presolve: bool = True):
    from scipy.optimize import Bounds, LinearConstraint, milp

    t0 = time.perf_counter()
    r = milp(-values, constraints=LinearConstraint(weights[None, :].astype(float), -np.inf, capacity),
             integrality=np.ones(values.size), bounds=Bounds(0, 1),
             options={"time_limit": time_limit, "mip_rel_gap": 0.0, "disp": False, "presolve": presolve})
    dt = time.perf_counter() - t0
    value = -r.fun if r.x is not None else float("nan")
    bound = -getattr(r, "mip_dual_bound", float("nan")) if r.x is not None else float("nan")
    return value, bound, r.status == 0, dt


def timed(fn, repeats: int):
    times, res = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = fn()
        times.append(time.perf_counter() - t0)
    return res, statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and a 10 s MILP limit (< 1 min)")
    ap.add_argument("--milp-seconds", type=float, default=None, help="HiGHS time limit per instance")
    args = ap.parse_args(argv)
    repeats = 5 if args.quick else 21
    milp_s = args.milp_seconds if args.milp_seconds is not None else (10.0 if args.quick else 60.0)

    cmd = command_line("bench/knapsack.py", list(argv if argv is not None else sys.argv[1:]))
    setting = f"python {platform.python_version()}, repeats {repeats}, MILP limit {milp_s:g} s"
    print("\n".join(header_lines("Knapsack solvers against HiGHS", cmd, notes=[setting])))
    v, w, cap, group = resnet50_instance()
    print(f"resnet50 instance: {v.size} channels, {len(set(group))} groups, "
          f"{len(np.unique(w))} distinct weights, total {w.sum() / 1e9:.3f} GMACs, capacity 50 %")
    instances = {"resnet50 (11392 ch, 36 groups)": (v, w, cap)} | random_instances()

    hdr = ("instance", "dp value/best", "dp certified", "dp gap", "dp ms", "greedy/best", "greedy ms",
           "milp/best", "milp s", "milp proved")
    rows = []
    for name, (vals, wts, c) in instances.items():
        dp, dp_t = timed(lambda a=vals, b=wts, c=c: solve_detailed(a, b, c, method="dp"), repeats)
        gr, gr_t = timed(lambda a=vals, b=wts, c=c: solve_detailed(a, b, c, method="greedy"), repeats)
        # HiGHS presolve on the 11k-item instance ignores the time limit (31 s for a 5 s limit, no
        # solution): run it without presolve there.
        mv, mb, proved, mt = milp_reference(vals, wts, c, milp_s, presolve=not name.startswith("resnet50"))
        assert wts[dp.mask].sum() <= c and wts[gr.mask].sum() <= c
        best = max(dp.value, mv if np.isfinite(mv) else 0.0)
        rows.append((name, f"{dp.value / best:.6f}", str(dp.optimal), f"{dp.gap:.1e}", f"{dp_t * 1e3:.1f}",
                     f"{gr.value / best:.6f}", f"{gr_t * 1e3:.2f}", f"{mv / best:.6f}", f"{mt:.1f}",
                     str(proved)))
        print(f"  {name}: dp={dp.value:.6f} (UB {dp.upper_bound:.6f}, LP {dp.lp_bound:.6f}, states {dp.states}) "
              f"greedy={gr.value:.6f} milp={mv:.6f} (dual bound {mb:.6f})", flush=True)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(hdr)]
    print()
    print("| " + " | ".join(h.ljust(wd) for h, wd in zip(hdr, widths)) + " |")
    print("|" + "|".join("-" * (wd + 2) for wd in widths) + "|")
    for r in rows:
        print("| " + " | ".join(x.ljust(wd) for x, wd in zip(r, widths)) + " |")
    print("\nbest = max(dp, milp) value; times are medians over repeats (dp, greedy) or one run (milp).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
