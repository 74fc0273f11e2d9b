"""The demo's same-data baseline (MobileNetV3-Small matched to budget 0.25 on digits) as the sweep runs
it (a one-CPU Ray task, ``sweeps.baselines.run_baselines``), on an idle machine and on one kept busy
by another process, with ``OMP_NUM_THREADS=2`` exported as a user's shell might.

    python bench/busy_baseline.py [--epochs 5] [--keep DIR]

The load is one process spinning at normal priority: on a 2-core machine it takes one core, and the
baseline (1 CPU) should still have the other. Ray runs its workers at nice 15, so any thread beyond
the task's allotment competes with the spinner at the lowest priority and stalls the thread-pool's
barriers. Prints ``idle_s``, ``busy_s`` and ``ratio`` (goal ≤ 3). The shared preparation (teacher) is
done once, before both runs, and not timed.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _timed_baseline(spec, exp: Path, shared) -> float:
    from sweeps.baselines import run_baselines

    t0 = time.perf_counter()
    rows = run_baselines(spec, exp, shared, num_cpus=1.0, num_gpus=0.0, out=io.StringIO())
    assert rows and all(r["status"] == "finished" for r in rows), rows
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=5, help="baseline epochs (the demo gives it 20; default 5)")
    p.add_argument("--keep", default=None, help="directory to keep (default: a temp dir)")
    args = p.parse_args(argv)

    os.environ["OMP_NUM_THREADS"] = "2"  # what the shell exported; Ray keeps it for its workers
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from sweeps.cluster import init_ray, quiet_environment

    quiet_environment(False)
    import ray

    from sweeps.prepare import prepare_shared_artifacts
    from sweeps.space import apply_params, load_sweep

    spec = load_sweep(None)
    spec.baselines = [{**b, "epochs": args.epochs} for b in spec.baselines[:1]]
    root = Path(args.keep or tempfile.mkdtemp(prefix="kpid-busy-")).resolve()
    init_ray(None, num_cpus=2, num_gpus=0)
    spinner = None
    try:
        shared = prepare_shared_artifacts(apply_params(spec.base, {}), root / "prep", [], num_cpus=1.0)
        idle_s = _timed_baseline(spec, root / "idle", shared)
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(1.0)
        busy_s = _timed_baseline(spec, root / "busy", shared)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
        ray.shutdown()
    out = {"epochs": args.epochs, "OMP_NUM_THREADS": "2", "idle_s": round(idle_s, 1), "busy_s": round(busy_s, 1),
           "ratio": round(busy_s / idle_s, 2), "load_avg_1m": round(os.getloadavg()[0], 1)}
    for k, v in out.items():
        print(f"{k:>16}: {v}")
    return out


if __name__ == "__main__":
    main()
