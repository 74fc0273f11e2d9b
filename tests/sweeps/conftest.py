"""Ray fixtures for the sweep tests (set-up and helpers live in sweep_helpers.py)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from sweep_helpers import MARKERS, SHORT_TMP, start_shared_ray


@pytest.fixture(scope="session")
def _ray_session():
    """Shuts the shared cluster down (Ray ends the processes it started) after the last test."""
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()
    shutil.rmtree(SHORT_TMP, ignore_errors=True)


@pytest.fixture
def ray_2_cpus(_ray_session):
    """The shared 2-CPU / 8-simulated-GPU cluster (started on first use, reused; started again after a
    ``ray_2_nodes`` test); yields its GCS address."""
    yield start_shared_ray()


def pytest_collection_modifyitems(config, items):
    """Tests on the 2-node cluster run last: the shared cluster they stop is then not started again
    for nothing (``ray_2_cpus`` starts it on demand, so any order still works)."""
    items.sort(key=lambda item: "ray_2_nodes" in getattr(item, "fixturenames", ()))  # stable sort


@pytest.fixture
def ray_2_nodes(_ray_session):
    """A simulated 2-node cluster (``ray.cluster_utils.Cluster``, one CPU per node, trial slots on the
    head) in place of the shared cluster; yields the ``Cluster``.

    A driver joins one cluster at a time, so the shared cluster is stopped first; the next test that
    asks for ``ray_2_cpus`` starts it again (whatever order the tests run in).
    """
    import ray
    from ray.cluster_utils import Cluster

    from sweeps.cluster import TRIAL_SLOT

    ray.shutdown()
    temp_dir = os.path.join(SHORT_TMP, "ray")
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {TRIAL_SLOT: 10}, "temp_dir": temp_dir, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, temp_dir=temp_dir)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture
def behaviour(tmp_path: Path):
    """Directory steering the fake trial (``data.root``); write ``behaviour.json`` via the callable."""
    root = tmp_path / "beh"
    root.mkdir()

    def set_(**kw) -> Path:
        (root / "behaviour.json").write_text(json.dumps(kw))
        return root

    set_()
    return set_


@pytest.fixture
def markers() -> Path:
    """The (emptied) marker directory; ``count(kind)`` = how many markers of that kind were written."""
    for f in Path(MARKERS).iterdir():
        f.unlink()
    return Path(MARKERS)
