"""Pruning quality on Fashion-MNIST, paired by seed: test accuracy at MAC budgets 0.5 / 0.25 / 0.1.

Teacher: the CIFAR ResNet-20 with one input channel at 28 px, trained once per seed (cached). Every
method of a seed uses that teacher, the seed's split, the same epochs and augmentation; the methods
(``bench/_paired.METHODS``) are listed below with what each one does. Torch-Pruning (``tp_*``) is
bisected to the same MACs by our counter; the from-scratch architectures take the width whose MACs
match the budget and train for teacher + fine-tune epochs (omitted at a budget their width range
cannot reach).

Prints mean ± std test accuracy, the paired difference of ours against each method with a paired
t-test, and the issue's goals. Results are cached per (seed, budget, method) under --cache, so an
interrupted run continues where it stopped. Usage:
  python bench/quality.py [--quick] [--setting full|quick|gpu] [--seeds N] [--jobs N] [--threads N] [--device cuda]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench._header import emit
from bench._paired import METHODS, SETTINGS, cell_stats, load_results, paired, run_jobs

__all__ = ["PRUNING", "SCRATCH", "goals", "main", "parse_variants", "table", "teacher_label"]

PRUNING = ["ours", "no_kd", "uniform_kd", "tp_plain", "tp_kd"]
SCRATCH = ["effnet_b0", "mnv3_small", "mnv3_large"]
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "kpid", "bench")


def table(rows: list[dict], budgets: list[float], methods: list[str]) -> list[str]:
    """Markdown: mean ± std test accuracy (%) per method and budget, with the mean MAC ratio."""
    out = ["| method | " + " | ".join(f"budget {b:g}" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
    for m in methods:
        cells = []
        for b in budgets:
            mean, sd, n = cell_stats(rows, m, b)
            ratio, _, _ = cell_stats(rows, m, b, "macs_ratio")
            cells.append("–" if n == 0 else f"{mean * 100:.2f} ± {sd * 100:.2f} (MACs {ratio:.3f}, n={n})")
        out.append(f"| {m} | " + " | ".join(cells) + " |")
    t = sorted({(r["seed"], r["teacher"]) for r in rows})
    if t:
        tv = [a for _, a in t]
        out.append(f"| teacher (1.0) | {statistics.fmean(tv) * 100:.2f} ± "
                   f"{(statistics.stdev(tv) if len(tv) > 1 else 0) * 100:.2f} (n={len(tv)}) |" + " |" * (len(budgets) - 1))
    return out


def comparisons(rows: list[dict], budgets: list[float], methods: list[str]) -> list[str]:
    """Markdown: ours − method, paired over seeds (mean ± std in points, p of the paired t-test)."""
    out = ["| ours − method | " + " | ".join(f"budget {b:g}" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
    for m in methods:
        if m == "ours":
            continue
        cells = []
        for b in budgets:
            d = paired(rows, "ours", m, b)
            cells.append("–" if d["n"] == 0 else f"{d['mean'] * 100:+.2f} ± {d['std'] * 100:.2f} (p={d['p']:.3g}, n={d['n']})")
        out.append(f"| {m} | " + " | ".join(cells) + " |")
    return out


def _drop(rows: list[dict], m: str, b: float) -> tuple[float, dict]:
    teacher = {r["seed"]: r["teacher"] for r in rows}
    drops = {r["seed"]: teacher[r["seed"]] - r["accuracy"] for r in rows if r["method"] == m and r["budget"] == b}
    return (statistics.fmean(drops.values()) if drops else float("nan")), drops


def goals(rows: list[dict], budgets: list[float], bases: dict[str, str] | None = None) -> list[str]:
    """The issue's goals, each with its verdict (met / MISSED / not measured).

    Args:
        rows: the result rows (seed, budget, method, accuracy, teacher).
        budgets: the budgets of the run.
        bases: ``--variant`` name → the method it varies; a variant of a compared method (a from-scratch
            architecture with another recipe, say) gets that method's goal line under its own name.

    Returns:
        One line per goal that the rows can judge.
    """
    out = []
    kin = {m: [m, *(v for v, base in (bases or {}).items() if base == m)] for m in METHODS}

    def sig(d):
        return d["n"] > 1 and d["p"] < 0.05

    if 0.25 in budgets and paired(rows, "ours", "tp_plain", 0.25)["n"]:
        ours, _ = _drop(rows, "ours", 0.25)
        tp, _ = _drop(rows, "tp_plain", 0.25)
        d = paired(rows, "ours", "tp_plain", 0.25)
        ok = ours <= 0.5 * tp and d["mean"] > 0 and sig(d)
        out.append(f"budget 0.25: drop from teacher, ours {ours * 100:.2f} vs tp_plain {tp * 100:.2f} points "
                   f"(goal ours <= 0.5 x tp_plain, paired p={d['p']:.3g}): {'met' if ok else 'MISSED'}")
    if 0.25 in budgets and paired(rows, "ours", "tp_kd", 0.25)["n"]:
        d = paired(rows, "ours", "tp_kd", 0.25)
        out.append(f"budget 0.25: ours − tp_kd {d['mean'] * 100:+.2f} ± {d['std'] * 100:.2f} points (p={d['p']:.3g}; "
                   f"goal: not below): {'met' if d['mean'] >= 0 else 'MISSED'}")
    if 0.1 in budgets:
        for m in (v for base in ("uniform_kd", "tp_kd", "tp_plain", "no_kd") for v in kin[base]):
            d = paired(rows, "ours", m, 0.1)
            if d["n"]:
                ok = d["mean"] > 0 and sig(d)
                out.append(f"budget 0.1: ours − {m} {d['mean'] * 100:+.2f} ± {d['std'] * 100:.2f} points "
                           f"(p={d['p']:.3g}; goal > 0, p < 0.05): {'met' if ok else 'MISSED'}")
    for b in budgets:
        for m in (v for base in SCRATCH for v in kin[base]):
            d = paired(rows, "ours", m, b)
            if d["n"]:
                ok = d["mean"] >= 0.01 and sig(d)
                out.append(f"budget {b:g}: ours − {m} {d['mean'] * 100:+.2f} ± {d['std'] * 100:.2f} points "
                           f"(p={d['p']:.3g}; goal >= +1 point): {'met' if ok else 'MISSED'}")
    return out


def parse_seeds(text: str) -> list[int]:
    """``5`` = seeds 0..4; ``3-7`` = 3..7; ``0,2,4`` = those."""
    if "-" in text:
        a, b = text.split("-", 1)
        return list(range(int(a), int(b) + 1))
    if "," in text:
        return [int(s) for s in text.split(",")]
    return list(range(int(text)))


def build_parser(doc: str, default_methods: list[str]) -> argparse.ArgumentParser:
    methods = "\n".join(f"  {name:<14}{what}" for name, (_, what) in METHODS.items())
    ap = argparse.ArgumentParser(description=f"{doc}\nmethods:\n{methods}",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", choices=sorted(SETTINGS), default=None,
                    help="training subset and epochs: " + "; ".join(f"{k}: {v.note}" for k, v in SETTINGS.items())
                    + " (default full; --quick = quick)")
    ap.add_argument("--quick", action="store_true", help="the quick setting: one seed, budget 0.25, < 10 min on 2 cores")
    ap.add_argument("--seeds", default=None, help="N (seeds 0..N-1), A-B or a comma list (default 5; quick 1)")
    ap.add_argument("--budgets", default=None, help="comma list of MAC fractions (default: the setting's)")
    ap.add_argument("--methods", default=",".join(default_methods),
                    help=f"comma list from {', '.join(METHODS)} (default %(default)s)")
    ap.add_argument("--jobs", type=int, default=1, help="(seed, budget) jobs run at once (GPU: 8-16; 2 CPU cores: 1)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads per job (default: CPU cores // --jobs; 1 where other work shares the cores)")
    ap.add_argument("--device", default="auto", help="train.device for every method: auto, cpu, cuda, cuda:N")
    ap.add_argument("--cache", default=os.environ.get("KPID_BENCH_CACHE", DEFAULT_CACHE),
                    help="result and teacher cache (default $KPID_BENCH_CACHE or %(default)s)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="extra trial-config override for every method (changes the cache key)")
    ap.add_argument("--variant", dest="variants", action="append", default=[],
                    metavar="NAME[@METHOD]:KEY=VALUE[,KEY=VALUE]",
                    help="also run METHOD (default 'ours') with these trial-config overrides, under NAME (same cache "
                    "key; repeatable; the overrides take precedence over the method's own recipe), e.g. "
                    "prog2:prune.steps=2 or mnv3_wu@mnv3_large:train.warmup_epochs=2,lr=0.05; a list value stays whole: "
                    "taps9:distill.taps=[layer1.0,layer1.1]")
    ap.add_argument("--md", default=None, help="also write the markdown report to this file")
    ap.add_argument("--no-run", action="store_true", help="only summarise what the cache holds")
    ap.add_argument("--winner", default=None, metavar="JSON",
                    help="bench/allocation_search.py --json output: run ours / no_kd / logits_kd with the chosen "
                    "candidate's overrides instead of the product defaults (recorded in each result)")
    return ap


def winner_variants(path: str | None, methods: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Split ``methods`` into (plain methods, knapsack variants carrying the search winner's overrides)."""
    if not path:
        return methods, {}
    import json

    ov = list(json.loads(Path(path).read_text())["overrides"])
    kd = {"ours": [], "no_kd": ["distill.kd_weight=0", "distill.inner_weight=0"], "logits_kd": ["distill.inner_weight=0"]}
    return [m for m in methods if m not in kd], {m: ov + kd[m] for m in methods if m in kd}


