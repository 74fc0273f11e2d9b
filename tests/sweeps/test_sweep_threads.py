"""Threads: a Ray task's torch intra-op threads and data-loader workers follow its CPU allotment, not
an ``OMP_NUM_THREADS`` its environment inherited (Ray sets that variable only when it is unset)."""

from __future__ import annotations

import pytest
from fake_trial import thread_probe

from sweeps.threads import cap_loader_workers

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("cpus, torch_first", [(1, True), (2, True), (1, False)])
def test_task_threads_follow_its_cpus_not_the_inherited_environment(ray_2_cpus, cpus, torch_first):
    """torch imported before the task sets its threads (they are set in torch), or only after (torch
    reads the variables when it loads): either way the trial trains on its allotment."""
    import ray

    env = {"OMP_NUM_THREADS": "2", "KPID_PROBE": f"{cpus}-{torch_first}"}  # its own runtime env: a fresh worker
    probe = ray.remote(num_cpus=cpus, runtime_env={"env_vars": env})(thread_probe)
    before, n, after, omp, cfg = ray.get(probe.remote({"data": {"num_workers": 4}}, torch_first), timeout=120)
    assert before == (2 if torch_first else None)  # the worker really inherited the oversubscribing setting
    assert (n, after, omp) == (cpus, cpus, str(cpus))
    assert cfg["data"]["num_workers"] == cpus - 1


def test_loader_workers_capped_only_downwards():
    assert cap_loader_workers({"data": {"num_workers": 0}}, 4)["data"]["num_workers"] == 0
    assert cap_loader_workers({"data": {"num_workers": 8}}, 4)["data"]["num_workers"] == 3
    assert cap_loader_workers({"data": {"num_workers": 8}}, None)["data"]["num_workers"] == 8
