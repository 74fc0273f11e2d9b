"""A simulated 2-node cluster (the ``ray_2_nodes`` fixture): trials run on both nodes and write to one
shared storage path."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from fake_trial import fake_prepare, fake_run_trial
from sweep_helpers import sweep_args, tiny_sweep

from sweeps.run import run_sweep

pytestmark = pytest.mark.slow


def test_trials_spread_over_both_nodes_with_shared_storage(ray_2_nodes, tmp_path, behaviour):
    root = behaviour(sleep=1.0)
    cfg = tiny_sweep(tmp_path / "s.yaml", root, name="multi", samples=1, epochs=2, mode="grid")
    storage = tmp_path / "shared_storage"
    exp = run_sweep(sweep_args("--config", str(cfg), "--storage", str(storage), "--gpus-per-trial", "0"),
                    trial_fn=fake_run_trial, prepare_fn=fake_prepare, out=io.StringIO())
    df = pd.read_parquet(exp / "trials.parquet")
    assert len(df) == 4 and (df["status"] == "finished").all()
    nodes = set()
    for d in exp.glob("trial_*"):
        last = json.loads((d / "result.json").read_text().splitlines()[-1])
        nodes.add(last["node_id"])
        assert (d / "checkpoint_000001").is_dir()  # every node's checkpoints landed in the shared path
    assert len(nodes) == 2