def _split_outside_brackets(text: str) -> list[str]:
    """``text`` split at the commas that are not inside ``[...]`` or ``{...}``, so that a list value
    (``distill.taps=[layer1,layer2]``) stays one override."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch in "[{") - (ch in "]}")
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def parse_variants(specs: list[str], ap) -> tuple[dict[str, list[str]], dict[str, str]]:
    """``NAME[@METHOD]:KEY=VALUE,KEY=VALUE`` → ``({NAME: [KEY=VALUE, ...]}, {NAME: METHOD})`` (argparse
    error on a bad one; METHOD defaults to ``ours``)."""
    out, bases = {}, {}
    for spec in specs:
        head, _, ov = spec.partition(":")
        name, _, base = head.partition("@")
        pairs = [kv for kv in _split_outside_brackets(ov) if kv]
        if not name or name in METHODS or not pairs or not all("=" in kv for kv in pairs):
            ap.error(f"--variant {spec!r}: expected NAME[@METHOD]:KEY=VALUE[,KEY=VALUE] with a NAME that is not a "
                     "method")
        if base and base not in METHODS:
            ap.error(f"--variant {spec!r}: unknown method {base!r}; allowed: {', '.join(METHODS)}")
        out[name], bases[name] = pairs, base or "ours"
    return out, bases


def resolve(args, ap) -> tuple:
    setting = SETTINGS[args.setting or ("quick" if args.quick else "full")]
    try:
        seeds = parse_seeds(args.seeds) if args.seeds else list(range(1 if args.quick else 5))
        budgets = [float(b) for b in args.budgets.split(",")] if args.budgets else list(setting.budgets)
    except ValueError:
        ap.error(f"--seeds {args.seeds!r} / --budgets {args.budgets!r}: expected numbers")
    if not seeds:
        ap.error(f"--seeds {args.seeds!r}: no seed (N >= 1, A-B with A <= B, or a comma list)")
    if not budgets or not all(0 < b < 1 for b in budgets):
        ap.error(f"--budgets {args.budgets!r}: expected comma-separated numbers in (0, 1)")
    methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        ap.error(f"--methods: unknown {', '.join(bad)}; allowed: {', '.join(METHODS)}")
    if args.jobs < 1:
        ap.error("--jobs must be >= 1")
    if args.threads is not None and args.threads < 1:
        ap.error("--threads must be >= 1")
    args.variant_overrides, args.variant_bases = parse_variants(args.variants, ap)
    extra = list(args.overrides) + ([f"train.device={args.device}"] if args.device != "auto" else [])
    _check_overrides(setting, extra, args.variant_overrides, ap)
    return setting, seeds, budgets, methods, extra


def _check_overrides(setting, extra: list[str], variants: dict[str, list[str]], ap) -> None:
    """A bad ``--set`` or ``--variant`` value (a distill.taps entry naming no module of the model too)
    ends the run here, in one line naming the option and the config field, rather than as a traceback
    from a worker or a failed cell once the teachers are trained."""
    from kpid_core.config import load_config
    from kpid_core.errors import ConfigError
    from kpid_core.trial import check_taps

    base = [*setting.overrides, *extra]
    for where, ov in [("--set", []), *((f"--variant {name}", list(v)) for name, v in variants.items())]:
        try:
            check_taps(load_config(overrides=base + ov))  # the trial checks taps only after the bench's teacher
        except ConfigError as exc:
            ap.error(f"{where}: {exc}")


def run_and_load(args, setting, seeds, budgets, methods, extra) -> list[dict]:
    """Run what the cache lacks (unless ``--no-run``), then every cached row of these seeds and methods."""
    plain, variants = winner_variants(args.winner, methods)
    variants.update(args.variant_overrides)
    if not args.no_run:
        run_jobs(setting, seeds, budgets, plain, cache=args.cache, extra=extra, jobs=args.jobs, variants=variants,
                 bases=args.variant_bases,
                 threads=args.threads, log=lambda s: print(s, file=sys.stderr, flush=True))
    names = set(methods) | set(variants)
    return [r for r in load_results(setting, args.cache, extra) if r["seed"] in seeds and r["method"] in names]


def teacher_label(setting, extra) -> str:
    """The teacher architecture the setting and ``--set`` overrides train (the last ``model=`` wins).

    Args:
        setting: the benchmark setting (its ``overrides`` name the default teacher).
        extra: the ``--set`` overrides.

    Returns:
        A label for report titles, e.g. ``ResNet-20``; an unregistered name as given.
    """
    name = [kv.split("=", 1)[1] for kv in (*setting.overrides, *extra) if kv.startswith("model=")][-1]
    return {"resnet20": "ResNet-20", "resnet56": "ResNet-56", "resnet110": "ResNet-110"}.get(name, name)


def _as_run(setting, extra) -> str:
    """What ran where ``--set`` changed the setting's sizes (later overrides win): `` (as run: ...)``."""
    if not extra:
        return ""
    from kpid_core.config import load_config

    c = load_config(overrides=[*setting.overrides, *extra])
    return (f" (as run: {c.data.train_size} training images, teacher {c.teacher.epochs} epochs, fine-tune "
            f"{c.train.epochs} epochs, batch {c.data.batch_size})")


