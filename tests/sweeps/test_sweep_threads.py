"""Threads: a Ray task's torch intra-op threads and data-loader workers follow its CPU allotment, not
an ``OMP_NUM_THREADS`` its environment inherited (Ray sets that variable only when it is unset)."""

from __future__ import annotations

import pytest
from fake_trial import thread_probe

from sweeps.threads import cap_loader_workers

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("cpus", [1, 2])
def test_task_threads_follow_its_cpus_not_the_inherited_environment(ray_2_cpus, cpus):
    import ray

    probe = ray.remote(num_cpus=cpus, runtime_env={"env_vars": {"OMP_NUM_THREADS": "2", "KPID_PROBE": str(cpus)}})(thread_probe)
    before, n, after, omp, cfg = ray.get(probe.remote({"data": {"num_workers": 4}}), timeout=120)
    assert before == 2  # a fresh worker (its own runtime env) really inherited the oversubscribing setting
    assert (n, after, omp) == (cpus, cpus, str(cpus))
    assert cfg["data"]["num_workers"] == cpus - 1


def test_loader_workers_capped_only_downwards():
    assert cap_loader_workers({"data": {"num_workers": 0}}, 4)["data"]["num_workers"] == 0
    assert cap_loader_workers({"data": {"num_workers": 8}}, 4)["data"]["num_workers"] == 3
    assert cap_loader_workers({"data": {"num_workers": 8}}, None)["data"]["num_workers"] == 8
