"""A data-parallel trial: Ray Train TorchTrainer with 2 CPU workers (gloo) inside a Tune trial."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from fake_trial import counting_prepare, counting_run_trial
from sweep_helpers import real_sweep, sweep_args

from kpid_core.errors import ConfigError
from sweeps.run import run_sweep

pytestmark = pytest.mark.slow


def test_two_cpu_workers_per_trial(ray_2_cpus, tmp_path, markers):
    cfg = real_sweep(tmp_path / "s.yaml", name="ddp", samples=1, epochs=1)
    exp = run_sweep(sweep_args("--config", str(cfg), "--storage", str(tmp_path / "res"), "--gpus-per-trial", "0",
                               "--workers-per-trial", "2", "--cpus-per-trial", "2"),
                    trial_fn=counting_run_trial, prepare_fn=counting_prepare, out=io.StringIO())
    df = pd.read_parquet(exp / "trials.parquet")
    assert df["status"].tolist() == ["finished"] and df["accuracy"].iloc[0] > 0.2
    last = json.loads(next(exp.glob("trial_*/result.json")).read_text().splitlines()[-1])
    assert last["workers"] == 2 and last["final"]
    # both ranks ran the trial (world size 2), each in its own process
    assert len(set((markers / "trial.log").read_text().split())) == 2
    # ...and trained data-parallel (a shard each, gradients averaged), not as two full copies
    for rank in (0, 1):
        log = next(exp.glob(f"trial_*/out/rank{rank}/trial.log")).read_text()
        assert f"data-parallel, rank {rank} of 2" in log


def test_workers_that_cannot_fit_are_refused_before_anything_starts(ray_2_cpus, tmp_path):
    cfg = real_sweep(tmp_path / "s.yaml", name="ddp2", samples=1, epochs=1)
    with pytest.raises(ConfigError, match="more than the 2 CPU"):
        run_sweep(sweep_args("--config", str(cfg), "--storage", str(tmp_path / "res"), "--gpus-per-trial", "0",
                             "--workers-per-trial", "3", "--cpus-per-trial", "3"), out=io.StringIO())
    assert not (tmp_path / "res").exists()
