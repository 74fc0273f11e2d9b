"""Shared anchor implementations for the benchmarks (what users would otherwise reach for).

* torch-pruning global magnitude pruning (``MetaPruner`` + ``MagnitudeImportance(p=1)``,
  ``global_pruning=True``, the final classifier ignored) driven to a MAC target, in two flavours:
  :func:`tp_global_stepped` (iterative steps until the MAC ratio is at or under the target; may
  overshoot by up to one step — used by ``bench/budget.py``) and :func:`tp_global_to_macs`
  (bisection on the global pruning ratio, lands just under the target — used where the anchors
  must be compared at the same MACs).
* uniform per-layer pruning (the same fraction of channels in every group, L1-ranked inside a
  group) at the same MACs: :func:`uniform_prune`.

MACs follow the project convention (conv + linear, one image; ``kpid_core.engine.macs.count_macs``).
Each function returns the pruned model and its MAC ratio (pruned / dense) at ``x``'s size.
"""

from __future__ import annotations

import copy
import os
import sys

import numpy as np
import torch
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from kpid_core.engine.groups import find_groups
from kpid_core.engine.macs import count_macs
from kpid_core.prune import prune_to_budget

__all__ = ["tp_global_stepped", "tp_global_to_macs", "uniform_prune"]


def _last_layer(model: nn.Module) -> nn.Module:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]


def _tp_pruner(model: nn.Module, x: torch.Tensor, ratio: float, steps: int):
    import torch_pruning as tp

    return tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(p=1),
                                global_pruning=True, pruning_ratio=ratio, iterative_steps=steps,
                                ignored_layers=[_last_layer(model)])


def tp_global_stepped(model: nn.Module, x: torch.Tensor, budget: float, steps: int) -> float:
    """Prune ``model`` IN PLACE with torch-pruning global magnitude, ``steps`` iterative steps up to
    a 0.85 channel ratio, stopping at the first step whose MAC ratio is ≤ ``budget``.
    Returns the MAC ratio reached (may be under the target by up to one step)."""
    shape = tuple(x.shape[1:])
    dense = count_macs(model, shape)
    pruner = _tp_pruner(model, x, 0.85, steps)
    ratio = 1.0
    for _ in range(steps):
        pruner.step()
        ratio = count_macs(model, shape) / dense
        if ratio <= budget:
            break
    return ratio


def _tp_counts(pruner, G, names: dict, r: float) -> np.ndarray:
    """Kept channel counts per kpid group if torch-pruning pruned a global ratio ``r`` now
    (interactive step: groups are inspected, nothing is removed)."""
    pruner.per_step_pruning_ratio = [0.0, r]
    pruner.current_step = 0
    k = G.sizes.copy()
    for grp in pruner.step(interactive=True):
        root = names[grp[0].dep.target.module]
        gi = G.out_group_of[root]
        k[gi] = G.sizes[gi] - len(grp[0].idxs)
    return k


def tp_global_to_macs(model: nn.Module, x: torch.Tensor, budget: float, *, iters: int = 16,
                      max_ratio: float = 0.97) -> tuple[nn.Module, float]:
    """torch-pruning global magnitude pruning, one shot, with the global channel ratio bisected so
    that the MAC ratio lands at or just under ``budget``. ``model`` is not modified.

    The bisection inspects torch-pruning's choices without pruning (one trace) and prices them with
    kpid's exact MAC model; the chosen ratio is then applied for real and recounted.
    Returns (pruned copy, MAC ratio at ``x``'s size)."""
    shape = tuple(x.shape[1:])
    dense = count_macs(model, shape)
    probe = copy.deepcopy(model)
    G = find_groups(copy.deepcopy(model), x)
    names = {m: n for n, m in probe.named_modules()}
    G.out_group_of = {mem.module: g.index for g in G for mem in g.members if mem.dim == "out"}
    pruner = _tp_pruner(probe, x, max_ratio, 1)
    lo, hi = 0.0, max_ratio
    for _ in range(iters):
        mid = (lo + hi) / 2
        if G.macs(_tp_counts(pruner, G, names, mid)) <= budget * dense:
            hi = mid
        else:
            lo = mid
    work = copy.deepcopy(model)
    _tp_pruner(work, x, hi, 1).step()
    return work, count_macs(work, shape) / dense


def uniform_prune(model: nn.Module, x: torch.Tensor, budget: float, scores=None,
                  min_keep: float = 0.1) -> tuple[nn.Module, float]:
    """Uniform per-layer pruning: the same kept fraction in every channel group (L1-ranked within
    a group when ``scores`` is None), the fraction chosen so the MACs land at or under ``budget``.
    Returns (pruned copy, MAC ratio at ``x``'s size)."""
    res = prune_to_budget(model, x, budget, scores, min_keep=min_keep, allocation="uniform")
    return res.model, res.macs_ratio
