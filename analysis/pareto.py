"""Pareto fronts and hypervolume over a trials table: plain data out, no plotting here.

In the style of Optuna's ``visualization/_pareto_front.py``: :func:`pareto_front` returns a
:class:`ParetoInfo` NamedTuple that tests check directly, and ``analysis.plots`` only draws it.

Dominance follows Optuna's definition: a point is dominated when another point is at least as good
in every objective and strictly better in one. Exact duplicates therefore do not dominate each
other: if one copy is on the front, all copies are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.load import FINISHED

__all__ = ["DIRECTIONS", "ParetoInfo", "fronts_by", "hypervolume", "non_dominated_mask", "pareto_front"]

DIRECTIONS = ("minimize", "maximize")


class ParetoInfo(NamedTuple):
    """A Pareto front of two columns of a trials table.

    ``front``: the non-dominated rows among the considered ones, sorted by ``x`` (ascending).
    ``dominated``: considered rows that some other considered row dominates.
    ``excluded``: rows left out before the comparison — unfinished trials (``early_stopped``,
    ``error``, ``running``, ``pending``) when ``finished_only``, and rows with a NaN in ``x`` or ``y``.
    """

    front: pd.DataFrame
    dominated: pd.DataFrame
    excluded: pd.DataFrame
    x: str
    y: str
    minimize_x: bool
    maximize_y: bool

    @property
    def considered(self) -> pd.DataFrame:
        """Front and dominated rows together (the trials that competed)."""
        return pd.concat([self.front, self.dominated]).sort_index()


def non_dominated_mask(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``values`` (n × d) under ``directions``.

    ``directions[i]`` is ``"minimize"`` or ``"maximize"``. Exact in any dimension; 2-D uses an
    O(n log n) sweep, higher dimensions a pairwise O(n² d) check.
    """
    loss = _as_loss(np.asarray(values, dtype=float), directions)
    n = loss.shape[0]
    if n == 0:
        return np.zeros(0, dtype=bool)
    if np.isnan(loss).any():
        raise ValueError("values contain NaN; drop those rows first")
    if loss.shape[1] == 1:
        return loss[:, 0] == loss[:, 0].min()
    if loss.shape[1] == 2:
        return _non_dominated_2d(loss)
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        no_worse = np.all(loss <= loss[i], axis=1)
        better = np.any(loss < loss[i], axis=1)
        mask[i] = not np.any(no_worse & better)
    return mask


def _non_dominated_2d(loss: np.ndarray) -> np.ndarray:
    # Sweep x ascending; within one x only the lowest y can survive, and it survives only if it is
    # strictly below every y seen at a strictly smaller x.
    order = np.lexsort((loss[:, 1], loss[:, 0]))
    xs, ys = loss[order, 0], loss[order, 1]
    mask_sorted = np.zeros(len(order), dtype=bool)
    best_prev = np.inf
    start = 0
    while start < len(order):
        stop = start
        while stop < len(order) and xs[stop] == xs[start]:
            stop += 1
        group_min = ys[start]  # lexsort: the first of the group has the lowest y
        if group_min < best_prev:
            mask_sorted[start:stop] = ys[start:stop] == group_min
        best_prev = min(best_prev, group_min)
        start = stop
    mask = np.zeros(len(order), dtype=bool)
    mask[order] = mask_sorted
    return mask


def pareto_front(
    df: pd.DataFrame,
    x: str = "macs",
    y: str = "accuracy",
    minimize_x: bool = True,
    maximize_y: bool = True,
    finished_only: bool = True,
) -> ParetoInfo:
    """Split a trials table into its Pareto front over columns ``x`` and ``y``, the dominated rows and
    the excluded ones. Any two numeric columns work, e.g. ``latency_ms``.

    Args:
        df: a trials table (:func:`analysis.load.load_results`).
        x, y: the two columns.
        minimize_x, maximize_y: the direction in which each column is better.
        finished_only: leave out rows whose status is not finished (early-stopped trials report
            partial accuracies; they never reach the front, whatever their values).

    Returns:
        A :class:`ParetoInfo`: the front sorted by ``x`` (ties: the better ``y`` first), the
        dominated rows and the rows left out (missing values, unfinished).

    Raises:
        AnalysisError: ``x`` or ``y`` is not a column of ``df``.
    """
    for col in (x, y):
        if col not in df.columns:
            raise AnalysisError(f"column {col!r} not in results; available: {', '.join(map(str, df.columns))}")
    keep = df[x].notna() & df[y].notna()
    if finished_only and "status" in df.columns:
        keep &= df["status"].astype("string") == FINISHED
    considered = df[keep]
    directions = ("minimize" if minimize_x else "maximize", "maximize" if maximize_y else "minimize")
    mask = non_dominated_mask(considered[[x, y]].to_numpy(dtype=float), directions)
    front = considered[mask]
    # Ties in x: the better y first, so a step line through the front reads left to right.
    front = front.sort_values([x, y], ascending=[True, not maximize_y], kind="mergesort")
    return ParetoInfo(front, considered[~mask], df[~keep], x, y, minimize_x, maximize_y)


