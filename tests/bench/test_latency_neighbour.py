"""bench/latency_neighbour.py: the shift a neighbour's load makes is paired by cycle, the loads run
pinned and are stopped, and bad options are one line (no timing is asserted)."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import bench.latency_neighbour as ln


def _row(model, load, cycle, ratio):
    return {"model": model, "load": load, "cycle": cycle, "ratio": ratio, "dense_ms": 10.0, "pruned_ms": 10 * ratio}


def test_the_shift_is_paired_with_none_of_the_same_cycle():
    rows = [_row("m", "none", 0, 0.50), _row("m", "membw", 0, 0.55), _row("m", "none", 1, 0.40),
            _row("m", "membw", 1, 0.42)]
    table = ln.summarise(rows)
    membw = next(line for line in table if "| membw |" in line)
    # +10 % and +5 % paired by cycle: +7.5 ± 3.5 % (unpaired means would give 0.485 / 0.45 − 1 = +7.8 %)
    assert "| +7.5 ± 3.5 % |" in membw and "0.4850 (0.5500 / 0.4200)" in membw
    assert "| – |" in next(line for line in table if "| none |" in line)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux CPU affinity and two usable CPUs")
def test_a_run_times_every_load_and_stops_each_neighbour(monkeypatch, capsys):
    started = []
    real_start = ln._start_load

    def start(name, cpu):
        p = real_start(name, cpu)
        if p is not None:
            started.append((p, os.sched_getaffinity(p.pid)))
        return p

    monkeypatch.setattr(ln, "_start_load", start)
    before = os.sched_getaffinity(0)
    assert ln.main(["--models", "mobilenet_v3_small", "--size", "32", "--batch", "1", "--cycles", "2",
                    "--repeats", "4", "--loads", "none,cpu", "--min-sample-s", "0.001"]) == 0
    out = capsys.readouterr().out
    assert "| mobilenet_v3_small | cpu |" in out and "| mobilenet_v3_small | none |" in out
    cpus = sorted(before)
    assert len(started) == 2 and all(aff == {cpus[1]} for _, aff in started)  # one a cycle, on the other CPU
    assert all(p.poll() is not None for p, _ in started)  # stopped, not left spinning
    assert os.sched_getaffinity(0) == before  # the bench's own pinning undone


@pytest.mark.parametrize("argv, says", [
    (["--loads", "cpu"], "--loads 'cpu': allowed values: none, membw, cpu, and 'none' among them"),
    (["--loads", "none,disk"], "--loads 'none,disk': allowed values"),
    (["--budget", "1.5"], "--budget 1.5: must be in (0, 1)"),
    (["--cycles", "0"], "--cycles must be >= 1"),
    (["--min-sample-s", "0"], "--min-sample-s 0.0: must be > 0"),
    (["--models", "resnet5000"], "--models 'resnet5000': allowed values"),
])
def test_bad_options_are_one_line_and_exit_2(argv, says, capsys):
    assert ln.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {says}")
