"""Does a neighbour's load move a pruned/dense latency ratio? (the reproducibility of a latency budget)

A latency budget is a ratio of two measured times (pruned ÷ dense, ``kpid_core.engine.timing``). On a
shared host the two models need not slow down alike when something else runs: a pruned network with
thin layers is more memory-bound than its parent, so another process's memory traffic can move the
ratio itself, not only the times. This bench times the same dense/pruned pairs (pruned to ``--budget``
of the MACs) with the timing thread on one CPU and, on another CPU, in turn:

- ``none``: nothing;
- ``membw``: a process copying a 64 MiB array in a loop (memory traffic, L3 and bandwidth);
- ``cpu``: a process spinning on integer arithmetic in its own core's cache.

``--cycles`` times the loads in turn (each cycle: every load, every model), so a drift of the host
hits all of them alike; the shift of a load is the paired difference against ``none`` in the same
cycle. Linux only (``os.sched_setaffinity``), with at least two CPUs this process may use.

Usage: ``python bench/latency_neighbour.py [--models ...] [--budget 0.3] [--cycles 3] [--repeats 15]
[--loads none,membw,cpu] [--batch 8] [--size 224] [--seed 0] [--md FILE]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench._header import command_line, emit, header_lines

__all__ = ["LOADS", "main", "measure", "summarise"]

#: the neighbour's program for each load (run as ``python -c``, pinned by the bench)
LOADS = {
    "none": None,
    "membw": "import numpy as np\na = np.ones(8 * 2**20)\nb = np.empty_like(a)\nwhile True:\n    np.copyto(b, a)",
    "cpu": "x = 0\nwhile True:\n    for i in range(10**6):\n        x += i * i",
}
MODELS = ["mobilenet_v3_large", "efficientnet_b0"]


def _start_load(name: str, cpu: int) -> subprocess.Popen | None:
    code = LOADS[name]
    if code is None:
        return None
    # pinned to ``cpu``, and killed by the kernel when the bench dies however it dies (PR_SET_PDEATHSIG)
    prelude = (f"import ctypes, os, signal\nctypes.CDLL(None).prctl(1, signal.SIGKILL)\n"
               f"if os.getppid() != {os.getpid()}:\n    os._exit(0)\nos.sched_setaffinity(0, {{{cpu}}})\n")
    p = subprocess.Popen([sys.executable, "-c", prelude + code])
    try:
        time.sleep(1.0)  # let it reach its loop
    except BaseException:  # Ctrl-C here must not leave the spinner running
        p.kill()
        p.wait(timeout=30)
        raise
    return p


def measure(pairs: dict, settings, loads: list[str], cycles: int, cpus: tuple[int, int], log=None) -> list[dict]:
    """Time every (dense, pruned) pair under every load, ``cycles`` times in turn.

    Args:
        pairs: ``{model name: (dense, pruned, one input's shape (C, H, W))}``.
        settings: :class:`~kpid_core.engine.timing.LatencySettings` (device cpu, batch, threads; ``repeats``
            interleaved rounds a measurement).
        loads: names from :data:`LOADS`.
        cycles: how many times the loads are taken in turn.
        cpus: ``(timing CPU, load CPU)``.
        log: progress callback.

    Returns:
        One row a measurement: ``model, load, cycle, ratio`` (median over rounds of pruned ÷ dense),
        ``dense_ms``, ``pruned_ms`` (medians).
    """
    from kpid_core.engine.timing import paired_latency

    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpus[0]})
    rows = []
    try:
        for c in range(cycles):
            for load in loads:
                proc = _start_load(load, cpus[1])
                try:
                    for name, (dense, pruned, shape) in pairs.items():
                        lat = paired_latency(dense, pruned, shape, settings)
                        rows.append({"model": name, "load": load, "cycle": c, "ratio": lat["latency_ratio"],
                                     "dense_ms": lat["latency_dense_ms"], "pruned_ms": lat["latency_ms"]})
                        if log:
                            r = rows[-1]
                            log(f"cycle {c} load {load}: {name} ratio {r['ratio']:.4f} (dense {r['dense_ms']:.1f} ms, "
                                f"pruned {r['pruned_ms']:.1f} ms)")
                finally:
                    if proc is not None:
                        proc.kill()
                        proc.wait(timeout=30)
    finally:
        os.sched_setaffinity(0, old)
    return rows


def summarise(rows: list[dict]) -> list[str]:
    """Markdown: per model and load, the ratio (mean and per cycle), the dense and pruned times, and the
    shift against ``none`` paired by cycle (mean ± std, relative).

    Args:
        rows: from :func:`measure`.

    Returns:
        Table lines.
    """
    out = ["| model | load | ratio, mean (per cycle) | shift vs none, paired | dense ms | pruned ms |",
           "|---|---|---|---|---|---|"]
    for model in dict.fromkeys(r["model"] for r in rows):
        base = {r["cycle"]: r["ratio"] for r in rows if r["model"] == model and r["load"] == "none"}
        for load in dict.fromkeys(r["load"] for r in rows):
            mine = [r for r in rows if r["model"] == model and r["load"] == load]
            ratios = [r["ratio"] for r in mine]
            shift = [r["ratio"] / base[r["cycle"]] - 1 for r in mine if r["cycle"] in base]
            if load == "none" or not shift:
                cell = "–"
            else:
                sd = f" ± {statistics.stdev(shift) * 100:.1f}" if len(shift) > 1 else ""
                cell = f"{statistics.fmean(shift) * 100:+.1f}{sd} %"
            out.append(f"| {model} | {load} | {statistics.fmean(ratios):.4f} ({' / '.join(f'{x:.4f}' for x in ratios)}) "
                       f"| {cell} | {statistics.median(r['dense_ms'] for r in mine):.1f} "
                       f"| {statistics.median(r['pruned_ms'] for r in mine):.1f} |")
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS), help=f"comma list of registry models (default {','.join(MODELS)})")
    ap.add_argument("--budget", type=float, default=0.3, help="MAC fraction the pruned model keeps (default 0.3)")
    ap.add_argument("--loads", default=",".join(LOADS), help="what runs on the other CPU, a comma list: none (nothing), membw (a process "
                         "copying a 64 MiB array in a loop), cpu (an arithmetic spinner); default all, and "
                         "'none' must be among them (the shift is against it)")
    ap.add_argument("--cycles", type=int, default=3, help="times every load is taken in turn (default 3)")
    ap.add_argument("--repeats", type=int, default=15, help="interleaved rounds a measurement (default 15)")
    ap.add_argument("--batch", type=int, default=8, help="images per forward (default 8)")
    ap.add_argument("--size", type=int, default=224, help="input side in pixels (default 224)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random initialisation, hence of the pruned "
                                                         "architectures (L1 scores; default 0)")
    ap.add_argument("--min-sample-s", type=float, default=None, help="shortest timed sample (default: the product's)")
    ap.add_argument("--md", default=None, help="also write the markdown to this file")
    args = ap.parse_args(argv)

    def fail(msg: str) -> int:
        print(f"error: {msg}", file=sys.stderr)
        return 2

    loads = [x for x in args.loads.split(",") if x]
    bad = [x for x in loads if x not in LOADS]
    if bad or "none" not in loads:
        return fail(f"--loads {args.loads!r}: allowed values: {', '.join(LOADS)}, and 'none' among them")
    if not 0 < args.budget < 1:
        return fail(f"--budget {args.budget}: must be in (0, 1)")
    for flag in ("cycles", "repeats", "batch", "size"):
        if getattr(args, flag) < 1:
            return fail(f"--{flag} must be >= 1")
    if args.min_sample_s is not None and not args.min_sample_s > 0:
        return fail(f"--min-sample-s {args.min_sample_s}: must be > 0")
    from kpid_core.models import MODEL_NAMES

    models = [m for m in args.models.split(",") if m]
    bad = [m for m in models if m not in MODEL_NAMES]
    if bad or not models:
        return fail(f"--models {args.models!r}: allowed values: registry models, e.g. {', '.join(MODELS)}")
    if not hasattr(os, "sched_setaffinity"):
        return fail("this bench pins processes to CPUs (os.sched_setaffinity): Linux only")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return fail(f"this bench needs two CPUs it may use; it has {len(cpus)}")

    from kpid_core.engine.timing import LatencySettings
    from kpid_core.models import build_model, model_in_channels
    from kpid_core.prune import prune_to_budget

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    import torch

    kw = {} if args.min_sample_s is None else {"min_sample_s": args.min_sample_s}
    settings = LatencySettings(device="cpu", batch=args.batch, threads=1, repeats=args.repeats, **kw)
    torch.manual_seed(args.seed)
    pairs = {}
    for name in models:
        dense = build_model(name).eval()
        shape = (model_in_channels(name) or 3, args.size, args.size)
        pairs[name] = (dense, prune_to_budget(dense, shape, args.budget).model.eval(), shape)
    t0 = time.perf_counter()
    rows = measure(pairs, settings, loads, args.cycles, (cpus[0], cpus[1]), log)
    lines = header_lines("Does a neighbour's load move the pruned/dense latency ratio?",
                         command_line("bench/latency_neighbour.py", argv),
                         notes=[(f"MAC budget {args.budget:g}, batch {args.batch}, {args.size} px, one torch thread "
                                f"pinned to CPU {cpus[0]}, the load pinned to CPU {cpus[1]}; {args.cycles} cycles of "
                                f"{args.repeats} interleaved rounds a measurement ({time.perf_counter() - t0:.0f} s)")])
    lines += summarise(rows)
    emit(lines, args.md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
