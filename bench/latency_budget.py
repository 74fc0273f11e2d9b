"""Latency budgets: does ``prune_to_budget(cost="latency")`` land the measured latency on target?

For each model (random init; speed does not depend on the weights, L1 scores) and budget, prune
twice in the same run — ``cost=latency`` (the product's measured per-layer table, cached) and
``cost=macs`` (the default) — then time dense and pruned models in interleaved rounds and report the
median over rounds of the paired ratio t_pruned / t_dense, its spread (min–max and IQR over rounds),
the ratio the latency table predicted, and

    efficiency = realised speed-up / targeted speed-up = budget / (t_pruned / t_dense)

(for the MAC-budgeted model the target is its MAC ratio). Goals: the latency-budgeted ratio within
±5 % (relative) of the budget, efficiency ≥ 0.95.

Two timing contexts (``--timing``): ``all`` (default) times the dense model and every pruned variant
of a model in one rotation (each once per round, rotating order); ``pairs`` times each pruned variant
against the dense model alone, in rounds of its own — the context in which the product's landing
(``kpid_core.engine.landing``) measures a pruned network, and nearer to serving one model.

Usage: ``python bench/latency_budget.py [--models ...] [--budgets ...] [--batch 8] [--threads 1]
[--device cpu|cuda] [--amp] [--repeats 9] [--timing all|pairs] [--md FILE] [--dry]``
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench._header import command_line, header_lines
from kpid_core.engine.groups import find_groups
from kpid_core.engine.importance import compute_importance
from kpid_core.engine.latency_table import (
    LatencySettings,
    Timer,
    device_name,
    latency_cost,
    latency_table,
    time_interleaved,
)
from kpid_core.errors import InfeasibleBudgetError
from kpid_core.models import build_model
from kpid_core.prune import prune_to_budget

__all__ = ["main", "run_model", "summarise"]

MODELS = ["resnet50", "mobilenet_v3_large", "efficientnet_b0"]
BUDGETS = [0.3, 0.5, 0.7]
TOLERANCE, EFFICIENCY = 0.05, 0.95


def _quantile(v: list[float], q: float) -> float:
    s = sorted(v)
    i = q * (len(s) - 1)
    lo = int(i)
    return s[lo] + (s[min(lo + 1, len(s) - 1)] - s[lo]) * (i - lo)


def run_model(name: str, size: int, budgets: list[float], settings: LatencySettings, repeats: int,
              log, timing: str = "all") -> list[dict]:
    """Prune ``name`` to every budget under both cost models and time the variants interleaved with the
    dense model.

    Args:
        name: a registry model.
        size: input side (pixels).
        budgets: target fractions.
        settings: latency table and timing settings.
        repeats: interleaved timing rounds.
        log: progress callback.
        timing: ``all`` (one rotation of every variant and the dense model) or ``pairs`` (each variant
            with the dense model alone).

    Returns:
        One dict per pruned variant (cost, budget, ratios, spread, prediction, efficiency).
    """
    x = torch.zeros(1, 3, size, size)
    dense = build_model(name).eval()
    scores = compute_importance(dense, x, "l1")
    t0 = time.perf_counter()
    G = find_groups(copy.deepcopy(dense), x)
    table = latency_table(G.model, G, settings, log)
    lat = latency_cost(G, table)
    log(f"{name}: latency table {len(table.names)} calls, measured in {table.seconds:.0f} s "
        f"(this call {time.perf_counter() - t0:.0f} s); dense modelled {table.modelled_s() * 1e3:.1f} ms, "
        f"measured {table.dense_s * 1e3:.1f} ms (unmodelled {table.unmodelled_s * 1e3:+.1f} ms)")
    variants = []
    for b in budgets:
        try:
            pair = {cost: prune_to_budget(dense, x, b, scores, cost=cost, latency=settings) for cost in ("latency", "macs")}
        except InfeasibleBudgetError as exc:  # the measured table's fixed part can exceed a budget on a busy machine
            log(f"{name} @ {b}: skipped, the measured latency table cannot reach it (needs >= {exc.min_budget:.3f})")
            continue
        for cost, r in pair.items():
            k = G.counts({key: len(v) for key, v in r.kept.items()})
            variants.append({"model": name, "budget": b, "cost": cost, "net": r.model, "macs_ratio": r.macs_ratio,
                             "predicted": lat.total(k) / lat.total(), "tries": len(r.spec.get("latency_landing", [])),
                             "landing_measured": r.spec.get("latency_measured")})
        log(f"{name} @ {b}: pruned")
    timer = Timer(settings)
    torch.set_num_threads(settings.threads)
    fns = [timer.prepare(dense, (settings.batch, 3, size, size))]
    fns += [timer.prepare(v["net"], (settings.batch, 3, size, size)) for v in variants]
    t0 = time.perf_counter()
    if timing == "pairs":  # (dense, pruned) samples of each variant's own rounds
        pairs = [time_interleaved([fns[0], fn], repeats, timer) for fn in fns[1:]]
    else:
        every = time_interleaved(fns, repeats, timer)
        pairs = [(every[0], s) for s in every[1:]]
    log(f"{name}: timed {len(fns)} models x {repeats} rounds ({timing}) in {time.perf_counter() - t0:.0f} s")
    for v, (d, s) in zip(variants, pairs):
        ratios = [p / q for p, q in zip(s, d)]
        v.update(dense_ms=statistics.median(d) * 1e3, ms=statistics.median(s) * 1e3,
                 ratio=statistics.median(ratios), lo=min(ratios), hi=max(ratios), fastest=min(s) / min(d),
                 q1=_quantile(ratios, 0.25), q3=_quantile(ratios, 0.75))
        target = v["budget"] if v["cost"] == "latency" else v["macs_ratio"]
        v["target"] = target
        v["dev"] = v["ratio"] / target - 1
        v["eff"] = target / v["ratio"]
        del v["net"]
    return variants


def render(rows: list[dict]) -> list[str]:
    """The markdown table."""
    out = [("| model | budget | cost | MACs ratio | predicted lat. ratio | measured lat. ratio (median) | IQR "
            "| min–max | vs target | efficiency | fastest-round ratio | dense ms | pruned ms | landing tries (its measured ratio) |"),
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['model']} | {r['budget']:.1f} | {r['cost']} | {r['macs_ratio']:.3f} | {r['predicted']:.3f} | "
                   f"{r['ratio']:.3f} | {r['q1']:.3f}–{r['q3']:.3f} | {r['lo']:.3f}–{r['hi']:.3f} | "
                   f"{r['dev'] * 100:+.1f} % | {r['eff']:.2f} | {r['fastest']:.3f} | {r['dense_ms']:.1f} | {r['ms']:.1f} | "
                   + (f"{r['tries']} ({r['landing_measured']:.3f}) |" if r["tries"] else "– |"))
    return out


def summarise(rows: list[dict]) -> list[str]:
    """Goal lines: latency rows within ±5 % and efficiency ≥ 0.95; MAC rows for comparison."""
    out = []
    for cost in ("latency", "macs"):
        rs = [r for r in rows if r["cost"] == cost]
        if not rs:
            continue
        within = sum(abs(r["dev"]) <= TOLERANCE for r in rs)
        effs = [r["eff"] for r in rs]
        pred = [abs(r["ratio"] / r["predicted"] - 1) for r in rs]
        fast = sum(abs(r["fastest"] / r["target"] - 1) <= TOLERANCE for r in rs)
        out.append(f"cost={cost}: {within}/{len(rs)} cells within ±{TOLERANCE:.0%} of the latency budget"
                   if cost == "latency" else
                   f"cost={cost}: measured latency ratio vs the same budget: "
                   + ", ".join(f"{r['model']}@{r['budget']:.1f} {r['ratio']:.3f}" for r in rs))
        out.append(f"cost={cost}: fastest-round ratio within ±{TOLERANCE:.0%} of its target in {fast}/{len(rs)} cells")
        out.append(f"cost={cost}: efficiency median {statistics.median(effs):.2f} (min {min(effs):.2f}); "
                   f"table prediction error |measured/predicted − 1| median {statistics.median(pred):.1%} "
                   f"(max {max(pred):.1%})")
    lat = [r for r in rows if r["cost"] == "latency"]
    if lat:
        ok = all(abs(r["dev"]) <= TOLERANCE for r in lat) and all(r["eff"] >= EFFICIENCY for r in lat)
        out.append(f"goal (latency rows within ±5 % and efficiency ≥ {EFFICIENCY}): {'met' if ok else 'MISSED'}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma list (default {','.join(MODELS)})")
    ap.add_argument("--budgets", default=",".join(map(str, BUDGETS)), help="comma list of fractions in (0, 1)")
    ap.add_argument("--size", type=int, default=224, help="input side in pixels (default 224)")
    ap.add_argument("--batch", type=int, default=8, help="images per forward (default 8)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--amp", action="store_true", help="CUDA: fp16 autocast + channels_last")
    ap.add_argument("--repeats", type=int, default=9, help="interleaved timing rounds (default 9)")
    ap.add_argument("--timing", default="all",
                    help="all: the dense model and every pruned variant in one rotation per round (default); "
                         "pairs: each pruned variant against the dense model alone, as the product's landing times it")
    ap.add_argument("--table-repeats", type=int, default=5, help="rounds per layer in the latency table (default 5)")
    ap.add_argument("--land-rounds", type=int, default=LatencySettings.land_rounds,
                    help="cost=latency: measured re-prunes at most (the product's landing; 0 = the table alone; "
                         "default %(default)s)")
    ap.add_argument("--cache-dir", default=None, help="latency table cache (default: the product's)")
    ap.add_argument("--md", default=None, help="also write the markdown to this file")
    ap.add_argument("--dry", action="store_true", help="smoke run: mobilenet_v3_small, 64 px, batch 2, 3 rounds, 2 ms timing samples")
    args = ap.parse_args(argv)

    def fail(msg: str) -> int:
        print(f"error: {msg}", file=sys.stderr)
        return 2

    try:
        budgets = [float(b) for b in args.budgets.split(",")]
    except ValueError:
        return fail(f"--budgets {args.budgets!r}: expected comma-separated numbers in (0, 1)")
    if not all(0 < b < 1 for b in budgets):
        return fail(f"--budgets {args.budgets!r}: each must be in (0, 1)")
    if args.device not in ("cpu", "cuda"):
        return fail(f"--device {args.device!r}: allowed values: cpu, cuda")
    if args.device == "cuda" and not torch.cuda.is_available():
        return fail("--device cuda: CUDA is not available here; allowed: cpu")
    for flag in ("batch", "threads", "repeats", "table_repeats", "size"):
        if getattr(args, flag) < 1:
            return fail(f"--{flag.replace('_', '-')} must be >= 1")
    if args.land_rounds < 0:
        return fail("--land-rounds must be >= 0")
    if args.timing not in ("all", "pairs"):
        return fail(f"--timing {args.timing!r}: allowed values: all, pairs")
    models = args.models.split(",")
    size, batch, repeats = args.size, args.batch, args.repeats
    if args.dry:
        models, size, batch, repeats, budgets = ["mobilenet_v3_small"], 64, 2, 3, [0.7]
    from kpid_core.models import MODEL_NAMES

    bad = [m for m in models if m not in MODEL_NAMES]
    if bad:
        return fail(f"--models {bad[0]!r}: allowed values: {', '.join(MODELS)} (or another registry model)")
    settings = LatencySettings(device=args.device, batch=batch, threads=args.threads, amp=args.amp,
                               channels_last=args.amp, repeats=1 if args.dry else args.table_repeats,
                               cache_dir=args.cache_dir, land_rounds=args.land_rounds,
                               min_sample_s=0.002 if args.dry else LatencySettings.min_sample_s)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    t_all = time.perf_counter()
    rows: list[dict] = []
    for name in models:
        rows += run_model(name, size, budgets, settings, repeats, log, args.timing)
    lines, summ = render(rows), summarise(rows)
    dev = device_name(args.device)
    setting = (f"{size}x{size}, batch {batch}, {args.threads} thread(s), {dev}{', AMP+channels_last' if args.amp else ''}, "
               f"{repeats} interleaved rounds ({'each variant paired with the dense model alone' if args.timing == 'pairs' else 'all variants in one rotation'}), table {settings.repeats} rounds per layer, landing {settings.land_rounds} "
               f"measured re-prunes at most ({settings.land_repeats} rounds each, tolerance {settings.land_tolerance:g})")
    print(f"Latency budgets: {setting}")
    print("\n".join(lines))
    print("\n".join(summ))
    print(f"({time.perf_counter() - t_all:.0f} s)")
    if args.md:
        cmd = command_line("bench/latency_budget.py", list(argv if argv is not None else sys.argv[1:]))
        head = header_lines("Latency budgets: measured latency vs target (cost=latency beside cost=macs)", cmd,
                            device=dev, notes=[f"Setting: {setting}; random-init weights, L1 scores.",
                                               ("Ratio = t_pruned / t_dense, median over interleaved rounds of the "
                                                "paired ratio; efficiency = target / ratio (target: the budget for "
                                                "cost=latency, the MAC ratio for cost=macs).")])
        with open(args.md, "w") as f:
            f.write("\n".join(head) + "\n" + "\n".join(lines) + "\n\n" + "\n".join(f"- {s}" for s in summ) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
