"""Fixtures for the analysis tests: realistic sweep results written in the sweep's on-disk format.

``results_dir`` is a directory holding ``trials.parquet`` + ``trials.csv`` with the columns of
docs/CONTRACTS.md ("sweeps → results on disk"): several budgets × importance metrics × KD weights ×
2 seeds, some early-stopped and errored trials, and same-data baseline architectures.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BUDGETS = (0.15, 0.25, 0.5, 0.75)
METRICS = ("taylor", "l1", "random")
KD_WEIGHTS = (0.0, 1.0)
INNER_WEIGHTS = (0.0, 1.0)


def make_trials(
    *,
    dataset: str = "digits",
    image_size: int = 16,
    arch: str = "digits_resnet",
    macs_dense: float = 4.2e6,
    params_dense: float = 1.7e5,
    teacher_accuracy: float = 0.975,
    seed: int = 0,
) -> pd.DataFrame:
    """A trials table as ``sweeps`` writes it (accuracy in [0, 1], MACs per image)."""
    rng = np.random.default_rng(seed)
    metric_skill = {"taylor": 0.0, "l1": -0.01, "random": -0.04}
    rows = []
    n = 0
    for budget, metric, kd, gamma, rep in itertools.product(BUDGETS, METRICS, KD_WEIGHTS, INNER_WEIGHTS, (0, 1)):
        n += 1
        loss = 0.09 * (1 - budget) ** 2 / budget * 0.5 - metric_skill[metric] - 0.006 * kd - 0.008 * gamma
        acc = float(np.clip(teacher_accuracy - loss + rng.normal(0, 0.004), 0.05, 0.999))
        macs_ratio = budget * (1 - abs(rng.normal(0, 0.01)))  # knapsack lands at or just under budget
        status, error, epochs_done = "finished", "", 8
        if n % 17 == 0:  # ASHA stopped it at a rung: partial, lower accuracy
            status, epochs_done, acc = "early_stopped", 2, acc - 0.08
        if n % 29 == 0:
            status, error, epochs_done, acc = "error", "NonFiniteLossError: loss is nan at epoch 3", 3, np.nan
        rows.append(_row(n, status, "pruned", arch, budget, metric, kd, gamma, acc, teacher_accuracy, macs_dense,
                         macs_ratio, params_dense, epochs_done, error, dataset, image_size, rep, rng))
    # Same-data baselines: smaller dense architectures trained on the same split.
    for width, acc in ((0.5, teacher_accuracy - 0.03), (0.25, teacher_accuracy - 0.09)):
        n += 1
        # fixed widths, as sweeps/baselines.py writes them: no budget (only width: match has one)
        row = _row(n, "finished", "baseline", arch, np.nan, None, 0.0, 0.0, acc, teacher_accuracy, macs_dense,
                   width**2, params_dense, 8, "", dataset, image_size, 0, rng)
        row["config/model.width"] = width
        rows.append(row)
    # A trial still pending when the table was written (interrupted sweep).
    n += 1
    rows.append(_row(n, "pending", "pruned", arch, 0.5, "l2", 1.0, 1.0, np.nan, np.nan, np.nan,
                     np.nan, np.nan, 0, "", dataset, image_size, 0, rng))
    df = pd.DataFrame(rows)
    df["config/model.width"] = df["config/model.width"].fillna(1.0)
    return df


def _row(n, status, kind, arch, budget, metric, kd, gamma, acc, teacher_acc, macs_dense, macs_ratio,
         params_dense, epochs_done, error, dataset, image_size, rep, rng) -> dict:
    macs = macs_dense * macs_ratio if status != "pending" else np.nan
    return {
        "trial_id": f"t{n:04d}",
        "status": status,
        "kind": kind,
        "arch": arch,
        "budget": budget,
        "metric": metric,
        "kd_weight": kd,
        "inner_weight": gamma,
        "temperature": 4.0,
        "match": "kept",
        "lr": 0.05,
        "epochs": 8,
        "accuracy": acc,
        "val_accuracy": acc + rng.normal(0, 0.003) if np.isfinite(acc) else np.nan,
        "teacher_accuracy": teacher_acc,
        "macs": macs,
        "macs_dense": macs_dense,
        "macs_ratio": macs_ratio,
        "params": params_dense * macs_ratio if np.isfinite(macs) else np.nan,
        "epochs_done": epochs_done,
        "latency_ms": 0.8 + 2.0 * macs_ratio + rng.normal(0, 0.03) if np.isfinite(macs) else np.nan,
        "error": error,
        "checkpoint_path": f"/results/digits_demo/trial_t{n:04d}/checkpoint_000007" if status == "finished" else "",
        "config/seed": rep,
        "config/data.name": dataset,
        "config/data.image_size": image_size,
        "config/model.name": arch,
        "config/model.width": None,
        "config/prune.budget": budget,
        "config/prune.metric": metric,
        "config/distill.kd_weight": kd,
        "config/distill.inner_weight": gamma,
        "config/train.epochs": 8,
    }


def write_results(directory: Path, df: pd.DataFrame) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    df.to_parquet(directory / "trials.parquet", index=False)
    df.to_csv(directory / "trials.csv", index=False)
    return directory


@pytest.fixture
def trials_df() -> pd.DataFrame:
    return make_trials()


@pytest.fixture
def results_dir(tmp_path: Path, trials_df: pd.DataFrame) -> Path:
    """A small digits sweep's results directory (trials.parquet + trials.csv)."""
    return write_results(tmp_path / "digits_demo", trials_df)


@pytest.fixture
def imagenet_results_dir(tmp_path: Path) -> Path:
    """Results of a ResNet-50 sweep on ImageNet at 224 px (published points apply)."""
    df = make_trials(dataset="imagenet", image_size=224, arch="resnet50", macs_dense=4.089e9,
                     params_dense=25.56e6, teacher_accuracy=0.7613, seed=1)
    return write_results(tmp_path / "imagenet_r50", df)
