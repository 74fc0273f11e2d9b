"""A latency sweep on the shared local Ray cluster: cost and round_to in the search space, measured
latency of dense and pruned models in trials.parquet, and the report's front on latency."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from sweep_helpers import real_sweep, sweep_args

from kpid_core.errors import ConfigError
from sweeps.run import run_sweep
from sweeps.space import load_sweep

pytestmark = pytest.mark.slow


def test_latency_sweep_records_measured_latency_and_draws_its_front(ray_2_cpus, tmp_path):
    cache = tmp_path / "cache"
    cfg = real_sweep(tmp_path / "s.yaml", name="lat", samples=1, epochs=1, mode="grid", budgets=(0.9,),
                     space={"budget": [0.9], "cost": ["latency", "macs"]},
                     # batch 64: at batch 2 per-call overhead is ~88 % of this tiny net's time, so a table measured
                     # on a busy machine could put budget 0.9 below the floors' cost (InfeasibleBudgetError)
                     extra_base={"round_to": 8, "latency.measure": "on", "latency.cache_dir": str(cache), "latency.batch": 64,
                                 "latency.repeats": 3, "latency.table_repeats": 1, "latency.land_rounds": 1})
    exp = run_sweep(sweep_args("--config", str(cfg), "--storage", str(tmp_path / "res"), "--gpus-per-trial", "0"),
                    out=io.StringIO())
    df = pd.read_parquet(exp / "trials.parquet")
    assert len(df) == 2 and (df["status"] == "finished").all()
    assert sorted(df["cost"]) == ["latency", "macs"]
    assert (df["config/prune.round_to"] == 8).all()
    assert df[["latency_ms", "latency_dense_ms", "latency_ratio"]].notna().all().all()
    assert df["latency_device"].str.startswith("cpu: ").all()
    assert (df["config/latency.batch"] == 64).all() and (df["config/latency.land_rounds"] == 1).all()
    # one table, measured once on this machine, shared by the latency trials through the cache
    assert len(list(cache.glob("*.json"))) == 1
    mac_rows = df[df["cost"] == "macs"]
    assert (mac_rows["macs_ratio"] <= 0.9).all()
    report = exp / "report"
    front = pd.read_csv(report / "pareto_latency.csv")
    assert set(front["trial_id"]) <= set(df["trial_id"]) and len(front) >= 1
    assert front["latency_ms"].is_monotonic_increasing
    assert "Pareto front on measured latency" in (report / "summary.md").read_text()


def test_space_rejects_a_bad_cost(tmp_path):
    cfg = real_sweep(tmp_path / "s.yaml", name="bad", mode="grid", space={"cost": ["latency", "flops"]})
    with pytest.raises(ConfigError, match="prune.cost='flops' is not allowed"):
        load_sweep(cfg)
