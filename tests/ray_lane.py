"""The Ray lane: how ``python -m pytest`` splits the suite over its three pytest-xdist workers.

Every Ray test (tests/sweeps and the tests listed in ``RAY_LANE``) runs in one worker, one after
another and in collection order, as in a serial run: the session's shared cluster (the 2-node tests
last, tests/sweeps/conftest.py), the clusters some tests start themselves, the signals they send
and the bounds they wait under never meet a second Ray test. The other workers run everything else
meanwhile, at nice 19: the lane is the suite's critical path and mostly waits on other processes
(drivers, Ray's daemons, its nice-15 workers), so plain torch tests take only the CPU the lane
leaves idle. On 2 cores this took the suite from 438 s to about 280 s. Two such workers, not one:
while the lane waits (a stall bound, a cluster starting) one worker left a core idle, ~10 % of
the run measured from /proc/stat; with two, none is (five runs of one commit, interleaved: 223.9 and
221.4 s with one; 212.9, 215.6 and 225.9 s with two).

xdist's own ``xdist_group`` marks cannot express the lane under pytest 9.2 (xdist 3.8 renames the
node through a private attribute that pytest no longer reads), so the scheduler below subclasses
``LoadGroupScheduling`` and overrides its ``_split_scope`` — a private method of xdist, hence the
``pytest-xdist<4`` pin in pyproject.toml; tests/test_ray_lane.py fails if it stops working.
"""

from __future__ import annotations

import os

__all__ = ["RAY_LANE", "in_ray_lane", "lane_scheduler", "stray_ray_tests", "yield_cpu_outside_the_lane"]

#: Node-id prefixes of the Ray lane. A test outside tests/sweeps that starts Ray is listed here and
#: marked ``ray`` (collection checks that the two agree).
RAY_LANE = ("tests/sweeps/", "tests/analysis/test_load.py::test_ray_experiment_directory_without_trials_table")


def in_ray_lane(nodeid: str) -> bool:
    """Whether the test ``nodeid`` runs in the Ray lane.

    Args:
        nodeid: pytest's node id, relative to the repository root.

    Returns:
        True for the tests under tests/sweeps and those listed in ``RAY_LANE``.
    """
    return nodeid.startswith(RAY_LANE)


def stray_ray_tests(items) -> list[str]:
    """Node ids of the collected tests marked ``ray`` that are not in the lane.

    Args:
        items: pytest's collected items.

    Returns:
        Their node ids (empty when every ``ray`` test is in the lane).
    """
    return [item.nodeid for item in items if item.get_closest_marker("ray") and not in_ray_lane(item.nodeid)]


def yield_cpu_outside_the_lane(nodeid: str) -> None:
    """In an xdist worker about to run a test outside the lane, drop the worker to nice 19.

    For good: an unprivileged process cannot raise its priority again. That is harmless, because the
    lane, the largest group, is handed out first and runs first in its worker. Without xdist nothing
    changes.

    Args:
        nodeid: the test about to run.
    """
    if os.environ.get("PYTEST_XDIST_WORKER") and not in_ray_lane(nodeid) and os.getpriority(os.PRIO_PROCESS, 0) < 19:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, 19)
        except OSError:  # a sandbox that forbids it: the suite is only slower
            pass


def lane_scheduler(config, log):
    """xdist's ``loadgroup`` scheduler with every Ray-lane test in one work unit.

    Args:
        config: pytest's config.
        log: xdist's logger.

    Returns:
        The scheduler, or None (xdist's default) when ``--dist`` is not ``loadgroup``.
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class RayLaneScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "ray-lane" if in_ray_lane(nodeid) else super()._split_scope(nodeid)

    return RayLaneScheduling(config, log)
