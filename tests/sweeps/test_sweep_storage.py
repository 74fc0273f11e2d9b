"""Storage faults of a sweep: a write into the experiment directory failing mid-sweep (full disk,
injected) ends it with one line and exit 2, keeps what finished, and ``--resume`` completes it with no
trial run again; corrupt or truncated state files on ``--resume`` are named in one line."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from collections import Counter

import optuna
import pandas as pd
import pytest
import torch
from fake_trial import fake_prepare, fake_run_trial
from sweep_helpers import tiny_sweep
from test_sweep_faults import _lines

from kpid_core.errors import SpecError
from sweeps import results
from sweeps.resume_checks import check_resumable, check_shared
from sweeps.run import main

pytestmark = pytest.mark.slow


def _one_error_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_disk_full_mid_sweep_then_resume_and_corrupt_state(ray_2_cpus, tmp_path, behaviour, capsys, monkeypatch):
    root = behaviour(sleep=0.1)
    cfg = tiny_sweep(tmp_path / "s.yaml", root, name="full", samples=4)
    storage = tmp_path / "res"
    exp = storage / "full"
    args = ["--config", str(cfg), "--storage", str(storage), "--gpus-per-trial", "0"]
    real_write = results.write_trials

    def full(df, exp_dir):
        raise OSError(errno.ENOSPC, "No space left on device", str(exp_dir / "trials.parquet"))

    monkeypatch.setattr(results, "write_trials", full)
    assert main(args, trial_fn=fake_run_trial, prepare_fn=fake_prepare) == 2
    line = _one_error_line(capsys)
    assert line.startswith(f"error: --storage: cannot write {str(exp / 'trials.parquet')!r}: No space left on "
                           "device; finished trials are kept") and "--resume" in line
    assert not (exp / "trials.parquet").exists() and not list(exp.glob(".trials.parquet.*"))

    monkeypatch.setattr(results, "write_trials", real_write)  # space is back
    assert main([*args, "--resume"], trial_fn=fake_run_trial, prepare_fn=fake_prepare) == 0
    capsys.readouterr()
    df = pd.read_parquet(exp / "trials.parquet")
    assert len(df) == 4 and (df["status"] == "finished").all()
    assert set(Counter(ln.split()[-1] for ln in _lines(root, "done")).values()) == {1}  # none run again

    for name, damage in (("optuna.db", b"this is not a database" * 100), ("experiment_state", None)):
        f = exp / name if name == "optuna.db" else max(exp.glob("experiment_state-*.json"))
        good = f.read_bytes()
        f.write_bytes(damage if damage is not None else good[: len(good) // 2])
        assert main([*args, "--resume"], trial_fn=fake_run_trial, prepare_fn=fake_prepare) == 2
        line = _one_error_line(capsys)
        assert line.startswith("error: --resume: ") and repr(str(f)) in line and "corrupt or truncated" in line
        f.write_bytes(good)
    assert len(pd.read_parquet(exp / "trials.parquet")) == 4  # nothing finished lost


def test_truncated_shared_teacher_or_importance_is_named(tmp_path):
    torch.save({"w": torch.ones(3)}, tmp_path / "teacher.pt")
    torch.save({"scores": [torch.ones(2)]}, tmp_path / "importance_l1.pt")
    (tmp_path / "split.json").write_text(json.dumps({"train": [0, 1]}))
    (tmp_path / "shared.json").write_text(json.dumps({
        "root": str(tmp_path), "split": str(tmp_path / "split.json"), "teacher": str(tmp_path / "teacher.pt"),
        "teacher_accuracy": 0.9, "importance": {"l1": str(tmp_path / "importance_l1.pt")}}))
    check_shared(str(tmp_path))  # sound files pass
    for name in ("teacher.pt", "importance_l1.pt"):
        f = tmp_path / name
        good = f.read_bytes()
        f.write_bytes(good[: len(good) // 2])
        with pytest.raises(SpecError, match=rf"^--resume: the shared (teacher|importance \(l1\)) '{f}' is corrupt"):
            check_shared(str(tmp_path))
        f.write_bytes(good)


_KILLED_WRITER = """
import os, sqlite3, sys
con = sqlite3.connect(sys.argv[1], isolation_level=None)
con.execute("PRAGMA cache_size=1")  # spill the change into the database file before the commit
con.execute("BEGIN")
con.execute("UPDATE trial_values SET value = value + 1")
con.execute("INSERT INTO studies (study_name) SELECT study_name || '_' || ? FROM studies", (os.getpid(),))
os._exit(0)  # dies mid-transaction, as a SIGKILLed driver does: a hot journal is left behind
"""


def test_study_of_a_driver_killed_mid_write_is_rolled_back_not_refused(tmp_path):
    db = tmp_path / "optuna.db"
    study = optuna.create_study(storage=f"sqlite:///{db}", study_name="s")
    for v in range(40):
        study.add_trial(optuna.trial.create_trial(value=float(v), params={}, distributions={}))
    subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(db)], check=True)
    assert (tmp_path / "optuna.db-journal").exists()  # the kill left a hot journal
    check_resumable(tmp_path)  # SQLite rolls it back, as Optuna's own open would; not "corrupt"
    values = [t.value for t in optuna.load_study(storage=f"sqlite:///{db}", study_name="s").trials]
    assert values == [float(v) for v in range(40)]  # the committed trials, not the killed writer's
