"""The KPID paper's ablation order on the bundled digits at an aggressive MAC budget.

Variants (same teacher, same importance scores, same MAC budget within each seed):
  kpid          knapsack allocation + CE + logits KD + inner KD   (the paper's method)
  logits_kd     knapsack allocation + CE + logits KD
  no_kd         knapsack allocation + CE only
  uniform_kpid  uniform per-layer pruning at the same MACs + CE + logits KD + inner KD

Expected order (paper, Tables 4-5): kpid >= uniform_kpid, and kpid >= logits_kd >= no_kd.
Prints mean ± std of test top-1 over the seeds. Usage:
  python bench/ablation.py [--quick] [--budget 0.15] [--seeds N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kpid_core.config import load_config
from kpid_core.trial import prepare_shared, run_trial

VARIANTS = {
    "kpid": {"allocation": "knapsack", "kd_weight": 1.0, "inner_weight": 1.0},
    "logits_kd": {"allocation": "knapsack", "kd_weight": 1.0, "inner_weight": 0.0},
    "no_kd": {"allocation": "knapsack", "kd_weight": 0.0, "inner_weight": 0.0},
    "uniform_kpid": {"allocation": "uniform", "kd_weight": 1.0, "inner_weight": 1.0},
}


def run(budget: float, seeds: list[int], overrides: list[str]) -> dict[str, list[dict]]:
    """Run every variant for every seed; returns ``variant -> [trial metrics]``."""
    results: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="kpid-ablation-") as tmp:
        for seed in seeds:
            base = load_config(overrides=[f"seed={seed}", f"budget={budget}", *overrides])
            shared = prepare_shared(base, Path(tmp) / f"seed{seed}", [base.prune.metric])
            for name, ov in VARIANTS.items():
                m = run_trial(base.with_overrides(ov), shared=shared)
                results[name].append(m)
                print(f"  seed {seed} {name:<13} acc {m['accuracy']:.4f}  macs_ratio {m['macs_ratio']:.4f}  "
                      f"teacher {m['teacher_accuracy']:.4f}", file=sys.stderr, flush=True)
    return results


def summarize(results: dict[str, list[dict]]) -> list[dict]:
    rows = []
    for name, ms in results.items():
        acc = [m["accuracy"] for m in ms]
        rows.append({"variant": name, "n": len(acc), "mean": statistics.fmean(acc),
                     "std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                     "macs_ratio": statistics.fmean(m["macs_ratio"] for m in ms),
                     "teacher": statistics.fmean(m["teacher_accuracy"] for m in ms)})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 seeds (default: 5)")
    ap.add_argument("--budget", type=float, default=0.15, help="fraction of dense MACs kept (default 0.15)")
    ap.add_argument("--seeds", type=int, default=None, help="number of seeds (overrides --quick)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="extra trial config override, e.g. --set epochs=4")
    ap.add_argument("--json", metavar="FILE", help="also write the per-trial metrics as JSON")
    args = ap.parse_args(argv)
    n = args.seeds or (3 if args.quick else 5)
    t0 = time.perf_counter()
    results = run(args.budget, list(range(n)), args.overrides)
    rows = summarize(results)
    print(f"KPID ablation on digits (digits_resnet), budget {args.budget}, {n} seeds, "
          f"{time.perf_counter() - t0:.0f} s")
    print(f"{'variant':<14} {'test top-1 (mean ± std)':>24} {'MACs ratio':>11}")
    for r in rows:
        print(f"{r['variant']:<14} {r['mean'] * 100:>15.2f} ± {r['std'] * 100:4.2f} % {r['macs_ratio']:>11.4f}")
    print(f"{'teacher':<14} {rows[0]['teacher'] * 100:>15.2f} %")
    by = {r["variant"]: r["mean"] for r in rows}
    checks = {"knapsack >= uniform": by["kpid"] >= by["uniform_kpid"],
              "inner KD >= logits KD": by["kpid"] >= by["logits_kd"],
              "logits KD >= no KD": by["logits_kd"] >= by["no_kd"]}
    for k, ok in checks.items():
        print(f"  {k:<24} {'holds' if ok else 'DOES NOT HOLD'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "checks": checks, "trials": {
            k: [{x: m[x] for x in ("accuracy", "macs_ratio", "teacher_accuracy")} for m in v]
            for k, v in results.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
