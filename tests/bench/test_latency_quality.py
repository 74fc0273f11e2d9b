"""bench/latency_quality.py without training: its statistics over matched seeds and its one-line
refusals (the trials themselves are the product's, tested elsewhere; the figures are measured in the
benchmark, never here)."""

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench import latency_quality


def _row(seed, acc_macs, acc_latency, matched=True):
    return {"seed": seed, "acc_macs": acc_macs, "acc_latency": acc_latency, "matched": matched}


def test_summary_uses_matched_seeds_only_and_the_standard_error_rule():
    rows = [_row(0, 0.85, 0.851), _row(1, 0.86, 0.858), _row(2, 0.84, 0.842), _row(3, 0.80, 0.70, matched=False)]
    s = latency_quality.summarise(rows)
    diffs = [0.1, -0.2, 0.2]  # points, the unmatched seed left out
    mean = sum(diffs) / 3
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2) / math.sqrt(3)
    assert s["n"] == 3 and s["mean"] == pytest.approx(mean) and s["se"] == pytest.approx(se)
    assert s["met"]  # mean +0.03 >= -se
    worse = latency_quality.summarise([_row(i, 0.85, 0.85 - 0.003 - 0.0001 * i) for i in range(3)])
    assert worse["mean"] == pytest.approx(-0.31) and not worse["met"]  # below -1 standard error
    assert not latency_quality.summarise(rows[:2])["met"]  # fewer than 3 matched seeds


@pytest.mark.parametrize("argv, field", [(["--seeds", "0"], "--seeds"), (["--seeds", "x"], "--seeds"),
                                         (["--budget", "1.5"], "--budget"), (["--tries", "0"], "--tries")])
def test_bad_arguments_are_one_line_exit_2(argv, field, capsys):
    with pytest.raises(SystemExit) as exc:
        latency_quality.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and field in err[-1] and "Traceback" not in "\n".join(err)
