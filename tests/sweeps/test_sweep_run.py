"""End-to-end sweeps on the shared local Ray cluster with the real ``run_trial`` on digits."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import optuna
import pandas as pd
import pytest
from fake_trial import counting_prepare, counting_run_trial
from sweep_helpers import count, real_sweep, sweep_args

from kpid_core.results_schema import COLUMNS
from sweeps.run import run_sweep

pytestmark = pytest.mark.slow


def _last_results(exp: Path) -> list[dict]:
    """The last result Ray recorded for every trial (its ``result.json``)."""
    out = []
    for d in sorted(exp.glob("trial_*")):
        lines = (d / "result.json").read_text().splitlines()
        out.append(json.loads(lines[-1]))
    return out


def _check_baselines(exp: Path, df: pd.DataFrame, printed: str) -> None:
    """Same-data baselines: rows of their own kind, at the budget's MACs, drawn by the analysis, not redone."""
    base = df[df["kind"] == "baseline"].set_index("trial_id")
    assert sorted(base.index) == ["baseline-digits_resnet-w0.5", "baseline-mobilenet_v3_small-b0.3"]
    assert (base["status"] == "finished").all() and base["accuracy"].between(0.0, 1.0).all()
    mnv3 = base.loc["baseline-mobilenet_v3_small-b0.3"]
    assert mnv3["arch"] == "mobilenet_v3_small" and mnv3["budget"] == 0.3 and 0.2 < mnv3["macs_ratio"] <= 0.3
    assert float(base.loc["baseline-digits_resnet-w0.5", "config/model.width"]) == 0.5
    assert math.isnan(base.loc["baseline-digits_resnet-w0.5", "budget"])
    assert "same-data baselines" in printed
    timings = json.loads((exp / "timings.json").read_text())  # baselines timed apart from Tune's trials
    assert timings["baselines_s"] > 0 and timings["fit_s"] > 0

    from analysis.baselines import same_data_baselines
    from analysis.load import load_results

    labels = set(same_data_baselines(load_results(exp))["label"])
    assert labels == {"digits_resnet ×0.5", f"mobilenet_v3_small ×{float(mnv3['config/model.width']):.3g}"}
    summary = (exp / "report" / "summary.md").read_text()
    assert all(label in summary for label in labels)

    # finished baselines are results: running them again (as --resume does) trains nothing
    from sweeps.baselines import run_baselines
    from sweeps.space import load_sweep

    again = io.StringIO()
    rows = run_baselines(load_sweep(exp / "sweep.yaml"), exp, None, num_cpus=1, num_gpus=0, out=again)
    assert again.getvalue() == "" and sorted(r["trial_id"] for r in rows) == sorted(base.index)


def test_multi_objective_sweep_runs_once_per_sweep_preparation(ray_2_cpus, tmp_path, markers):
    cfg = real_sweep(tmp_path / "s.yaml", samples=4, epochs=2,
                     early_stopping={"grace_period": 1, "reduction_factor": 2},
                     baselines=[{"model": "mobilenet_v3_small", "width": "match", "budgets": [0.3], "epochs": 1},
                                {"model": "digits_resnet", "width": 0.5, "epochs": 1}])
    out = io.StringIO()
    exp = run_sweep(sweep_args("--config", str(cfg), "--storage", str(tmp_path / "res"),
                               "--gpus-per-trial", "0"),
                    trial_fn=counting_run_trial, prepare_fn=counting_prepare, out=out)
    df = pd.read_parquet(exp / "trials.parquet")
    assert tuple(df.columns[: len(COLUMNS)]) == COLUMNS
    assert "config/prune.budget" in df.columns and "config/distill.kd_weight" in df.columns
    assert pd.read_csv(exp / "trials.csv")["trial_id"].tolist() == df["trial_id"].tolist()
    _check_baselines(exp, df, out.getvalue())
    df = df[df["kind"] == "pruned"]
    assert len(df) == 4 and set(df["status"]) <= {"finished", "early_stopped"}
    fin = df[df.status == "finished"]
    assert len(fin) >= 2 and fin["accuracy"].between(0.2, 1.0).all()
    assert (fin["epochs_done"] == 2).all()
    # the trial hit its budget (MAC ratio within a few points), measured by the real pruning
    assert (fin["macs_ratio"] - fin["budget"]).abs().max() < 0.05
    # stopped trials carry no test accuracy: they cannot reach a Pareto front as if finished
    assert df.loc[df.status == "early_stopped", "accuracy"].isna().all()

    # Optuna: two objectives, only finished trials COMPLETE, with the values the trials reported
    study = optuna.load_study(study_name="kpid-real", storage=f"sqlite:///{exp / 'optuna.db'}")
    assert len(study.directions) == 2
    states = sorted(t.state.name for t in study.trials)
    assert states.count("COMPLETE") == len(fin)
    assert states.count("PRUNED") == (df.status == "early_stopped").sum()
    completed = sorted(tuple(t.values) for t in study.trials if t.state.name == "COMPLETE")
    assert completed == sorted(zip(fin["val_accuracy"], fin["macs"].astype(float)))

    # teacher and importance were made once, in the preparation, never in a trial
    assert count(markers, "prepare") == 1
    assert count(markers, "teacher") == 1
    assert count(markers, "importance") == 2  # taylor and l1, each once
    assert count(markers, "trial") == 4
    assert (exp / "shared" / "teacher.pt").exists() and (exp / "sweep.yaml").exists()
    text = out.getvalue()
    assert text.count("budget=") >= 4 and "trials:" in text


