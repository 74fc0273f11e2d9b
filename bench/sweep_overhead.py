"""Sweep overhead: wall time of the Tune run vs. the trials' own compute divided by the parallel slots.

    python bench/sweep_overhead.py [--quick] [--cpus 2] [--keep DIR]

Runs a grid sweep of the real ``run_trial`` on digits through ``sweeps.run.run_sweep`` on a local
Ray cluster of ``--cpus`` CPUs (1 CPU per trial, ASHA off so every trial does the same work) and
prints:

- ``ideal_s``   = Σ trial compute (each trial's ``times.total_s``) ÷ slots
- ``tune_s``    = wall time of ``Tuner.fit`` (scheduling, worker start, trials, reports, checkpoints)
- ``ratio``     = tune_s ÷ ideal_s (target ≤ 1.15)
- ``per_trial_overhead_s`` = (tune_s × slots − Σ compute) ÷ trials: worker start, reporting,
  checkpoint copies, scheduling.
- ``cold_actor_start_s`` / ``warm_trial_overhead_s``: time inside a trial actor not spent in
  ``run_trial``, for the first trial of an actor (process start + imports) and for later trials that
  reuse the actor.

Ray start-up, the one-off shared preparation (teacher, importance) and the whole command including
the table and the Pareto report (``command_s``) are reported separately.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="4 trials x 2 epochs instead of 8 x 4")
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster (= parallel slots)")
    p.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs per trial (default 4, quick 2)")
    p.add_argument("--keep", default=None, help="results directory to keep (default: a temp dir)")
    args = p.parse_args(argv)

    import yaml

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local cluster for the benchmark
    from sweeps.cluster import init_ray, quiet_environment

    quiet_environment(False)
    import ray

    from sweeps.run import build_parser, run_sweep

    trials, epochs = (4, 2) if args.quick else (8, 4)
    epochs = args.epochs or epochs
    budgets = [0.3, 0.5, 0.7, 0.9][: trials // 2]
    root = Path(args.keep or tempfile.mkdtemp(prefix="kpid-bench-")).resolve()
    cfg = root / "bench.yaml"
    root.mkdir(parents=True, exist_ok=True)
    cfg.write_text(yaml.safe_dump({
        "name": "overhead",
        "base": {"teacher.epochs": 3, "epochs": epochs},
        "space": {"budget": budgets, "kd_weight": [0.5, 1.0]},
        "search": {"mode": "grid", "early_stopping": None, "max_failures": 0},
    }))
    t0 = time.perf_counter()
    init_ray(None, num_cpus=args.cpus, num_gpus=0)  # loopback only, as the product's local cluster
    ray_s = time.perf_counter() - t0
    try:
        t1 = time.perf_counter()
        exp = run_sweep(build_parser().parse_args(["--config", str(cfg), "--storage", str(root / "res"),
                                                   "--name", f"overhead-{int(time.time())}",
                                                   "--gpus-per-trial", "0", "--cpus-per-trial", "1"]),
                        out=io.StringIO())
        total_s = time.perf_counter() - t1
    finally:
        ray.shutdown()
    timings = json.loads((exp / "timings.json").read_text())
    prep_s, tune_s = timings["prepare_s"], timings["fit_s"]
    compute, cold, warm, seen = [], [], [], set()
    rows = []
    for d in exp.glob("trial_*"):
        last = json.loads((d / "result.json").read_text().splitlines()[-1])
        rows.append(last)
    for last in sorted(rows, key=lambda r: r["timestamp"] - r["time_total_s"]):
        compute.append(float(last["times/total_s"]))
        # time in the trial actor that run_trial did not account for: actor start + imports for the
        # first trial of each (reused) actor, reporting/checkpoint copies for every trial
        extra = float(last["time_total_s"]) - float(last["times/total_s"])
        (warm if last["pid"] in seen else cold).append(extra)
        seen.add(last["pid"])
    slots = args.cpus
    ideal_s = sum(compute) / slots
    out = {
        "trials": len(compute), "epochs": epochs, "slots": slots,
        "ray_start_s": round(ray_s, 2), "prepare_s": round(prep_s, 2), "command_s": round(total_s, 2),
        "sum_trial_compute_s": round(sum(compute), 2), "ideal_s": round(ideal_s, 2),
        "tune_s": round(tune_s, 2), "ratio": round(tune_s / ideal_s, 3),
        "per_trial_overhead_s": round((tune_s * slots - sum(compute)) / len(compute), 2),
        "cold_actor_start_s": round(sum(cold) / max(len(cold), 1), 2),
        "warm_trial_overhead_s": round(sum(warm) / max(len(warm), 1), 2),
        "results": str(exp),
    }
    for k, v in out.items():
        print(f"{k:>22}: {v}")
    return out


if __name__ == "__main__":
    main()
