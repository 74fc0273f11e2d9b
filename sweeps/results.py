"""The trials table (``trials.parquet`` / ``trials.csv``) and the end-of-sweep summary.

One row per trial with exactly the columns of docs/CONTRACTS.md. Status: ``finished`` when the trial
sent its final result, ``early_stopped`` when ASHA stopped it (it has partial, validation-only
metrics and no test ``accuracy``), ``error`` for a crash or a NaN loss, ``pending`` when it never ran.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from sweeps.search import FINAL_KEY
from sweeps.space import BUDGET_KEY, apply_params, flatten

__all__ = ["COLUMNS", "summary_lines", "trial_row", "trials_table", "write_trials"]

COLUMNS = [
    "trial_id", "status", "kind", "arch", "budget", "metric", "kd_weight", "inner_weight",
    "temperature", "match", "lr", "epochs", "accuracy", "val_accuracy", "teacher_accuracy", "macs",
    "macs_dense", "macs_ratio", "params", "epochs_done", "latency_ms", "error", "checkpoint_path",
]
_FLOAT = {"budget", "kd_weight", "inner_weight", "temperature", "lr", "accuracy", "val_accuracy",
          "teacher_accuracy", "macs_ratio", "latency_ms"}
_INT = {"macs", "macs_dense", "params", "epochs", "epochs_done"}
_FROM_CONFIG = {
    "arch": "model.name", "budget": BUDGET_KEY, "metric": "prune.metric",
    "kd_weight": "distill.kd_weight", "inner_weight": "distill.inner_weight",
    "temperature": "distill.temperature", "match": "distill.match", "lr": "train.lr",
    "epochs": "train.epochs",
}


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def trial_row(
    trial_id: str,
    params: dict[str, Any],
    base: dict[str, Any],
    metrics: dict[str, Any] | None,
    error: str | None = None,
    checkpoint_path: str | None = None,
) -> dict[str, Any]:
    """One table row from a trial's sampled ``params``, the flat ``base`` config and its last result."""
    cfg = flatten(apply_params(base, params))
    m = metrics or {}
    if error or m.get("trial_error"):
        status, err = "error", str(error or m.get("trial_error"))
    elif m.get(FINAL_KEY):
        status, err = "finished", ""
    elif m:
        status, err = "early_stopped", ""
    else:
        status, err = "pending", ""
    row: dict[str, Any] = {"trial_id": trial_id, "status": status, "kind": "pruned"}
    for col, key in _FROM_CONFIG.items():
        row[col] = cfg.get(key)
    final = status == "finished"
    row.update(
        accuracy=_num(m.get("accuracy")) if final else math.nan,
        val_accuracy=_num(m.get("val_accuracy")),
        teacher_accuracy=_num(m.get("teacher_accuracy")),
        macs=m.get("macs"), macs_dense=m.get("macs_dense"), macs_ratio=_num(m.get("macs_ratio")),
        params=m.get("params"),
        epochs_done=m.get("epochs_done", m.get("epoch", 0)) if m else 0,
        latency_ms=_num(m.get("latency_ms")),
        error=err,
        checkpoint_path=checkpoint_path or "",
    )
    for k, v in cfg.items():
        row[f"config/{k}"] = v if isinstance(v, (int, float, str, bool)) or v is None else str(v)
    return row


def trials_table(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Rows → DataFrame with the contract's column order and dtypes (NaN for missing numbers)."""
    df = pd.DataFrame(list(rows))
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = None
    cfg_cols = sorted(c for c in df.columns if c.startswith("config/"))
    df = df[COLUMNS + cfg_cols]
    for c in _FLOAT:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    for c in _INT:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
    for c in cfg_cols:  # mixed None/str columns break parquet; keep them as strings where mixed
        if df[c].map(type).nunique() > 1:
            df[c] = df[c].map(lambda v: None if v is None else str(v))
    for c in ("error", "checkpoint_path"):
        df[c] = df[c].fillna("").astype(str)
    return df.sort_values("trial_id", kind="stable").reset_index(drop=True)


def write_trials(df: pd.DataFrame, exp_dir: Path) -> tuple[Path, Path]:
    """Write ``trials.parquet`` and ``trials.csv`` into the experiment directory (atomic replace)."""
    exp_dir = Path(exp_dir)
    out = []
    for name, writer in (("trials.parquet", df.to_parquet), ("trials.csv", df.to_csv)):
        tmp = exp_dir / f".{name}.tmp"
        writer(tmp, index=False)
        tmp.replace(exp_dir / name)
        out.append(exp_dir / name)
    return out[0], out[1]


def summary_lines(df: pd.DataFrame) -> list[str]:
    """One screen: status counts, then the best finished trial per budget (test accuracy)."""
    counts = df["status"].value_counts().to_dict()
    lines = ["trials: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))]
    fin = df[(df["status"] == "finished") & (df["kind"] != "baseline")]
    base = df[(df["status"] == "finished") & (df["kind"] == "baseline")]
    if fin.empty:
        lines.append("no trial finished")
        return lines + _baseline_lines(base)
    lines.append(f"{'budget':>7} {'metric':<12} {'kd_w':>5} {'gamma':>6} {'acc':>7} {'MACs':>12} {'ratio':>6}")
    for budget, grp in fin.groupby("budget", sort=True):
        best = grp.sort_values(["accuracy", "val_accuracy"], ascending=False).iloc[0]
        lines.append(
            f"{budget:>7.3f} {best['metric']!s:<12} {best['kd_weight']:>5.2f} "
            f"{best['inner_weight']:>6.2f} {best['accuracy']:>7.4f} {int(best['macs']):>12,d} "
            f"{best['macs_ratio']:>6.3f}"
        )
    return lines + _baseline_lines(base)


def _baseline_lines(base: pd.DataFrame) -> list[str]:
    if base.empty:
        return []
    lines = ["same-data baselines (trained from scratch under the same teacher):"]
    for _, b in base.sort_values("macs").iterrows():
        lines.append(f"  {b['trial_id']:<34} {b['accuracy']:>7.4f} {int(b['macs']):>12,d} {b['macs_ratio']:>6.3f}")
    return lines
