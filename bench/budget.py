"""Asked vs actual MACs: does the allocation land on the budget?

Three allocators on random-initialised torchvision models (no weights offline; landing on the
MAC target does not depend on the weights), channel scores = L1 magnitude:

* ``kpid``        — ours: exact MAC model, iterated linearised knapsack, exact repair/fill.
* ``paper_code``  — the paper's released approach: per-channel cost from the UNPRUNED network,
                    ignoring the input-channel MACs the next layer saves; greedy by value/cost.
* ``tp_global``   — torch-pruning MetaPruner, global magnitude pruning, stepped until the MAC
                    target (conv+linear convention) is reached.

Usage: ``python bench/budget.py [--quick] [--md FILE]`` (``--quick``: 64×64 input, fewer tp steps).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._anchors import tp_global_stepped as tp_global  # shared with bench/latency.py, quality.py
from bench._header import command_line, header_lines
from kpid_core.engine.allocation import min_keep_floors
from kpid_core.engine.groups import find_groups
from kpid_core.engine.importance import ImportanceContext, get_metric
from kpid_core.engine.knapsack import solve
from kpid_core.models import build_model
from kpid_core.prune import prune_to_budget

MODELS = ["resnet50", "mobilenet_v3_large", "efficientnet_b0"]
BUDGETS = [0.3, 0.5, 0.7]


def paper_code(model, x, budget, min_keep=0.1) -> float:
    """Greedy knapsack with costs from the dense network, out-dim only; returns actual MAC ratio."""
    G = find_groups(model, x)
    ctx = ImportanceContext(model, G)
    l1 = get_metric("l1")
    scores = [l1(ctx, g).numpy() for g in G]
    cin_dense, _ = G.channels(G.sizes)
    cost = G.B.T @ (G.coef * cin_dense)  # a channel's own conv MACs with all inputs kept
    fixed = G.macs() - float(cost @ G.sizes)
    gid = np.concatenate([np.full(s, i) for i, s in enumerate(G.sizes)])
    rank = np.concatenate([np.argsort(np.argsort(-v, kind="stable")) for v in scores])
    required = rank < min_keep_floors(G, min_keep)[gid]
    mask = solve(np.concatenate(scores), cost[gid].astype(float), budget * G.macs() - fixed,
                 method="greedy", required=required)
    k = np.bincount(gid, weights=mask, minlength=len(G)).astype(np.int64)
    return G.macs(k) / G.macs()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64x64 input and 30 tp steps (minutes on 2 cores)")
    ap.add_argument("--md", default=None, help="also write the markdown table to this file")
    args = ap.parse_args(argv)
    size, steps = (64, 30) if args.quick else (224, 60)
    x = torch.zeros(1, 3, size, size)
    rows = []
    t0 = time.time()
    for name in MODELS:
        for b in BUDGETS:
            ours = prune_to_budget(build_model(name), x, b)
            r_ours = ours.macs_after / ours.macs_before
            r_paper = paper_code(build_model(name), x, b)
            r_tp = tp_global(build_model(name), x, b, steps)
            rows.append((name, b, r_ours, r_paper, r_tp))
            print(f"{name:<20} asked {b:.2f}  kpid {r_ours:.4f}  paper_code {r_paper:.4f}  tp_global {r_tp:.4f}",
                  flush=True)
    lines = [
        "| model | asked | kpid (ours) | paper_code | tp_global |",
        "|---|---|---|---|---|",
    ]
    for name, b, a, p, t in rows:
        def cell(r, b=b):
            return f"{r:.4f} ({(r - b) / b * 100:+.2f} %)"
        lines.append(f"| {name} | {b:.2f} | {cell(a)} | {cell(p)} | {cell(t)} |")
    worst = max(abs(a - b) / b for _, b, a, _, _ in rows)
    over = any(a > b for _, b, a, _, _ in rows)
    summary = (f"kpid worst miss {worst * 100:.3f} % of the target, over budget: {over}; "
               f"paper_code worst {max(abs(p - b) / b for _, b, _, p, _ in rows) * 100:.1f} %, "
               f"tp_global worst {max(abs(t - b) / b for _, b, _, _, t in rows) * 100:.1f} %")
    print("\n".join(lines))
    print(summary)
    print(f"({time.time() - t0:.0f} s)")
    if args.md:
        cmd = command_line("bench/budget.py", (["--quick"] if args.quick else []) + ["--md", args.md])
        head = header_lines("Budget landing: asked vs actual MACs", cmd, notes=[
            f"Setting: input {size}x{size}, random-init weights, L1 scores, min_keep 0.1",
            "Cells: actual MACs / dense MACs (relative miss vs the asked fraction); MACs = conv+linear, one image."])
        with open(args.md, "w") as f:
            f.write("\n".join(head) + "\n")
            f.write("\n".join(lines) + "\n\n" + summary + "\n\n")
            f.write("Meaning: an allocator that prices each channel with the dense network's costs and ignores the "
                    "next layer's input savings (paper_code) lands far under the asked budget, and stepping a "
                    "global pruner (tp_global) overshoots by up to a step; ours lands within 0.5 % at or under "
                    "the budget because it re-linearises an exact MAC model and repairs/fills exactly.\n")
    return 0 if not over and worst <= 0.005 else 1


if __name__ == "__main__":
    sys.exit(main())
