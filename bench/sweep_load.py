"""Sweep under load: many short trials through the whole sweep layer (Tune, Optuna on SQLite, the
trials table), with a stand-in trainable so that only the sweep machinery is measured.

    python bench/sweep_load.py [--trials 200] [--cpus 2] [--keep DIR]

Prints the driver's peak resident memory, the size of ``optuna.db``, the rows of ``trials.parquet``
(must equal ``--trials``, all finished), and the per-trial overhead ``fit_s × slots ÷ trials`` (the
stand-in trains nothing: 2 epochs of a few milliseconds each).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def fake_prepare(cfg: dict, out_dir: Path, metrics: list[str]) -> dict:
    return {"metrics": list(metrics)}


def fake_trial(cfg: dict, on_epoch=None, *, out_dir=None, shared=None, checkpoint_dir=None, resume_from=None) -> dict:
    budget = float(cfg["prune"]["budget"])
    acc = 0.5 + 0.4 * budget + 0.01 * float(cfg["distill"]["kd_weight"])
    epochs = int(cfg["train"]["epochs"])
    for e in range(1, epochs + 1):
        if checkpoint_dir is not None:
            Path(checkpoint_dir, "state.json").write_text(json.dumps({"epoch": e}))
        if on_epoch is not None:
            on_epoch(e, {"epoch": e, "accuracy": acc, "loss": 1.0 / e, "macs": int(1e6 * budget),
                         "macs_ratio": budget, "budget": budget, "params": 1000})
    return {"accuracy": acc, "val_accuracy": acc, "teacher_accuracy": 0.95, "macs": int(1e6 * budget),
            "macs_dense": 1_000_000, "macs_ratio": budget, "params": 1000, "params_dense": 2000, "budget": budget,
            "metric": cfg["prune"]["metric"], "status": "finished", "epochs_done": epochs,
            "times": {"total_s": 0.0}, "config": cfg}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=200, help="trials of the Optuna search (default 200)")
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster (= parallel slots)")
    p.add_argument("--keep", default=None, help="results directory to keep (default: a temp dir)")
    args = p.parse_args(argv)

    import yaml

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private, loopback-only cluster for the benchmark
    from sweeps.cluster import init_ray, quiet_environment

    quiet_environment(False)
    import ray

    from sweeps.run import build_parser, run_sweep

    root = Path(args.keep or tempfile.mkdtemp(prefix="kpid-load-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    cfg = root / "load.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "load",
        "base": {"epochs": 2},
        "space": {"budget": [0.25, 0.5, 0.75], "metric": ["taylor", "l1"], "kd_weight": {"low": 0.0, "high": 2.0}},
        "search": {"mode": "optuna", "num_samples": args.trials, "early_stopping": None, "max_failures": 0},
    }))
    init_ray(None, num_cpus=args.cpus, num_gpus=0)
    try:
        t0 = time.perf_counter()
        exp = run_sweep(build_parser().parse_args(["--config", str(cfg), "--storage", str(root / "res"),
                                                   "--name", f"load-{int(time.time())}", "--gpus-per-trial", "0"]),
                        trial_fn=fake_trial, prepare_fn=fake_prepare, out=io.StringIO())
        command_s = time.perf_counter() - t0
    finally:
        ray.shutdown()
    import pandas as pd

    df = pd.read_parquet(exp / "trials.parquet")
    fit_s = json.loads((exp / "timings.json").read_text())["fit_s"]
    out = {
        "trials": args.trials, "slots": args.cpus, "rows": len(df), "finished": int((df["status"] == "finished").sum()),
        "unique_ids": bool(df["trial_id"].is_unique),
        "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "optuna_db_kb": round((exp / "optuna.db").stat().st_size / 1024, 1),
        "fit_s": fit_s, "command_s": round(command_s, 1),
        "per_trial_overhead_s": round(fit_s * args.cpus / args.trials, 3),
        "results": str(exp),
    }
    for k, v in out.items():
        print(f"{k:>22}: {v}")
    return out


if __name__ == "__main__":
    main()
