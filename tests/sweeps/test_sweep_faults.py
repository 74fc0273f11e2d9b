"""Faults: a trial worker SIGKILLed mid-run resumes from its checkpoint; a driver SIGKILLed mid-sweep
is continued with ``--resume`` with every trial present once. The stand-in trial (fake_trial) gives
the test a controllable pace and marker files; the plumbing under test is the product's."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from fake_trial import fake_prepare, fake_run_trial
from sweep_helpers import sweep_args, tiny_sweep

from sweeps.run import main, run_sweep
from sweeps.trainable import PID_FILE

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


# Generous bounds: they only end a test that already failed. With three busy processes on a 2-core
# machine the killed-driver test's first saved trial took more than 120 s (its old bound).
def _wait_for(pred, timeout: float = 300.0, every: float = 0.2):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(every)
    raise AssertionError("timed out waiting")


def _lines(root: Path, kind: str) -> list[str]:
    f = root / f"{kind}.log"
    return f.read_text().splitlines() if f.exists() else []


def _terminated_in_saved_state(exp: Path) -> set[str]:
    """Trial ids that Tune's last saved experiment state records as finished."""
    out = set()
    for f in exp.glob("experiment_state-*.json"):
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError):  # being rewritten right now
            continue
        for trial_json, _ in data.get("trial_data", []):
            t = json.loads(trial_json)
            if t.get("status") == "TERMINATED":
                out.add(t["trial_id"])
    return out


def test_killed_trial_worker_resumes_from_its_checkpoint(ray_2_cpus, tmp_path, behaviour):
    root = behaviour(sleep=1.0)
    # 6 one-second epochs: the killer must see the first checkpoint while epochs remain, even on a
    # loaded CI machine where Ray's workers (nice 15) and the polling thread start late
    cfg = tiny_sweep(tmp_path / "s.yaml", root, name="killtrial", samples=1, epochs=6)
    exp = tmp_path / "res" / "killtrial"
    killed: list[int] = []

    def killer() -> None:
        # Kill once a SECOND checkpoint is on disk. The worker writes a checkpoint's folder before the
        # driver has registered it; a kill in that gap restarts the trial from nothing (one CI run
        # saw it: no "resume" line). A function trainable blocks in each report until the driver
        # asks for its next result, so by the second folder the driver has taken the first one.
        def ready():
            for d in exp.glob("trial_*"):
                if (d / PID_FILE).exists() and len(list(d.glob("checkpoint_*"))) >= 2:
                    return d
            return None

        d = _wait_for(ready)
        pid = int((d / PID_FILE).read_text())
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    run_sweep(sweep_args("--config", str(cfg), "--storage", str(tmp_path / "res"), "--gpus-per-trial", "0"),
              trial_fn=fake_run_trial, prepare_fn=fake_prepare, out=io.StringIO())
    t.join(5)
    assert killed, "the trial finished before it could be killed"
    df = pd.read_parquet(exp / "trials.parquet")
    assert df["status"].tolist() == ["finished"] and df["epochs_done"].tolist() == [6]
    resumed = _lines(root, "resume")
    assert len(resumed) == 1 and int(resumed[0].split()[-1]) >= 1  # continued from a checkpoint
    assert len(_lines(root, "done")) == 1
    pids = {line.split()[0] for line in _lines(root, "trial")}
    assert str(killed[0]) in pids and len(pids) == 2  # a new worker process took over


def test_killed_driver_is_resumed_with_every_trial_once(ray_2_cpus, tmp_path, behaviour):
    root = behaviour(sleep=0.6)
    cfg = tiny_sweep(tmp_path / "s.yaml", root, name="killdriver", samples=6, epochs=3)
    storage = tmp_path / "res"
    exp = storage / "killdriver"
    code = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
        "import fake_trial; from ray import cloudpickle; cloudpickle.register_pickle_by_value(fake_trial)\n"
        "from sweeps.run import main\n"
        "sys.exit(main(sys.argv[3:], trial_fn=fake_trial.fake_run_trial, prepare_fn=fake_trial.fake_prepare))\n"
    )
    args = ["--config", str(cfg), "--storage", str(storage), "--gpus-per-trial", "0"]
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(REPO), str(Path(__file__).parent), *args, "--address", ray_2_cpus],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        # kill once Tune's saved state holds a finished trial (the SIGKILL gives it no chance to save)
        saved_done = _wait_for(lambda: _terminated_in_saved_state(exp), timeout=300, every=0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert not (exp / "trials.parquet").exists()  # it really died mid-sweep

    assert main([*args, "--resume"], trial_fn=fake_run_trial, prepare_fn=fake_prepare) == 0
    df = pd.read_parquet(exp / "trials.parquet")
    assert len(df) == 6 and df["trial_id"].is_unique
    assert (df["status"] == "finished").all()
    done = Counter(line.split()[-1] for line in _lines(root, "done"))
    assert set(done) == {f"trial_{t}" for t in df["trial_id"]}
    for tid in saved_done:  # a trial finished before the crash is kept, not run again
        assert done[f"trial_{tid}"] == 1, (tid, done)
    assert len(_lines(root, "prepare")) == 1  # the resume reused the shared artifacts
