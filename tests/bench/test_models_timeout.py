"""bench/models.py: when a row's --timeout runs out during the Torch-Pruning anchor, kpid's
measurements of that row stay (the anchor's own group search can take many minutes)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # bench/ is a script folder, not an installed package

import bench._anchors
from bench.models import main, read_csv


def test_anchor_stopped_by_the_row_timeout_keeps_kpids_row(monkeypatch, tmp_path):
    def slow_anchor(model, x, budget, steps):
        os.kill(os.getpid(), signal.SIGALRM)  # the row's alarm goes off while the anchor runs
        time.sleep(30)
        raise AssertionError("the alarm did not stop the anchor")

    monkeypatch.setattr(bench._anchors, "tp_global_stepped", slow_anchor)
    csv = tmp_path / "rows.csv"
    assert main(["--models", "resnet20", "--input", "32", "--timeout", "600", "--csv", str(csv)]) == 0
    (row,) = read_csv(str(csv))
    assert row["status"] == "ok" and row["reload_equal"] in (True, "True")
    assert row["kpid_s"] not in (None, "") and abs(row["macs_ratio"] - 0.5) <= 0.0025
    assert row["tp_s"] in (None, "") and row["message"].startswith("tp: not finished when the row's --timeout ran out")
