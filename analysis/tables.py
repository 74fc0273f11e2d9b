"""Plain-data summaries of a trials table that the plots and the report draw: best trial per budget,
metric-vs-budget comparison with repeat spread, KD-weight grids, gains over baselines at matched MACs.

Only finished pruned trials count here; early-stopped and errored ones are never "best".
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.load import FINISHED

__all__ = [
    "SETTING_COLUMNS",
    "best_per_budget",
    "finished_pruned",
    "gains_over_baselines",
    "kd_grid",
    "metric_vs_budget",
    "teacher_point",
]

# Columns that together identify one training setting; trials sharing them (and metric, budget) are
# repeats of the same setting, e.g. with different seeds.
SETTING_COLUMNS = ("arch", "kd_weight", "inner_weight", "temperature", "match", "lr", "epochs")


def finished_pruned(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of finished pruning trials (not baselines, not early-stopped/errored)."""
    mask = df["status"].astype("string") == FINISHED
    if "kind" in df.columns:
        mask &= df["kind"].astype("string").fillna("pruned") == "pruned"
    return df[mask]


def best_per_budget(df: pd.DataFrame, y: str = "accuracy", maximize: bool = True, budget: str = "budget") -> pd.DataFrame:
    """The best finished pruned trial at each budget (one row per budget, sorted by budget)."""
    rows = finished_pruned(df).dropna(subset=[budget, y])
    if rows.empty:
        return rows
    idx = rows.groupby(budget)[y].idxmax() if maximize else rows.groupby(budget)[y].idxmin()
    return rows.loc[idx.to_numpy()].sort_values(budget)


def metric_vs_budget(df: pd.DataFrame, y: str = "accuracy", by: str = "metric", budget: str = "budget") -> pd.DataFrame:
    """Per (``by``, budget): the best setting's mean ``y`` over its repeats, their std and count.

    Settings are grouped by :data:`SETTING_COLUMNS`; the error bar is the spread over repeats of the
    winning setting (NaN std with a single repeat), not over different KD weights.
    Columns: ``by``, ``budget``, ``mean``, ``std``, ``n``, ``macs`` (mean MACs), setting columns.
    """
    rows = finished_pruned(df).dropna(subset=[by, budget, y])
    cols = [c for c in SETTING_COLUMNS if c in rows.columns and rows[c].notna().any()]
    if rows.empty:
        return pd.DataFrame(columns=[by, budget, "mean", "std", "n", "macs", *cols])
    keys = [by, budget, *cols]
    stats = (
        rows.groupby(keys, dropna=False, observed=True)
        .agg(mean=(y, "mean"), std=(y, "std"), n=(y, "size"), macs=("macs", "mean"))
        .reset_index()
    )
    best = stats.loc[stats.groupby([by, budget], observed=True)["mean"].idxmax().to_numpy()]
    return best.sort_values([by, budget]).reset_index(drop=True)[[by, budget, "mean", "std", "n", "macs", *cols]]


def kd_grid(
    df: pd.DataFrame,
    y: str = "accuracy",
    rows: str = "inner_weight",
    cols: str = "kd_weight",
    budget: str = "budget",
) -> dict[float, pd.DataFrame]:
    """Per budget, a ``rows`` × ``cols`` table (default γ × logits KD weight) of the best ``y`` among
    finished pruned trials with those weights (max over metrics and other settings, mean over
    repeats first). Empty dict when the weight columns were not swept."""
    data = finished_pruned(df).dropna(subset=[rows, cols, budget, y])
    if data.empty:
        return {}
    other = [c for c in ("metric", *SETTING_COLUMNS) if c in data.columns and c not in (rows, cols)]
    means = data.groupby([budget, rows, cols, *other], dropna=False, observed=True)[y].mean().reset_index()
    out: dict[float, pd.DataFrame] = {}
    for b, group in means.groupby(budget):
        out[float(b)] = group.pivot_table(index=rows, columns=cols, values=y, aggfunc="max").sort_index()
    return out


def gains_over_baselines(front: pd.DataFrame, baselines: pd.DataFrame, x: str = "macs", y: str = "accuracy") -> pd.DataFrame:
    """For each baseline: the best front ``y`` at ``x`` ≤ the baseline's ``x``, minus the baseline's ``y``.

    ``front`` is a Pareto front (rows with ``trial_id``); ``baselines`` has ``label``, ``x`` and ``y``
    columns in the same units. ``gain`` is NaN when no front point is as cheap as the baseline.
    A same-data baseline whose width was matched to a MAC budget (``budget`` and ``macs_dense`` set,
    ``x == "macs"``) lands a little under it (widths move in steps of 8 channels); it is compared with
    the front at that budget, the cap every pruned trial of the budget had.
    """
    for col in (x, y):
        if col not in baselines.columns:
            raise AnalysisError(f"baselines lack column {col!r}")
    records: list[dict[str, Any]] = []
    for _, b in baselines.iterrows():
        cap = b[x]
        if x == "macs" and pd.notna(b.get("budget")) and pd.notna(b.get("macs_dense")):
            cap = max(cap, float(b["budget"]) * float(b["macs_dense"]))
        cheap = front[front[x] <= cap]
        rec: dict[str, Any] = {"baseline": b.get("label", b.get("model")), f"baseline_{x}": b[x], f"baseline_{y}": b[y]}
        if len(cheap):
            best = cheap.loc[cheap[y].idxmax()]
            rec.update({"trial_id": best.get("trial_id"), x: best[x], y: best[y], "gain": best[y] - b[y]})
        else:
            rec.update({"trial_id": None, x: np.nan, y: np.nan, "gain": np.nan})
        records.append(rec)
    return pd.DataFrame.from_records(records)


def teacher_point(df: pd.DataFrame) -> dict[str, float] | None:
    """The dense teacher's MACs and accuracy (medians over trials that report them), or None."""
    out: dict[str, float] = {}
    for key, col in (("macs", "macs_dense"), ("accuracy", "teacher_accuracy")):
        if col in df.columns and df[col].notna().any():
            out[key] = float(df[col].median())
    return out or None
