"""The Ray lane (tests/ray_lane.py) under real pytest-xdist: a small suite laid out like this one runs
with ``-n 2``; the lane's tests must all run in one worker, in collection order, at full priority,
and the others at nice 19 in the other worker."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytest_plugins = ["pytester"]

_RECORD = '''
import os, pathlib, time

def record(name, pause=0.0):
    time.sleep(pause)
    line = f"{name} {os.environ.get('PYTEST_XDIST_WORKER')} {os.getpriority(os.PRIO_PROCESS, 0)}\\n"
    with open(os.environ["LANE_LOG"], "a") as f:
        f.write(line)
'''


def _suite(pytester) -> None:
    pytester.makeconftest(
        "import pytest\n"
        "from tests.ray_lane import lane_scheduler, yield_cpu_outside_the_lane\n"
        "@pytest.fixture(autouse=True)\n"
        "def _nice(request):\n"
        "    yield_cpu_outside_the_lane(request.node.nodeid)\n"
        "    yield\n"
        "@pytest.hookimpl(tryfirst=True, optionalhook=True)\n"
        "def pytest_xdist_make_scheduler(config, log):\n"
        "    return lane_scheduler(config, log)\n")
    (pytester.path / "lane_record.py").write_text(_RECORD)
    sweeps = pytester.path / "tests" / "sweeps"
    core = pytester.path / "tests" / "core"
    for d in (sweeps, core):
        d.mkdir(parents=True)
    for i in range(3):  # the lane: slow enough that the other worker would take one if it could
        (sweeps / f"test_s{i}.py").write_text(
            "from lane_record import record\n" + "".join(f"def test_{j}():\n    record('s{i}_{j}', 0.3)\n" for j in range(2)))
    for i in range(4):
        (core / f"test_c{i}.py").write_text(
            "from lane_record import record\n" + "".join(f"def test_{j}():\n    record('c{i}_{j}')\n" for j in range(3)))


@pytest.mark.slow
def test_the_lane_runs_in_one_worker_in_order_and_the_rest_beside_it_at_nice_19(pytester, monkeypatch, tmp_path):
    _suite(pytester)
    log = tmp_path / "lane.log"
    monkeypatch.setenv("LANE_LOG", str(log))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(pytester.path)]))
    r = pytester.runpytest_subprocess("-p", "xdist", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider",
                                      "--rootdir", str(pytester.path), "tests")
    r.assert_outcomes(passed=6 + 12)
    rows = [line.split() for line in log.read_text().splitlines()]
    lane = [(name, worker, int(nice)) for name, worker, nice in rows if name.startswith("s")]
    rest = [(name, worker, int(nice)) for name, worker, nice in rows if name.startswith("c")]
    assert len({w for _, w, _ in lane}) == 1, lane  # one worker ...
    assert [n for n, _, _ in lane] == [f"s{i}_{j}" for i in range(3) for j in range(2)]  # ... in collection order
    assert all(nice == os.getpriority(os.PRIO_PROCESS, 0) for _, _, nice in lane), lane  # at full priority
    other = {w for _, w, _ in rest} - {lane[0][1]}
    assert other, "everything else ran in the lane's worker: nothing ran beside it"
    assert all(nice == 19 for _, _, nice in rest), rest
