"""The trials table (``trials.parquet`` / ``trials.csv``) and the end-of-sweep summary.

One row per trial with exactly the columns of docs/CONTRACTS.md; the columns, their dtypes and the
status rule are :mod:`kpid_core.results_schema`'s, which the analysis reads the table with.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from kpid_core import results_schema
from kpid_core.files import atomic_write
from kpid_core.results_schema import COLUMNS
from sweeps.space import apply_params

__all__ = ["COLUMNS", "summary_lines", "trial_row", "trials_table", "write_trials"]


def trial_row(
    trial_id: str,
    params: dict[str, Any],
    base: dict[str, Any],
    metrics: dict[str, Any] | None,
    error: str | None = None,
    checkpoint_path: str | None = None,
) -> dict[str, Any]:
    """One table row from a trial's sampled ``params``, the flat ``base`` config and its last result
    (:func:`kpid_core.results_schema.trial_row` of the trial's config)."""
    return results_schema.trial_row(trial_id, apply_params(base, params), metrics, error=error,
                                    checkpoint_path=checkpoint_path)


def trials_table(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Rows → the typed trials table (:func:`kpid_core.results_schema.typed_table`), sorted by trial id."""
    df = results_schema.typed_table(rows)
    return df.sort_values("trial_id", kind="stable").reset_index(drop=True)


def write_trials(df: pd.DataFrame, exp_dir: Path) -> tuple[Path, Path]:
    """Write ``trials.parquet`` and ``trials.csv`` into the experiment directory (atomic replace)."""
    exp_dir = Path(exp_dir)
    out = []
    for name, writer in (("trials.parquet", df.to_parquet), ("trials.csv", df.to_csv)):
        out.append(atomic_write(exp_dir / name, lambda tmp, w=writer: w(tmp, index=False)))
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
