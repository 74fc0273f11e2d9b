"""Latency-budgeted against MAC-budgeted pruning on Fashion-MNIST at matched measured latency (issue 13).

For each seed, with the seed's cached teacher and importance (``bench/_paired.py``, the same setting
as ``bench/quality.py``):

1. **MACs.** A trial with the product's defaults at MAC budget ``--budget`` (the pruned model saved).
2. **Its latency.** Dense teacher and that pruned model timed in interleaved rounds on the CPU
   (``--batch``, ``--timing-threads``): ``r`` = median of t_pruned / t_dense.
3. **Latency.** A trial with ``prune.cost=latency`` at latency budget ``r`` (the product's measured
   per-layer table, cached under the bench cache), i.e. aimed at the same measured latency.
4. **Matched?** Dense, MAC-pruned and latency-pruned timed together in interleaved rounds: ``q`` =
   median of t_latency / t_macs. Within ``--tolerance`` (default ±2 %) the pair is matched; otherwise
   step 3 is repeated at a corrected budget (the product's landing correction,
   ``kpid_core.engine.landing.next_budget``, with q = 1 as its target), at most ``--tries`` trials;
   the try nearest q = 1 is kept and reported.

Reports both accuracies per seed, the paired difference (latency − MACs) with its standard error and
a paired t-test, and the goal: at matched latency the latency-budgeted model at least as accurate
(difference ≥ −1 standard error) over ≥ 3 seeds. Every trial and timing is cached per seed
(``CACHE/SETTING/seedN/latq-bB/``), so a run continues where it stopped. Usage:

    python bench/latency_quality.py [--seeds 3-5] [--budget 0.25] [--setting full|quick|smoke] [--md FILE]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench._header import command_line, header_lines
from bench._paired import SETTINGS, Job, prepare_seed, seed_dir
from bench.quality import DEFAULT_CACHE, parse_seeds
from kpid_core.engine.landing import next_budget

__all__ = ["main", "run_seed", "summarise", "time_models"]


def time_models(models: list, input_shape: tuple[int, ...], *, batch: int, threads: int, repeats: int) -> list[list[float]]:
    """Seconds per batch of each model, timed in interleaved rounds on the CPU (copies are timed).

    Args:
        models: the models (dense first, by convention).
        input_shape: one image's shape (C, H, W).
        batch: images per forward.
        threads: torch intra-op threads while timing.
        repeats: interleaved rounds.

    Returns:
        ``samples[i]``: the ``repeats`` timings of ``models[i]``.
    """
    from kpid_core.engine.timing import LatencySettings, Threads, Timer, time_interleaved

    settings = LatencySettings(device="cpu", batch=batch, threads=threads, repeats=repeats).check()
    timer = Timer(settings)
    with Threads(threads):
        fns = [timer.prepare(copy.deepcopy(m).eval(), (batch, *input_shape)) for m in models]
        return time_interleaved(fns, repeats, timer, min_sample_s=settings.min_sample_s)


def _median_ratio(num: list[float], den: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(num, den))


def _trial(cfg, shared, out: Path, overrides: dict) -> dict:
    """One trial, or its cached ``metrics.json`` (the model is in ``out/model``)."""
    from kpid_core.trial import run_trial

    if (out / "metrics.json").is_file() and (out / "model").is_dir():
        return json.loads((out / "metrics.json").read_text())
    return run_trial(cfg.with_overrides(overrides), shared=shared, out_dir=out)


def run_seed(job: Job, budget: float, *, batch: int, timing_threads: int, repeats: int, tolerance: float,
             tries: int, log=print) -> dict:
    """Steps 1–4 of the module docstring for one seed.

    Args:
        job: the seed's job (setting, seed, cache; its ``budget`` is used to find the cached teacher).
        budget: the MAC budget of the MAC-budgeted trial.
        batch: images per forward when timing (and in the latency table).
        timing_threads: torch threads when timing (and in the latency table).
        repeats: interleaved timing rounds.
        tolerance: the largest |t_latency / t_macs − 1| called matched.
        tries: the most latency-budgeted trials run to get there.
        log: progress lines go here.

    Returns:
        The seed's row: accuracies, MAC and latency ratios, the latency budget used, ``q``, ``matched``,
        ``tries`` (also written to ``result.json`` in the seed's folder).
    """
    from kpid_core.engine.spec import load_pruned
    from kpid_core.files import atomic_write_text
    from kpid_core.trial import load_teacher, trial_data

    cfg, shared = prepare_seed(job)
    root = seed_dir(job) / f"latq-b{budget:g}-batch{batch}"
    result_file = root / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    data = trial_data(cfg)
    import torch

    dense = load_teacher(cfg, data, shared, torch.device("cpu")).model
    lat_common = {"latency.batch": batch, "latency.threads": timing_threads, "latency.measure": "off",
                  "latency.cache_dir": str(Path(job.cache) / "latency")}
    t0 = time.perf_counter()
    m_mac = _trial(cfg, shared, root / "macs", {"budget": budget, **lat_common})
    mac_model = load_pruned(root / "macs" / "model")
    target_file = root / "macs_latency.json"  # measured once: a continued run aims at the same target
    if target_file.is_file():
        target = json.loads(target_file.read_text())["ratio"]
    else:
        d, p = time_models([dense, mac_model], data.input_shape, batch=batch, threads=timing_threads, repeats=repeats)
        target = _median_ratio(p, d)
        atomic_write_text(target_file, json.dumps({"ratio": target}))
    log(f"seed {job.seed}: MAC-budgeted {m_mac['accuracy']:.4f}, latency ratio {target:.3f} of dense")
    lat_budget, tried = round(target, 4), []
    for k in range(1, tries + 1):
        out = root / f"latency-{lat_budget:.4f}"  # keyed by budget: a continued run reuses the same tries
        m_lat = _trial(cfg, shared, out, {"budget": round(lat_budget, 6), "prune.cost": "latency", **lat_common})
        timing_file = out / "timing.json"  # measured once per try: a continued run takes the same path
        if timing_file.is_file():
            tm = json.loads(timing_file.read_text())
        else:
            d, p_mac, p_lat = time_models([dense, mac_model, load_pruned(out / "model")], data.input_shape,
                                          batch=batch, threads=timing_threads, repeats=repeats)
            tm = {"q": _median_ratio(p_lat, p_mac), "lat_ratio_macs": _median_ratio(p_mac, d),
                  "lat_ratio_latency": _median_ratio(p_lat, d)}
            atomic_write_text(timing_file, json.dumps(tm))
        q = tm["q"]
        tried.append({"seed": job.seed, "budget": budget, "acc_macs": m_mac["accuracy"], "acc_latency": m_lat["accuracy"],
                      "val_macs": m_mac["val_accuracy"], "val_latency": m_lat["val_accuracy"],
                      "macs_ratio_macs": m_mac["macs_ratio"], "macs_ratio_latency": m_lat["macs_ratio"],
                      "lat_ratio_macs": tm["lat_ratio_macs"], "lat_ratio_latency": tm["lat_ratio_latency"],
                      "latency_budget": lat_budget, "q": q, "matched": abs(q - 1) <= tolerance, "tries": k,
                      "teacher": shared.teacher_accuracy, "batch": batch, "timing_threads": timing_threads})
        log(f"seed {job.seed}: latency-budgeted (budget {lat_budget:.3f}) {m_lat['accuracy']:.4f}, "
            f"t_latency / t_macs {q:.3f}" + ("" if tried[-1]["matched"] else " (not matched)"))
        if tried[-1]["matched"]:
            break
        # q is to reach 1: the landing's correction (scale, then secant) with 1 as its target
        lat_budget = round(min(0.999, next_budget([(t["latency_budget"], t["q"]) for t in tried], 1.0)), 4)
        if any(abs(lat_budget - t["latency_budget"]) < 1e-4 for t in tried):
            break  # the correction would repeat a try
    # the try nearest the MAC model's latency (the last one when it is matched)
    row = min(tried, key=lambda t: (not t["matched"], abs(t["q"] - 1)))
    row["tried"] = [(t["latency_budget"], t["q"]) for t in tried]
    row["seconds"] = round(time.perf_counter() - t0, 1)
    atomic_write_text(result_file, json.dumps(row, indent=1))
    return row


def summarise(rows: list[dict]) -> dict:
    """Paired difference (latency − MACs accuracy, points) over the matched seeds and the goal.

    Args:
        rows: :func:`run_seed`'s rows.

    Returns:
        ``n`` (matched seeds), ``mean``, ``se`` (standard error), ``p`` (two-sided paired t-test; nan
        below 2 seeds) and ``met`` (≥ 3 matched seeds and mean ≥ −se).
    """
    diffs = [(r["acc_latency"] - r["acc_macs"]) * 100 for r in rows if r["matched"]]
    n = len(diffs)
    if n < 2:
        return {"n": n, "mean": diffs[0] if diffs else math.nan, "se": math.nan, "p": math.nan, "met": False}
    mean, sd = statistics.fmean(diffs), statistics.stdev(diffs)
    se = sd / math.sqrt(n)
    from scipy import stats

    p = float(stats.ttest_1samp(diffs, 0.0).pvalue) if sd > 0 else (1.0 if mean == 0 else 0.0)
    return {"n": n, "mean": mean, "se": se, "p": p, "met": n >= 3 and mean >= -se}


def _report(rows: list[dict], s: dict) -> list[str]:
    out = [("| seed | MAC-budgeted: top-1 % (MACs, latency of dense) | latency-budgeted: top-1 % (MACs, latency; budget) "
           "| t_latency / t_macs | matched | difference (points) |"), "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['seed']} | {r['acc_macs'] * 100:.2f} ({r['macs_ratio_macs']:.3f}, {r['lat_ratio_macs']:.3f}) | "
                   f"{r['acc_latency'] * 100:.2f} ({r['macs_ratio_latency']:.3f}, {r['lat_ratio_latency']:.3f}; "
                   f"{r['latency_budget']:.3f}) | {r['q']:.3f} | {'yes' if r['matched'] else 'no'} (try {r['tries']}) | "
                   f"{(r['acc_latency'] - r['acc_macs']) * 100:+.2f} |")
    if rows:
        out += ["", (f"- MAC-budgeted {statistics.fmean(r['acc_macs'] for r in rows) * 100:.2f} %, latency-budgeted "
                f"{statistics.fmean(r['acc_latency'] for r in rows) * 100:.2f} % (means over {len(rows)} seeds)")]
    out.append(f"- latency − MACs over the {s['n']} matched seeds: {s['mean']:+.2f} ± {s['se']:.2f} points (mean ± "
               f"standard error), paired t-test p = {s['p']:.3g}")
    out.append(f"- goal (≥ 3 matched seeds, difference ≥ −1 standard error): {'met' if s['met'] else 'MISSED'}")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", choices=sorted(SETTINGS), default="full",
                    help="training subset and epochs (bench/_paired.py's settings; default %(default)s)")
    ap.add_argument("--seeds", default="3-5", help="N (0..N-1), A-B or a comma list (default %(default)s)")
    ap.add_argument("--budget", type=float, default=0.25, help="MAC budget of the MAC-budgeted trial (default %(default)s)")
    ap.add_argument("--batch", type=int, default=32, help="images per forward when timing (default %(default)s)")
    ap.add_argument("--timing-threads", type=int, default=1, help="torch threads when timing (default %(default)s)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for training (default: every core)")
    ap.add_argument("--repeats", type=int, default=21, help="interleaved timing rounds (default %(default)s)")
    ap.add_argument("--tolerance", type=float, default=0.02, help="matched: |t_lat / t_macs - 1| <= this (default %(default)s)")
    ap.add_argument("--tries", type=int, default=4, help="latency-budgeted trials per seed at most (default %(default)s)")
    ap.add_argument("--cache", default=os.environ.get("KPID_BENCH_CACHE", DEFAULT_CACHE),
                    help="result and teacher cache, shared with bench/quality.py (default $KPID_BENCH_CACHE or %(default)s)")
    ap.add_argument("--md", default=None, help="also write the markdown report to this file")
    args = ap.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError:
        ap.error(f"--seeds {args.seeds!r}: expected N, A-B or a comma list of integers")
    if not seeds:
        ap.error(f"--seeds {args.seeds!r}: no seed (N means seeds 0..N-1; one seed is A-A)")
    for name in ("batch", "timing_threads", "repeats", "tries"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 0 < args.budget < 1 or not 0 < args.tolerance < 1:
        ap.error("--budget and --tolerance must be in (0, 1)")
    import torch

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    setting = SETTINGS[args.setting]
    rows = []
    for seed in seeds:
        job = Job(setting, (), seed, args.budget, (), (), args.cache, torch.get_num_threads())
        rows.append(run_seed(job, args.budget, batch=args.batch, timing_threads=args.timing_threads,
                             repeats=args.repeats, tolerance=args.tolerance, tries=args.tries,
                             log=lambda s: print(s, file=sys.stderr, flush=True)))
    s = summarise(rows)
    lines = header_lines(
        f"Latency- vs MAC-budgeted pruning at matched measured latency (Fashion-MNIST, {setting.name})",
        command_line("bench/latency_quality.py", argv),
        notes=[f"Setting `{setting.name}`: {setting.note}; the product's defaults otherwise; seeds {args.seeds}",
               (f"Latency: CPU, batch {args.batch}, {args.timing_threads} thread(s), median of {args.repeats} "
               f"interleaved rounds; matched = |t_latency / t_macs − 1| ≤ {args.tolerance:g}")])
    lines += _report(rows, s)
    print("\n".join(lines))
    if args.md:
        Path(args.md).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
