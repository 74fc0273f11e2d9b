"""Channel allocation: how many (and which) channels each group keeps under a cost budget.

The cost is MACs by default; any model of :mod:`kpid_core.engine.cost` (params, measured latency) has the
same quadratic form and goes through the same steps below.

Within a group channels are ranked by score (a group keeps its top-k). The exact MAC model of
:mod:`kpid_core.engine.groups` is quadratic in the kept counts (a channel's cost depends on how many
channels its neighbours keep), so the knapsack is solved on its linearisation at the current counts
(item weight = marginal MACs, capacity = B − M(k) + Σ c_g k_g) for a few rounds; an exact repair step
then drops the cheapest-value channels while over budget and an exact fill step adds the best
channels that still fit. The result lands at or just under the budget, counting the input-channel
MACs that neighbouring layers save. ``uniform`` (the same fraction in every group) is the baseline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from kpid_core.choices import ALLOCATIONS, LINEARIZE_AT, NORMALIZERS
from kpid_core.engine.cost import CostModel, blocked, mac_cost
from kpid_core.engine.groups import ChannelGroups
from kpid_core.engine.knapsack import METHODS as KNAPSACK_METHODS
from kpid_core.errors import ConfigError, InfeasibleBudgetError, SpecError

__all__ = ["ALLOCATIONS", "LINEARIZE_AT", "NORMALIZERS", "SOLVERS", "allocate", "check_fraction", "min_keep_floors", "normalize_scores", "score_vectors"]

SOLVERS = KNAPSACK_METHODS  # the knapsack's own list (ALLOCATIONS, NORMALIZERS, LINEARIZE_AT: kpid_core.choices)
_KNAPSACK_ROUNDS = 6


# ---- validation ---------------------------------------------------------------------------------
def check_fraction(name: str, value: Any) -> float:
    """Validate a fraction argument such as ``budget`` or ``min_keep``.

    Args:
        name: the argument's name, used in the error message.
        value: the value to check; must be a real number (not a bool) in (0, 1].

    Returns:
        ``value`` as a float.

    Raises:
        ConfigError: when ``value`` is not a number in (0, 1].
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ConfigError(f"{name} must be a number in (0, 1], got {value!r}")
    v = float(value)
    if not (0.0 < v <= 1.0) or math.isnan(v):
        raise ConfigError(f"{name} must be in (0, 1], got {value!r}")
    return v


def score_vectors(groups: ChannelGroups, scores: Any, model: nn.Module) -> list[np.ndarray]:
    """One float64 array of channel scores per group, in ``groups`` order.

    Args:
        groups: the channel groups of ``model``.
        scores: :class:`~kpid_core.engine.importance.ImportanceScores`, a mapping ``group_key -> 1-D
            tensor``, or None to compute the data-free ``l1`` metric on ``model``.
        model: the model ``groups`` was traced from (read only when ``scores`` is None).

    Returns:
        ``[scores of group 0, scores of group 1, ...]``, each of length ``group.size``.

    Raises:
        ConfigError: ``scores`` is neither of the accepted types.
        SpecError: a group is missing, has the wrong length or holds NaN/Inf.
    """
    if scores is None:
        from kpid_core.engine.importance import ImportanceContext, get_metric

        ctx = ImportanceContext(model, groups)
        metric = get_metric("l1")
        return [metric(ctx, g).numpy().astype(np.float64) for g in groups]
    table = scores.scores if hasattr(scores, "scores") else scores
    if not isinstance(table, Mapping):
        raise ConfigError("scores must be ImportanceScores or a mapping group_key -> 1-D tensor")
    out = []
    for g in groups:
        if g.key not in table:
            raise SpecError(f"scores do not match the model: no scores for channel group {g.key!r}")
        v = np.asarray(torch.as_tensor(table[g.key]).detach().cpu().to(torch.float64).reshape(-1))
        if v.shape[0] != g.size:
            raise SpecError(f"scores do not match the model: group {g.key!r} has {g.size} channels, "
                            f"scores have {v.shape[0]}")
        if not np.all(np.isfinite(v)):
            raise SpecError(f"scores for group {g.key!r} contain NaN/Inf")
        out.append(v)
    return out


