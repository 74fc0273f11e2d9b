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


def _gone(pid, within=10.0):
    import time

    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # our own child: reap it, or it stays a zombie that kill(pid, 0) still finds
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            pass
        time.sleep(0.1)
    return False


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux CPU affinity and two usable CPUs")
def test_a_neighbour_does_not_outlive_an_interrupt_or_a_killed_bench(monkeypatch, tmp_path):
    import signal
    import subprocess
    import time

    started = []
    real_popen = subprocess.Popen
    monkeypatch.setattr(ln.subprocess, "Popen", lambda *a, **k: started.append(real_popen(*a, **k)) or started[-1])

    real_sleep, calls = time.sleep, []

    def interrupted(s):  # the first sleep is the bench's wait for its neighbour (Popen.wait sleeps too)
        calls.append(s)
        if len(calls) == 1:
            raise KeyboardInterrupt
        real_sleep(s)

    monkeypatch.setattr(ln.time, "sleep", interrupted)  # Ctrl-C while the neighbour starts
    with pytest.raises(KeyboardInterrupt):
        ln._start_load("cpu", sorted(os.sched_getaffinity(0))[1])
    assert len(started) == 1 and started[0].poll() is not None
    monkeypatch.undo()
    # a bench killed outright (SIGKILL runs no `finally`): the kernel ends its neighbour
    script = tmp_path / "a_bench_run.py"  # not bench.py: it would shadow the bench package
    script.write_text(f"import sys\nsys.path.insert(0, {str(Path(ln.__file__).parents[1])!r})\n"
                      "import os, time\nimport bench.latency_neighbour as ln\n"
                      "p = ln._start_load('cpu', sorted(os.sched_getaffinity(0))[1])\nprint(p.pid, flush=True)\n"
                      "time.sleep(60)\n")
    bench = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        child = int(bench.stdout.readline())
        assert not _gone(child, within=0.5)  # it runs while the bench does
        bench.send_signal(signal.SIGKILL)
        bench.wait(timeout=30)
        assert _gone(child)
    finally:
        bench.kill()