def fronts_by(df: pd.DataFrame, by: str | Sequence[str], **kwargs: Any) -> dict[Any, ParetoInfo]:
    """One :class:`ParetoInfo` per group of ``by`` (a column or several, e.g. ``"metric"`` or
    ``["kd_weight", "inner_weight"]``), to see which group wins at which budget. Rows with a missing
    group key (e.g. baseline rows have no importance metric) are left out. ``kwargs`` go to
    :func:`pareto_front`."""
    keys = [by] if isinstance(by, str) else list(by)
    for col in keys:
        if col not in df.columns:
            raise AnalysisError(f"cannot group by {col!r}: not a results column")
    out: dict[Any, ParetoInfo] = {}
    grouped = df.groupby(keys[0] if len(keys) == 1 else keys, observed=True, dropna=True, sort=True)
    for key, group in grouped:
        if isinstance(key, tuple) and len(key) == 1:
            key = key[0]
        out[key] = pareto_front(group, **kwargs)
    return out


def hypervolume(
    points: np.ndarray | Sequence[Sequence[float]],
    reference: Sequence[float],
    directions: Sequence[str] = DIRECTIONS,
) -> float:
    """Exact 2-D hypervolume (area) dominated by ``points`` and bounded by ``reference``.

    Args:
        points: n×2 values, e.g. (MACs, accuracy) of each trial.
        reference: the bounding point, e.g. ``(macs_dense, 0.0)`` for accuracy vs MACs.
        directions: per column ``"minimize"`` or ``"maximize"`` (default: x minimised, y maximised).

    Returns:
        The area, in the product of the columns' units. Points that do not dominate-or-equal the
        reference contribute nothing (ignored rather than rejected, unlike Optuna's
        ``compute_hypervolume``); no points give 0.

    Raises:
        ValueError: not two objectives, or a non-finite reference.
    """
    pts = np.asarray(points, dtype=float).reshape(-1, len(directions)) if len(points) else np.zeros((0, 2))
    ref = np.asarray(reference, dtype=float)
    if len(directions) != 2 or ref.shape != (2,) or pts.shape[1] != 2:
        raise ValueError("hypervolume() is exact for 2 objectives: pass n×2 points and a 2-value reference")
    if not np.all(np.isfinite(ref)):
        raise ValueError(f"reference point must be finite, got {reference!r}")
    loss, ref_loss = _as_loss(pts, directions), _as_loss(ref[None, :], directions)[0]
    loss = loss[np.all(np.isfinite(loss), axis=1) & np.all(loss <= ref_loss, axis=1)]
    if len(loss) == 0:
        return 0.0
    front = np.unique(loss[non_dominated_mask(loss, ("minimize", "minimize"))], axis=0)  # sorted by x
    # Staircase sum: each front point owns the slab from its x to the reference x, between its y and
    # the previous (higher) front point's y.
    upper_y = np.append(ref_loss[1], front[:-1, 1])
    return float(np.sum((ref_loss[0] - front[:, 0]) * (upper_y - front[:, 1])))


def _as_loss(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    if values.ndim != 2 or values.shape[1] != len(directions):
        raise ValueError(f"expected an n×{len(directions)} array, got shape {values.shape}")
    bad = [d for d in directions if d not in DIRECTIONS]
    if bad:
        raise ValueError(f"direction {bad[0]!r} is not one of {DIRECTIONS}")
    signs = np.array([1.0 if d == "minimize" else -1.0 for d in directions])
    return values * signs
