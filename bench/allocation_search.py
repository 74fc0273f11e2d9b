"""Why does knapsack allocation lose on Fashion-MNIST, and what fixes it? Each candidate changes ONE
thing from the paper's recipe (as this project first implemented it), and is run at budgets 0.25
and 0.1 on the search seeds with the same teacher, split and KD as everything else; uniform and
Torch-Pruning allocations with the same KD are the references.

The winner is chosen on the VALIDATION split (mean over seeds and budgets), never on the test set;
the test accuracy is printed beside it, and the chosen defaults are then reported by
bench/quality.py and bench/ablation.py on other seeds. Usage:
  python bench/allocation_search.py [--quick] [--seeds 0-2] [--jobs N] [--device cuda] [--json FILE]
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench._paired import cell_stats, load_results, paired, run_jobs
from bench.quality import build_parser, header, resolve

__all__ = ["CANDIDATES", "PAPER", "main", "rank"]

# The recipe the issue measured: Taylor (signed sum over batches), group sums, linearised at the
# knapsack's own counts, min_keep 0.1, inner KD weight 1.
PAPER = ["prune.metric=taylor", "prune.normalize=none", "prune.linearize=current", "prune.spread=0",
         "prune.min_keep=0.1", "distill.inner_weight=1.0"]


def _one(**change: str) -> list[str]:
    keys = {k.replace("__", "."): v for k, v in change.items()}
    return [o for o in PAPER if o.split("=")[0] not in keys] + [f"{k}={v}" for k, v in keys.items()]


CANDIDATES: dict[str, list[str]] = {
    "paper": PAPER,
    "metric_l1": _one(prune__metric="l1"),
    "metric_taylor_abs": _one(prune__metric="taylor_abs"),
    "normalize_mean": _one(prune__normalize="mean"),
    "normalize_max": _one(prune__normalize="max"),
    "min_keep_0.25": _one(prune__min_keep="0.25"),
    "linearize_uniform": _one(prune__linearize="uniform"),
    "spread_2": _one(prune__spread="2"),
    "spread_1.5": _one(prune__spread="1.5"),
    "inner_weight_0.3": _one(distill__inner_weight="0.3"),
    "inner_weight_3": _one(distill__inner_weight="3"),
    # pairs of the single changes that the allocation analysis (docs/knapsack.md) expects to help
    "taylor_abs+spread_1.5": _one(prune__metric="taylor_abs", prune__spread="1.5"),
    "taylor_abs+min_keep_0.25": _one(prune__metric="taylor_abs", prune__min_keep="0.25"),
    "spread_1.5+linearize_uniform": _one(prune__spread="1.5", prune__linearize="uniform"),
    "spread_1.25": _one(prune__spread="1.25"),
    "spread_1.5+metric_l1": _one(prune__spread="1.5", prune__metric="l1"),
}
REFERENCES = ["uniform_kd", "tp_kd"]


def rank(rows: list[dict], budgets: list[float]) -> list[tuple[str, float, float]]:
    """(candidate, mean val accuracy, mean test accuracy) over seeds and budgets, best val first."""
    out = []
    for name in [*CANDIDATES, *REFERENCES]:
        val = [cell_stats(rows, name, b, "val_accuracy")[0] for b in budgets]
        test = [cell_stats(rows, name, b)[0] for b in budgets]
        if not any(math.isnan(v) for v in val):  # measured at every budget
            out.append((name, statistics.fmean(val), statistics.fmean(test)))
    return sorted(out, key=lambda t: -t[1])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = build_parser(__doc__, REFERENCES)
    ap.add_argument("--json", default=None, help="write the ranking and the winner's overrides to this file")
    ap.add_argument("--candidates", default=None, help=f"comma list of candidates to run (default all: {', '.join(CANDIDATES)})")
    args = ap.parse_args(argv)
    if not args.budgets:
        args.budgets = "0.25,0.1"
    if not args.seeds:
        args.seeds = "0-2"
    setting, seeds, budgets, methods, extra = resolve(args, ap)
    chosen = [c for c in (args.candidates or ",".join(CANDIDATES)).split(",") if c]
    if any(c not in CANDIDATES for c in chosen):
        ap.error(f"--candidates: unknown {', '.join(c for c in chosen if c not in CANDIDATES)}; "
                 f"allowed: {', '.join(CANDIDATES)}")
    t0 = time.perf_counter()
    if not args.no_run:
        run_jobs(setting, seeds, budgets, methods, cache=args.cache, extra=extra,
                 variants={c: CANDIDATES[c] for c in chosen},
                 jobs=args.jobs, log=lambda s: print(s, file=sys.stderr, flush=True))
    rows = [r for r in load_results(setting, args.cache, extra) if r["seed"] in seeds]
    lines = header("Allocation search on Fashion-MNIST (ResNet-20 teacher): one change at a time", setting,
                   seeds, extra, ["bench/allocation_search.py", *argv])
    lines += ["| candidate | overrides | " + " | ".join(f"val / test @ {b:g}" for b in budgets)
              + " | test − paper (paired) @ " + ", ".join(f"{b:g}" for b in budgets) + " |",
              "|---|---|" + "---|" * (len(budgets) + 1)]
    for name in [*CANDIDATES, *REFERENCES]:
        cells = []
        for b in budgets:
            v, _, n = cell_stats(rows, name, b, "val_accuracy")
            t, sd, _ = cell_stats(rows, name, b)
            cells.append("–" if n == 0 else f"{v * 100:.2f} / {t * 100:.2f} ± {sd * 100:.2f}")
        diffs = []
        for b in budgets:
            d = paired(rows, name, "paper", b)
            diffs.append("–" if d["n"] < 2 or name == "paper" else f"{d['mean'] * 100:+.2f} (p={d['p']:.2g})")
        ov = " ".join(o for o in CANDIDATES.get(name, []) if o not in PAPER) or ("(paper)" if name == "paper" else "")
        lines.append(f"| {name} | {ov} | " + " | ".join(cells) + " | " + ", ".join(diffs) + " |")
    ranking = rank(rows, budgets)
    cands = [r for r in ranking if r[0] in CANDIDATES]
    if cands:
        lines.append(f"\n- chosen on validation accuracy: **{cands[0][0]}** (val {cands[0][1] * 100:.2f}, "
                     f"test {cands[0][2] * 100:.2f}); ranking: "
                     + ", ".join(f"{n} {v * 100:.2f}" for n, v, _ in ranking))
    lines.append(f"\n({time.perf_counter() - t0:.0f} s)")
    print("\n".join(lines))
    if args.md:
        with open(args.md, "w") as f:
            f.write("\n".join(lines) + "\n")
    if args.json and cands:
        with open(args.json, "w") as f:
            json.dump({"winner": cands[0][0], "overrides": CANDIDATES[cands[0][0]],
                       "ranking": [{"name": n, "val": v, "test": t} for n, v, t in ranking]}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
