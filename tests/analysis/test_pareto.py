"""Pareto front and hypervolume against Optuna's implementations, and the front's status rules."""

from __future__ import annotations

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna._hypervolume import compute_hypervolume
from optuna.study import StudyDirection
from optuna.study._multi_objective import _get_pareto_front_trials_by_trials
from optuna.trial import TrialState, create_trial

from analysis.errors import AnalysisError
from analysis.pareto import fronts_by, hypervolume, non_dominated_mask, pareto_front

optuna.logging.set_verbosity(optuna.logging.WARNING)
_DIR = {"minimize": StudyDirection.MINIMIZE, "maximize": StudyDirection.MAXIMIZE}


def _optuna_front(values: np.ndarray, directions: tuple[str, ...]) -> set[int]:
    trials = [create_trial(values=list(map(float, v)), state=TrialState.COMPLETE, user_attrs={"i": i})
              for i, v in enumerate(values)]
    front = _get_pareto_front_trials_by_trials(trials, [_DIR[d] for d in directions])
    return {t.user_attrs["i"] for t in front}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("directions", [("minimize", "maximize"), ("minimize", "minimize"),
                                        ("maximize", "maximize"), ("maximize", "minimize")])
def test_front_equals_optuna_with_ties_and_duplicates(seed, directions):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    # Small integer grid: many equal x, equal y and exact duplicate points.
    values = rng.integers(0, 8, size=(n, 2)).astype(float)
    values = np.vstack([values, values[: n // 3]])
    mine = set(np.flatnonzero(non_dominated_mask(values, directions)))
    assert mine == _optuna_front(values, directions)


def test_front_equals_optuna_in_three_objectives():
    rng = np.random.default_rng(7)
    values = rng.integers(0, 5, size=(80, 3)).astype(float)
    directions = ("minimize", "maximize", "minimize")
    assert set(np.flatnonzero(non_dominated_mask(values, directions))) == _optuna_front(values, directions)


@pytest.mark.parametrize("seed", range(8))
def test_hypervolume_equals_optuna(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(1, 50))
    macs = rng.integers(1, 20, size=n).astype(float) * 1e5
    acc = np.round(rng.uniform(0.1, 0.99, size=n), 2)  # rounding makes ties
    pts = np.column_stack([macs, acc])
    pts = np.vstack([pts, pts[: n // 4]])
    ref = (1.5e6, 0.05)  # some points lie beyond it in x: they must be ignored
    loss = np.column_stack([pts[:, 0], -pts[:, 1]])
    inside = np.all(loss <= np.array([ref[0], -ref[1]]), axis=1)
    expected = compute_hypervolume(loss[inside], np.array([ref[0], -ref[1]]))
    assert hypervolume(pts, ref) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_hypervolume_by_hand():
    # Staircase of (1, 3) and (2, 5) under reference (4, 0): 3·3 + 2·(5−3) = 13.
    assert hypervolume([[1, 3], [2, 5], [3, 4]], (4, 0)) == pytest.approx(13.0)
    assert hypervolume([[5, 9]], (4, 0)) == 0.0  # beyond the reference: contributes nothing
    assert hypervolume(np.zeros((0, 2)), (4, 0)) == 0.0
    with pytest.raises(ValueError, match="2 objectives"):
        hypervolume([[1, 2, 3]], (1, 1, 1), ("minimize",) * 3)


def _df(rows):
    return pd.DataFrame(rows, columns=["trial_id", "status", "macs", "accuracy", "metric"])


def test_unfinished_and_dominated_never_on_front():
    df = _df([
        ("a", "finished", 1e6, 0.80, "l1"),
        ("b", "finished", 2e6, 0.90, "taylor"),
        ("c", "finished", 2e6, 0.85, "taylor"),       # dominated by b (same MACs, lower accuracy)
        ("d", "finished", 3e6, 0.88, "l1"),           # dominated by b
        ("e", "early_stopped", 0.5e6, 0.99, "l1"),    # would dominate everything, but is partial
        ("f", "error", np.nan, np.nan, "l1"),
        ("g", "finished", np.nan, 0.95, "l1"),        # no MACs: cannot be placed
        ("h", "finished", 1e6, 0.80, "random"),       # exact duplicate of a: both on the front
        ("i", "pending", 1e6, 0.99, "l1"),
    ])
    info = pareto_front(df)
    assert list(info.front["trial_id"]) in (["a", "h", "b"], ["h", "a", "b"])
    assert set(info.dominated["trial_id"]) == {"c", "d"}
    assert set(info.excluded["trial_id"]) == {"e", "f", "g", "i"}
    assert info.front["macs"].is_monotonic_increasing
    # Without the status filter the early-stopped trial takes over the front (why the filter exists).
    assert "e" in set(pareto_front(df, finished_only=False).front["trial_id"])


def test_any_two_columns_and_directions():
    df = _df([("a", "finished", 1e6, 0.8, "l1"), ("b", "finished", 2e6, 0.9, "l1")])
    df["latency_ms"] = [3.0, 1.0]
    info = pareto_front(df, x="latency_ms", y="accuracy")
    assert list(info.front["trial_id"]) == ["b"]  # faster and more accurate
    info = pareto_front(df, x="macs", y="accuracy", maximize_y=False)
    assert list(info.front["trial_id"]) == ["a"]
    with pytest.raises(AnalysisError, match="nope"):
        pareto_front(df, x="nope")


def test_fronts_by_metric(trials_df):
    fronts = fronts_by(trials_df[trials_df["kind"] == "pruned"], "metric")
    assert set(fronts) == {"taylor", "l1", "random", "l2"}
    assert fronts["l2"].front.empty and list(fronts["l2"].excluded["status"]) == ["pending"]
    for metric, info in fronts.items():
        group = trials_df[(trials_df["metric"] == metric) & (trials_df["status"] == "finished")]
        assert set(info.front["trial_id"]) <= set(group["trial_id"])
        assert set(info.front["trial_id"]) == set(pareto_front(group).front["trial_id"])
    by_kd = fronts_by(trials_df, ["kd_weight", "inner_weight"])
    assert set(by_kd) == {(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)}