def test_packed_simulated_gpus_cpu_fallback_and_nan_trial(ray_2_cpus, tmp_path, markers):
    """8 simulated GPUs, 0.5 per trial: 16 slots; trials run on CPU; a NaN trial is an error."""
    cfg = real_sweep(tmp_path / "s.yaml", name="gpus", samples=1, epochs=1, mode="grid",
                     space={"lr": [0.05, 1.0e12]})
    out = io.StringIO()
    base = ["--config", str(cfg), "--storage", str(tmp_path / "res"), "--gpus-per-trial", "0.5"]
    run_sweep(sweep_args(*base, "--cpus-per-trial", "0.125", "--dry-run"), out=out)
    assert "parallel_trials=16" in out.getvalue() and "num_gpus=8" in out.getvalue()
    assert not (tmp_path / "res").exists()  # a dry run writes nothing

    exp = run_sweep(sweep_args(*base, "--cpus-per-trial", "1"), trial_fn=counting_run_trial,
                    prepare_fn=counting_prepare, out=io.StringIO())
    results = _last_results(exp)
    assert len(results) == 2
    for r in results:
        assert r["assigned/GPU"] == 0.5 and r["assigned/CPU"] == 1.0
        assert r["cuda_visible_devices"] != ""  # Ray gave it a (simulated) device ...
    df = pd.read_parquet(exp / "trials.parquet").set_index("lr")
    # ... the sane trial ran (on CPU: torch sees no GPU) and finished; the diverging one is an error
    assert df.loc[0.05, "status"] == "finished" and df.loc[0.05, "accuracy"] > 0.2
    assert df.loc[1.0e12, "status"] == "error" and "NonFiniteLoss" in df.loc[1.0e12, "error"]
    assert math.isnan(df.loc[1.0e12, "accuracy"])
    assert count(markers, "trial") == 2  # a deterministic NaN is not retried


def test_sweep_on_a_timm_model_by_name(ray_2_cpus, tmp_path):
    """timm:NAME reaches the Ray workers: the real run_trial prunes timm's LCNet to its budget."""
    cfg = real_sweep(tmp_path / "s.yaml", name="timm", samples=1, epochs=1, mode="optuna",
                     extra_base={"model": "timm:lcnet_050", "data.train_size": 300}, space={"budget": [0.3, 0.6]})
    exp = run_sweep(sweep_args("--config", str(cfg), "--storage", str(tmp_path / "res"), "--gpus-per-trial", "0"),
                    out=io.StringIO())
    df = pd.read_parquet(exp / "trials.parquet")
    assert len(df) == 1 and (df["status"] == "finished").all() and (df["arch"] == "timm:lcnet_050").all()
    assert ((df["budget"] - df["macs_ratio"]).between(0, 0.005 * df["budget"])).all()
