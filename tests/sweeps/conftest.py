"""Ray fixtures for the sweep tests (set-up and helpers live in sweep_helpers.py)."""

from __future__ import annotations

import json
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
    """The shared 2-CPU / 8-simulated-GPU cluster (started once, reused); yields its GCS address."""
    yield start_shared_ray()


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
