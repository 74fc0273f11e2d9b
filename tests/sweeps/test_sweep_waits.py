"""Bounded waits (sweeps.waits): a preparation or baseline task that no node can hold, that cannot
start because its resources stay taken, or whose process freezes, ends with one line naming what it
asked for and what the cluster has, after the configured bound, instead of waiting forever."""

from __future__ import annotations

import time

import pytest
from fake_trial import fake_prepare, fake_run_trial, freezing_prepare, hold
from sweep_helpers import tiny_sweep
from test_sweep_faults import _wait_for

from sweeps.prepare import prepare_shared_artifacts
from sweeps.run import main
from sweeps.waits import TaskWaitError, TaskWaits

pytestmark = pytest.mark.slow


def test_a_task_no_node_can_hold_fails_at_once(ray_2_cpus, tmp_path, behaviour):
    t0 = time.monotonic()
    with pytest.raises(TaskWaitError) as e:
        prepare_shared_artifacts({"data": {"root": str(behaviour())}}, tmp_path, ["l1"], prepare_fn=fake_prepare,
                                 num_cpus=64)
    assert time.monotonic() - t0 < 10
    assert str(e.value) == ("shared preparation: asks for CPU=64 but no node of the cluster has that "
                            "(largest node: CPU=2, GPU=8)")


def test_a_frozen_task_is_cancelled_after_the_stall_bound(ray_2_cpus, tmp_path, behaviour):
    t0 = time.monotonic()
    with pytest.raises(TaskWaitError, match=r"^shared preparation stopped responding \(no heartbeat for \d+ s, "
                       r"bound 4 s\): it asked for CPU=1; the cluster has CPU=2, GPU=8 in all"):
        prepare_shared_artifacts({"data": {"root": str(behaviour())}}, tmp_path, ["l1"],
                                 prepare_fn=freezing_prepare, waits=TaskWaits(start_s=60, stall_s=4))
    assert time.monotonic() - t0 < 60


def test_a_sweep_whose_preparation_cannot_start_ends_with_one_line(ray_2_cpus, tmp_path, behaviour, capsys):
    import ray

    blocker = ray.remote(num_cpus=2)(hold).remote(120)  # another job holds every CPU
    try:
        _wait_for(lambda: ray.available_resources().get("CPU", 0.0) == 0.0, timeout=90)
        cfg = tiny_sweep(tmp_path / "s.yaml", behaviour(), name="blocked", samples=1)
        rc = main(["--config", str(cfg), "--storage", str(tmp_path / "res"), "--gpus-per-trial", "0",
                   "--start-timeout", "3"], trial_fn=fake_run_trial, prepare_fn=fake_prepare)
    finally:
        ray.cancel(blocker, force=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("error: shared preparation did not start within 3 s: it asked for CPU=1, GPU=1; "
                             "the cluster has CPU=2, GPU=8 in all, GPU=8 free"), err
