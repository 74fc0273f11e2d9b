"""The ``sensitivity`` metric: measured per-group loss curves, as per-channel values for the knapsack.

Why it exists: first-order scores (Taylor, L1) estimate the loss change of removing *one* channel,
and the knapsack adds them up, as if a group's channels could be removed independently. A layer cut
to 2 of its 16 channels costs far more than that sum; at budgets 0.25 and 0.1 on Fashion-MNIST this is
where the paper's allocation lost to uniform allocation (docs/knapsack.md). This metric measures the
curve instead of extrapolating it:

1. rank each group's channels by the paper's Taylor score (the ranking stays the paper's);
2. for each group ``g`` and each keep count ``k`` on a grid (about 13 points), cut ``g`` alone to
   its top-``k`` channels — by zeroing the others at every module that produces them, which in eval
   mode is exactly what removing them does — and measure ``L_g(k)``, the KL divergence from the dense
   model's outputs on the importance batches;
3. take the lower convex envelope of ``L_g`` (so returns diminish) and give the channel of rank
   ``j`` the score ``L_g(j-1) - L_g(j)``.

A group's top-``k`` scores then sum to ``L_g(1) - L_g(k)``: the knapsack that maximises kept scores
minimises ``Σ_g L_g(k_g)``, the measured loss of the allocation, assuming that groups (not channels)
add up. Cost: (number of groups) × ~13 × ``n_batches`` forward passes of the model, after one
Taylor pass — seconds for a CIFAR ResNet, minutes for an ImageNet ResNet-50 on a CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kpid_core.engine.groups import ChannelGroup
from kpid_core.engine.importance import ImportanceContext, TaylorImportance, batches, logits, register_metric

__all__ = ["GRID", "SensitivityImportance", "convex_marginals", "keep_grid", "zeroed_channels"]

#: Fractions of a group's channels at which its loss curve is measured (plus 1 channel and all).
GRID = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def keep_grid(size: int) -> list[int]:
    """The keep counts at which a group of ``size`` channels is measured: 1, ``size`` and :data:`GRID`.

    Args:
        size: the group's channel count (≥ 1).

    Returns:
        Sorted distinct counts in ``[1, size]``.
    """
    return sorted({1, size, *(min(size, max(1, round(size * f))) for f in GRID)})


def convex_marginals(counts: list[int], losses: list[float], size: int) -> np.ndarray:
    """Per-rank channel values from a loss curve measured at ``counts``.

    Args:
        counts: sorted keep counts, the last one ``size``.
        losses: the measured loss at each count (≥ 0; 0 at ``size``).
        size: the group's channel count.

    Returns:
        ``m[j]`` for ranks ``j = 0 .. size-1``: the loss that keeping the rank-``j`` channel saves,
        on the lower convex envelope of the curve, linearly interpolated; strictly decreasing in
        ``j`` (a vanishing tie-break keeps the ranking), and the first rank valued above all others.
    """
    pts = list(zip(counts, losses))
    hull: list[tuple[int, float]] = []
    for p in pts:  # lower convex envelope (monotone chain)
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (p[1] - y1) - (y2 - y1) * (p[0] - x1) <= 0:
                hull.pop()
            else:
                break
        hull.append(p)
    hx, hy = zip(*hull)
    curve = np.interp(np.arange(1, size + 1), hx, hy)  # L(1) .. L(size)
    m = np.empty(size, dtype=np.float64)
    m[1:] = np.maximum(curve[:-1] - curve[1:], 0.0)
    top = float(m[1:].max()) if size > 1 else 1.0
    m[0] = 2.0 * top + 1.0  # a group's best channel: never removed before any other channel
    scale = max(top, 1e-12)
    return m + scale * 1e-9 * np.arange(size, 0, -1)


@contextlib.contextmanager
def zeroed_channels(model: nn.Module, group: ChannelGroup, keep: torch.Tensor) -> Iterator[None]:
    """Within the block, ``group``'s channels outside ``keep`` are zero at the output of every module
    that produces them (forward hooks). In eval mode the model then computes what the model with
    those channels physically removed computes.

    Args:
        model: the model ``group`` was traced from.
        group: the channel group.
        keep: indices of the group channels to keep.
    """
    drop = torch.ones(group.size, dtype=torch.bool)
    drop[keep] = False
    modules = dict(model.named_modules())
    handles = []
    try:
        for mem in group.members:
            if mem.dim != "out":
                continue
            idx = torch.tensor(mem.idxs, dtype=torch.long)[drop[torch.tensor(mem.root_idxs, dtype=torch.long)]]
            if len(idx):
                handles.append(modules[mem.module].register_forward_hook(_zero_hook(idx)))
        yield
    finally:
        for h in handles:
            h.remove()


def _zero_hook(idx: torch.Tensor):
    def hook(_mod, _inp, out):
        return out.index_fill(1, idx.to(out.device), 0.0)
    return hook


@register_metric("sensitivity")
class SensitivityImportance(TaylorImportance):
    """Measured per-group loss curves (KL from the dense outputs), Taylor-ranked within a group."""

    def prepare(self, ctx: ImportanceContext) -> None:
        super().prepare(ctx)  # the paper's Taylor scores: the ranking inside each group
        taylor = ctx.state[self.name]
        ctx.model.eval()
        data = [x for x, _ in batches(ctx)]

        def log_probs(x: torch.Tensor) -> torch.Tensor:
            return F.log_softmax(logits(ctx.model(x)).float(), 1)

        with torch.no_grad():
            dense = [log_probs(x) for x in data]
            out = {}
            for g in ctx.groups:
                order = torch.argsort(taylor[g.key], descending=True, stable=True)
                counts = keep_grid(g.size)
                losses = []
                for k in counts:
                    if k == g.size:
                        losses.append(0.0)
                        continue
                    with zeroed_channels(ctx.model, g, order[:k]):
                        kl = sum(F.kl_div(log_probs(x), d, log_target=True, reduction="batchmean")
                                 for x, d in zip(data, dense))
                    losses.append(float(kl) / len(data))
                m = convex_marginals(counts, losses, g.size)
                scores = torch.empty(g.size, dtype=torch.float64)
                scores[order] = torch.from_numpy(m)
                out[g.key] = scores
        ctx.state[self.name] = out

