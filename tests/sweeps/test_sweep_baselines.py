"""Same-data baselines in a real sweep: rows of their own kind, at the budget's MACs, drawn by the analysis."""

from __future__ import annotations

import io

import pandas as pd
import pytest
import yaml
from sweep_helpers import real_sweep, sweep_args

from sweeps.run import run_sweep

pytestmark = pytest.mark.slow


def test_sweep_trains_listed_baselines_once(ray_2_cpus, tmp_path):
    cfg = real_sweep(tmp_path / "s.yaml", name="bl", samples=2, epochs=1, budgets=(0.3, 0.6))
    raw = yaml.safe_load(cfg.read_text())
    raw["baselines"] = [{"model": "mobilenet_v3_small", "width": "match", "budgets": [0.3]},
                        {"model": "digits_resnet", "width": 0.5}]
    cfg.write_text(yaml.safe_dump(raw))
    out = io.StringIO()
    exp = run_sweep(sweep_args("--config", str(cfg), "--storage", str(tmp_path / "res"), "--gpus-per-trial", "0"),
                    out=out)
    df = pd.read_parquet(exp / "trials.parquet")
    base = df[df["kind"] == "baseline"].set_index("trial_id")
    assert sorted(base.index) == ["baseline-digits_resnet-w0.5", "baseline-mobilenet_v3_small-b0.3"]
    assert (base["status"] == "finished").all() and base["accuracy"].between(0.0, 1.0).all()
    assert (df.loc[df["kind"] == "pruned", "status"].isin(["finished", "early_stopped"])).all()
    mnv3 = base.loc["baseline-mobilenet_v3_small-b0.3"]
    assert mnv3["arch"] == "mobilenet_v3_small" and mnv3["budget"] == 0.3 and 0.2 < mnv3["macs_ratio"] <= 0.3
    assert float(base.loc["baseline-digits_resnet-w0.5", "config/model.width"]) == 0.5
    assert "same-data baselines" in out.getvalue()

    from analysis.baselines import same_data_baselines
    from analysis.load import load_results

    labels = set(same_data_baselines(load_results(exp))["label"])
    assert labels == {"digits_resnet ×0.5", f"mobilenet_v3_small ×{float(mnv3['config/model.width']):.3g}"}
    summary = (exp / "report" / "summary.md").read_text()
    assert all(label in summary for label in labels)

    # finished baselines are results: running them again (as --resume does) trains nothing
    from sweeps.baselines import run_baselines
    from sweeps.space import load_sweep

    spec = load_sweep(exp / "sweep.yaml")
    again = io.StringIO()
    rows = run_baselines(spec, exp, None, num_cpus=1, num_gpus=0, out=again)
    assert again.getvalue() == "" and sorted(r["trial_id"] for r in rows) == sorted(base.index)
