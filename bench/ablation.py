"""The KPID paper's ablation order on Fashion-MNIST at MAC budgets 0.25 and 0.1, paired by seed.

Variants ``ours``, ``logits_kd``, ``no_kd`` and ``uniform_kd`` (described under "methods" below; same
teacher, split, importance scores, epochs and MAC budget within each seed; results shared with
bench/quality.py through the cache).

Expected order (paper, Tables 4-5): knapsack > uniform, and inner KD > logits KD > no KD. Each
step is a paired difference over seeds with a two-sided paired t-test. Usage:
  python bench/ablation.py [--quick] [--setting full|quick|gpu] [--seeds N] [--jobs N] [--threads N] [--device cuda]
"""

from __future__ import annotations

import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench._header import emit
from bench._paired import paired
from bench.quality import build_parser, header, resolve, run_and_load, table, teacher_label

__all__ = ["ORDER", "VARIANTS", "main", "order_checks"]

VARIANTS = ["ours", "logits_kd", "no_kd", "uniform_kd"]
ORDER = [("ours", "uniform_kd", "knapsack > uniform"), ("ours", "logits_kd", "inner KD > logits KD"),
         ("logits_kd", "no_kd", "logits KD > no KD")]


def order_checks(rows: list[dict], budgets: list[float]) -> list[str]:
    """One line per ordered pair and budget: paired difference, p-value and whether it holds."""
    out = []
    for b in budgets:
        for a, c, what in ORDER:
            d = paired(rows, a, c, b)
            if not d["n"]:
                continue
            verdict = "holds (p < 0.05)" if d["mean"] > 0 and d["p"] < 0.05 else (
                "same direction, not significant" if d["mean"] > 0 else "DOES NOT HOLD")
            out.append(f"budget {b:g}: {what}: {a} − {c} = {d['mean'] * 100:+.2f} ± {d['std'] * 100:.2f} points "
                       f"(p={d['p']:.3g}, n={d['n']}): {verdict}")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = build_parser(__doc__, VARIANTS)
    args = ap.parse_args(argv)
    if not args.budgets:
        args.budgets = "0.25" if args.quick or args.setting == "quick" else "0.25,0.1"
    setting, seeds, budgets, methods, extra = resolve(args, ap)
    t0 = time.perf_counter()
    rows = run_and_load(args, setting, seeds, budgets, methods, extra)
    lines = header(f"KPID ablation on Fashion-MNIST ({teacher_label(setting, extra)} teacher, 1×28×28)", setting,
                   seeds, extra, ["bench/ablation.py", *argv])
    lines += table(rows, budgets, methods) + [""] + [f"- {c}" for c in order_checks(rows, budgets)]
    lines.append(f"\n({time.perf_counter() - t0:.0f} s)")
    emit(lines, args.md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