# ---- allocation ---------------------------------------------------------------------------------
def min_keep_floors(groups: ChannelGroups, min_keep: float) -> np.ndarray:
    """The fewest channels each group may keep.

    Args:
        groups: the channel groups.
        min_keep: fraction of each group's channels that must stay, in (0, 1].

    Returns:
        int64 array, one count per group: ``ceil(min_keep * size)``, at least 1 and at most ``size``.
    """
    return _floors(groups.sizes, min_keep)


def normalize_scores(vectors: list[np.ndarray], how: str, unit_cost: np.ndarray | None = None) -> list[np.ndarray]:
    """Put every group's scores on one scale before groups compete in the knapsack.

    A group's score sums over its member layers, so a residual-stream group of a dozen layers and a
    block-inner group of two are on different scales. ``mean`` divides each group by its mean score
    (Torch-Pruning's default group normaliser), ``max`` by its largest; ``none`` keeps the sums.
    ``cost`` divides by the mean and multiplies by the cost of one of the group's channels
    (``unit_cost``, taken at the uniform allocation): every group's average channel is then worth
    what it costs there, so neither a group's scale (member count, spatial size) nor its position
    decides how many channels it keeps, only how concentrated its scores are (a group whose few top
    channels carry most of its score gives up more of the rest).

    Args:
        vectors: one non-negative score array per group.
        how: one of :data:`NORMALIZERS`.
        unit_cost: per group, the cost of one channel (required for ``cost``).

    Returns:
        The normalised arrays (a group of all-zero scores stays zero).
    """
    if how == "none":
        return list(vectors)
    if how == "cost" and (unit_cost is None or len(unit_cost) != len(vectors)):
        raise ValueError("normalize='cost' needs one unit cost per group")
    out = []
    for i, v in enumerate(vectors):
        d = float(np.mean(v)) if how in ("mean", "cost") else float(np.max(v, initial=0.0))
        w = float(unit_cost[i]) if how == "cost" else 1.0
        out.append(v / d * w if d > 0 else v.copy())  # (w = 1: exactly v / d, as before "cost")
    return out


def _knapsack_counts(cost: CostModel, ranked: list[np.ndarray], floors: np.ndarray, budget_cost: float,
                     solver: str, caps: np.ndarray, start: np.ndarray | None = None,
                     rounds: int = _KNAPSACK_ROUNDS) -> np.ndarray:
    from kpid_core.engine.knapsack import solve

    sizes = cost.sizes
    gid = np.concatenate([np.full(c, i, dtype=np.int64) for i, c in enumerate(caps)])
    rank = np.concatenate([np.arange(c, dtype=np.int64) for c in caps])
    values = np.concatenate([r[:c] for r, c in zip(ranked, caps)])
    values = np.maximum(values, 0.0)
    required = rank < floors[gid]
    k = sizes.copy() if start is None else start.copy()
    best = None
    for _ in range(rounds):
        c = np.maximum(cost.marginal(k), 0.0)
        capacity = budget_cost - cost.total(k) + float(np.dot(c, k))
        weights = c[gid]
        mask = np.asarray(solve(values, weights, max(capacity, 0.0), method=solver, required=required), dtype=bool)
        new_k = np.maximum(np.bincount(gid, weights=mask, minlength=len(sizes)).astype(np.int64), floors)
        m = cost.total(new_k)
        if m <= budget_cost and (best is None or m > best[0]):
            best = (m, new_k.copy())
        if np.array_equal(new_k, k):
            break
        k = new_k
    return best[1] if best is not None else k