def header(title: str, setting, seeds, extra, argv) -> list[str]:
    import torch

    dev = "CUDA " + torch.cuda.get_device_name(0) if torch.cuda.is_available() and "cuda" in " ".join(extra) else \
        f"CPU, {os.cpu_count()} cores (shared with other jobs)"
    cmd = "python " + " ".join(argv)
    return [f"# {title}", "",
            f"- Date: {datetime.date.today()}; machine: {platform.machine()}, {dev}; torch {torch.__version__}",
            f"- Command: `{cmd}`",
            (f"- Setting `{setting.name}`: {setting.note}; seeds {seeds[0]}–{seeds[-1]} ({len(seeds)}); "
             f"overrides {' '.join(setting.overrides + tuple(extra))}" + _as_run(setting, extra)),
            ("- Cells: mean ± std over seeds of test top-1 on the fixed 10,000-image test set; comparisons are "
             "paired by seed (same teacher, split, epochs, augmentation), two-sided paired t-test."), ""]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = build_parser(__doc__, PRUNING + SCRATCH)
    args = ap.parse_args(argv)
    setting, seeds, budgets, methods, extra = resolve(args, ap)
    t0 = time.perf_counter()
    rows = run_and_load(args, setting, seeds, budgets, methods, extra)
    methods = methods + [v for v in args.variant_overrides if v not in methods]
    lines = header(f"Pruning quality on Fashion-MNIST ({teacher_label(setting, extra)} teacher, 1×28×28)", setting,
                   seeds, extra, ["bench/quality.py", *argv])
    lines += table(rows, budgets, methods) + [""] + comparisons(rows, budgets, methods) + [""]
    lines += [f"- {g}" for g in goals(rows, budgets, args.variant_bases)]
    lines.append(f"\n({time.perf_counter() - t0:.0f} s)")
    emit(lines, args.md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
