"""A simulated 2-node cluster (``ray.cluster_utils.Cluster``): trials run on both nodes and write to
one shared storage path. Runs last in this directory: it replaces the shared local cluster."""

from __future__ import annotations

import io
import json
import os

import pandas as pd
import pytest
from fake_trial import fake_prepare, fake_run_trial
from sweep_helpers import SHORT_TMP, sweep_args, tiny_sweep

from sweeps.cluster import TRIAL_SLOT
from sweeps.run import run_sweep

pytestmark = pytest.mark.slow


@pytest.fixture
def two_nodes(_ray_session):
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()  # the shared single-node cluster; ray_2_cpus restarts it when asked again
    temp_dir = os.path.join(SHORT_TMP, "ray")
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {TRIAL_SLOT: 10}, "temp_dir": temp_dir, "include_dashboard": False})
    cluster.add_node(num_cpus=1, temp_dir=temp_dir)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_trials_spread_over_both_nodes_with_shared_storage(two_nodes, tmp_path, behaviour):
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