def _repair_and_fill(cost: CostModel, ranked: list[np.ndarray], floors: np.ndarray, k: np.ndarray,
                     budget_cost: float, caps: np.ndarray) -> np.ndarray:
    """Exact greedy: drop while over budget, then add while something still fits."""
    k = k.copy()
    sizes = caps
    m = cost.total(k)
    while m > budget_cost:
        saved = cost.removal(k).astype(np.float64)
        best, best_ratio = -1, math.inf
        for g in range(len(k)):
            if k[g] <= floors[g] or saved[g] <= 0:
                continue
            ratio = max(ranked[g][k[g] - 1], 0.0) / saved[g]
            if ratio < best_ratio:
                best, best_ratio = g, ratio
        if best < 0:
            break  # only reachable when the floors alone exceed the budget (checked before)
        k[best] -= 1
        m = cost.total(k)
    while True:
        added = cost.addition(k).astype(np.float64)
        room = budget_cost - m
        best, best_ratio = -1, -math.inf
        for g in range(len(k)):
            if k[g] >= sizes[g] or added[g] > room:
                continue
            ratio = math.inf if added[g] <= 0 else max(ranked[g][k[g]], 0.0) / added[g]
            if ratio > best_ratio:
                best, best_ratio = g, ratio
        if best < 0:
            return k
        k[best] += 1
        m = cost.total(k)


def _uniform_counts(cost: CostModel, floors: np.ndarray, budget_cost: float) -> np.ndarray:
    sizes = cost.sizes

    def counts(f: float) -> np.ndarray:
        return np.clip(np.floor(f * sizes + 0.5).astype(np.int64), floors, sizes)

    lo, hi = 0.0, 1.0
    if cost.total(counts(hi)) <= budget_cost:
        return counts(hi)
    for _ in range(60):
        mid = (lo + hi) / 2
        if cost.total(counts(mid)) <= budget_cost:
            lo = mid
        else:
            hi = mid
    return counts(lo)


def _floors(sizes: np.ndarray, min_keep: float) -> np.ndarray:
    return np.array([min(int(s), max(1, math.ceil(min_keep * int(s) - 1e-9))) for s in sizes], dtype=np.int64)


def _budget_in(cost: CostModel, budget: float) -> int | float:
    dense = cost.total()
    return math.floor(budget * dense) if isinstance(dense, int) else budget * dense


def _in_units(ranked: list[np.ndarray], steps: np.ndarray | None) -> list[np.ndarray]:
    """Scores of units: a unit of ``s`` channels holds the next ``s`` channels by rank."""
    if steps is None:
        return ranked
    return [r.reshape(-1, int(s)).sum(1) for r, s in zip(ranked, steps)]


def _check_feasible(cm: CostModel, floors: np.ndarray, budget_cost: float, budget: float, min_keep: float,
                    whole: dict[str, list[str]] | None = None) -> None:
    """Raise InfeasibleBudgetError when the ``min_keep`` floors alone cost more than the budget.
    ``whole``: the operations that keep channels unpruned -> the roots of the groups they keep whole
    (:attr:`ChannelGroups.whole`), named in the message."""
    dense = cm.total()
    floor_cost = cm.total(floors)
    if floor_cost <= budget_cost:
        return
    min_budget = floor_cost / dense
    # cost that no kept count changes: layers no prunable group reaches (channel splits and
    # shuffles), named so that the user is not sent chasing min_keep alone
    fixed = cm.total(np.zeros(len(cm.sizes), dtype=np.int64)) / dense
    ops = "; ".join(f"{op} at {roots[0]}" + (f" and {len(roots) - 1} more" if len(roots) > 1 else "")
                    for op, roots in (whole or {}).items())
    if fixed <= 0.05:
        why = ""
    elif ops:
        why = f"; {fixed:.4f} of it is in layers whose channels cannot be pruned ({ops})"
    else:  # e.g. a latency model's fixed per-call time, the stem's input and the logits
        why = f"; {fixed:.4f} of it does not change with any kept channel count"
    raise InfeasibleBudgetError(
        f"budget {budget:g} is infeasible with min_keep={min_keep:g}: keeping the minimum channels "
        f"costs {min_budget:.4f} of the dense {cm.unit}{why}; use budget >= {math.ceil(min_budget * 1e4) / 1e4:.4f} "
        f"or a smaller min_keep", min_budget)


def allocate(groups: ChannelGroups, score_vectors: list[np.ndarray], budget: float, *, min_keep: float = 0.1,
             allocation: str = "knapsack", solver: str = "dp", normalize: str = "none",
             linearize: str = "current", spread: float = 1.5, cost: CostModel | None = None,
             round_to: int = 1) -> dict[str, list[int]]:
    """Choose the channels to keep so that the cost is ≤ ``budget`` × the dense model's cost.

    Args:
        groups: the channel groups (their MAC model is the default cost).
        score_vectors: one score array per group, as from :func:`score_vectors`.
        budget: fraction of the dense cost to keep, in (0, 1].
        min_keep: every group keeps at least this fraction of its channels (and at least one).
        allocation: ``knapsack`` (per-group counts by value per unit of cost) or ``uniform``.
        solver: the :func:`kpid_core.engine.knapsack.solve` method for ``knapsack``.
        normalize: how group scores are put on one scale (:func:`normalize_scores`).
        linearize: where the knapsack linearises the coupled cost model: ``current`` re-linearises at
            its own last counts for a few rounds (starting from the dense model); ``uniform`` once, at
            the uniform allocation of the same budget.
        spread: ``s >= 1`` keeps every group between 1/s and s times its uniform-allocation count (1: the
            uniform counts themselves, each group's channels ranked by its scores),
            so the knapsack moves channels between groups by value per MAC without emptying any
            (its linear values otherwise drive the coupled MAC model to corner solutions; chosen
            on Fashion-MNIST, see docs/knapsack.md); 0 = any count between the ``min_keep`` floor
            and the group's size (the paper).
        cost: the per-channel cost model the budget counts (:mod:`kpid_core.engine.cost`); None = the exact
            MAC model of ``groups``.
        round_to: keep counts that are multiples of this many channels in every group whose size
            allows it (:func:`kpid_core.engine.cost.blocked`); 1 = any count.

    Returns:
        ``group_key -> sorted kept channel indices`` (a group keeps its highest-scored channels).

    Raises:
        InfeasibleBudgetError: the ``min_keep`` floors alone cost more than the budget.
    """
    cm = blocked(cost if cost is not None else mac_cost(groups), round_to, getattr(groups, "unit_channels", None))
    steps = cm.steps if cm.steps is not None else np.ones(len(cm.sizes), dtype=np.int64)
    budget_cost = _budget_in(cm, budget)
    floors = _floors(cm.sizes, min_keep)
    _check_feasible(cm, floors, budget_cost, budget, min_keep, getattr(groups, "whole", None))
    # channels by descending score; ties broken by index so the choice is deterministic
    order = [np.lexsort((np.arange(len(v)), -v)) for v in score_vectors]
    even = _uniform_counts(cm, floors, budget_cost)
    unit = np.maximum(cm.marginal(even), 0.0) / steps if normalize == "cost" else None  # per channel
    ranked = normalize_scores([np.maximum(v[o], 0.0) for v, o in zip(score_vectors, order)], normalize, unit)
    ranked = _in_units(ranked, cm.steps)
    caps = cm.sizes.copy()
    if allocation == "uniform":
        k = even
    else:
        if spread > 0:
            floors = np.maximum(floors, np.ceil(even / spread - 1e-9).astype(np.int64))
            caps = np.maximum(floors, np.minimum(caps, np.floor(even * spread + 1e-9).astype(np.int64)))
        start = even if linearize == "uniform" else None
        k = _knapsack_counts(cm, ranked, floors, budget_cost, solver, caps, start,
                             1 if start is not None else _KNAPSACK_ROUNDS)
        k = _repair_and_fill(cm, ranked, floors, np.minimum(k, caps), budget_cost, caps)
    return {g.key: sorted(int(i) for i in order[g.index][: k[g.index] * steps[g.index]]) for g in groups}
