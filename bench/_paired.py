"""Paired-by-seed pruning benchmarks on Fashion-MNIST: settings, methods, a result cache, workers.

Every method of one seed starts from the same teacher (trained once per seed and cached), the same
data split, epochs and augmentation; methods differ only in how the student is obtained and
trained. A result is one JSON file per (setting, seed, budget, method) under the cache folder, so a
run can be stopped and continued, and ``bench/quality.py`` and ``bench/ablation.py`` share the
methods they have in common. Work is split into (seed, budget) jobs that ``--jobs N`` runs in N
processes (a GPU runs several small trainings at once; on 2 CPU cores use 1).

Statistics: mean ± sample std over seeds, and for a comparison the paired differences over the seeds
both methods finished, with a two-sided paired t-test (scipy).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

__all__ = ["METHODS", "SETTINGS", "Job", "Setting", "cell_stats", "load_results", "paired", "prepare_seed", "run_jobs",
           "run_pipelined", "seed_dir"]


@dataclass(frozen=True)
class Setting:
    """A benchmark setting: trial-config overrides shared by every method, and its budgets."""

    name: str
    overrides: tuple[str, ...]
    budgets: tuple[float, ...]
    note: str

    def key(self, extra: tuple[str, ...] = ()) -> str:
        """Cache folder name: the setting's name and a hash of every override and of the product's
        defaults (a changed default must not be answered from results of the old one)."""
        h = hashlib.sha1("\n".join(self.overrides + extra + (_defaults(),)).encode()).hexdigest()[:8]
        return f"{self.name}-{h}"


# Config fields added after results were cached, at the value that reproduces what ran before they
# existed: left out of the key while they hold it, so that adding an option does not orphan the cache.
_NEUTRAL = {"prune": {"candidates": 1, "candidate_batches": 8},
            # latency landing acts only with prune.cost=latency, which no cached result used
            "latency": {"land_rounds": 3, "land_tolerance": 0.02, "land_repeats": 9, "min_sample_s": 0.02},
            "train": {"warmup_epochs": 0.0}}


def _defaults() -> str:
    from dataclasses import asdict

    from kpid_core.config import TrialConfig

    d = asdict(TrialConfig())
    for section, fields in _NEUTRAL.items():
        for name, value in fields.items():
            if d[section].get(name) == value:
                del d[section][name]
    return json.dumps(d, sort_keys=True)


_COMMON = ("dataset=fashion_mnist", "model=resnet20", "data.batch_size=128")
SETTINGS = {
    # 2 CPU cores: about 13 core-minutes per seed for the pruning methods at budgets 0.25 and 0.1.
    "full": Setting("full", ("dataset=fashion_mnist", "model=resnet20", "data.batch_size=64", "data.val_fraction=0.05",
                             "data.train_size=6000", "teacher.epochs=10", "epochs=3"), (0.25, 0.1),
                    "6,000 training images (stratified), 3,000 validation, batch 64, teacher 10 epochs, "
                    "fine-tune 3 epochs"),
    # --quick: one seed in under 10 minutes on 2 CPU cores.
    "quick": Setting("quick", _COMMON + ("data.val_fraction=0.05", "data.train_size=3000", "teacher.epochs=8",
                                         "epochs=2"), (0.25,),
                     "3,000 training images (stratified), 3,000 validation, teacher 8 epochs, fine-tune 2 epochs"),
    # A GPU: the whole training split (51,000 images after the 9,000-image validation split).
    "gpu": Setting("gpu", _COMMON + ("data.val_fraction=0.05", "data.train_size=20000", "teacher.epochs=15",
                                     "epochs=3"), (0.5, 0.25, 0.1),
                   "20,000 training images (stratified), 3,000 validation, teacher 15 epochs, fine-tune 3 epochs"),
    # CI smoke test only.
    "smoke": Setting("smoke", _COMMON + ("data.val_fraction=0.2", "data.train_size=200", "teacher.epochs=1", "epochs=1",
                                         "prune.importance_batches=1"), (0.25,), "smoke"),
}


# ---- methods ------------------------------------------------------------------------------------
@dataclass
class Ctx:
    """What a method needs: the seed's config, shared artifacts, budget and extra overrides."""

    cfg: Any
    shared: Any
    budget: float
    extra: dict = field(default_factory=dict)


class _Chosen(logging.Handler):
    """Catches the trial's "chose candidate K: NAME" line (a knapsack with ``prune.candidates`` > 1)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.chosen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if msg.startswith("chose candidate "):
            self.chosen.append(msg.split(": ", 1)[1])


def _trial(overrides: dict) -> Callable[[Ctx], dict]:
    def run(ctx: Ctx) -> dict:
        from kpid_core.trial import run_trial

        logger, catch = logging.getLogger("kpid_core.trial"), _Chosen()
        level = logger.level
        logger.setLevel(logging.INFO)
        logger.addHandler(catch)
        try:
            m = run_trial(ctx.cfg.with_overrides({"budget": ctx.budget, **overrides, **ctx.extra}), shared=ctx.shared)
        finally:
            logger.removeHandler(catch)
            logger.setLevel(level)
        row = {k: m[k] for k in ("accuracy", "val_accuracy", "macs_ratio")}
        return {**row, "chosen": catch.chosen} if catch.chosen else row  # one per cut (progressive: several)
    return run


def _teacher_and_data(ctx: Ctx):
    """The seed's data and shared teacher (on the CPU, where torch-pruning traces it) and the device."""
    import torch

    from kpid_core.training.train import resolve_device
    from kpid_core.trial import load_teacher, trial_data

    data = trial_data(ctx.cfg, ctx.shared.split)
    teacher = load_teacher(ctx.cfg, data, ctx.shared, torch.device("cpu")).model
    return teacher, data, resolve_device(ctx.cfg.train.device)


def _tp(kd: bool) -> Callable[[Ctx], dict]:
    """Torch-Pruning global magnitude pruning, one shot, bisected to the budget's MACs; fine-tuned
    plainly (CE, its own recipe) or with our KD (CE + logits KD + inner KD through learned 1x1
    projections, since torch-pruning does not report which teacher channels a layer kept)."""

    def run(ctx: Ctx) -> dict:
        import torch

        from bench._anchors import tp_global_to_macs
        from kpid_core.errors import ConfigError
        from kpid_core.models import default_taps
        from kpid_core.training.distill import DistillLoss
        from kpid_core.training.train import evaluate, fit, seed_everything

        teacher, data, device = _teacher_and_data(ctx)
        cfg = ctx.cfg
        seed_everything(cfg.seed)
        student, ratio = tp_global_to_macs(teacher, torch.zeros(1, *data.input_shape), ctx.budget)
        if ratio > ctx.budget * 1.01:
            raise ConfigError(f"torch-pruning reaches {ratio:.4f} of the MACs at most, not {ctx.budget:g}")
        student, teacher = student.to(device), teacher.to(device)
        k = cfg.distill
        if kd:
            loss = DistillLoss(ce_weight=k.ce_weight, kd_weight=k.kd_weight, inner_weight=k.inner_weight,
                               temperature=k.temperature, kd_form=k.kd_form, match="projection")
            loss.attach(student, teacher, default_taps(cfg.model.name), {},
                        example_input=next(iter(data.val))[0][:2].to(device))
        else:
            loss = DistillLoss(ce_weight=1.0, kd_weight=0.0, inner_weight=0.0)
        fr = fit(student, teacher if kd else None, data, loss, cfg.train, seed=cfg.seed, desc="tp_global")
        loss.detach()
        student.eval()
        return {"accuracy": evaluate(student, data.test, device), "val_accuracy": fr.last["accuracy"],
                "macs_ratio": ratio}
    return run


def _scratch(arch: str) -> Callable[[Ctx], dict]:
    """``arch`` at the width matching the budget's MACs, trained from scratch with CE + logits KD
    for teacher + fine-tune epochs at the teacher's learning rate (a variant's overrides, e.g.
    ``lr`` or ``train.warmup_epochs``, take precedence over this recipe)."""

    def run(ctx: Ctx) -> dict:
        from kpid_core.baseline import run_baseline

        cfg = ctx.cfg.with_overrides({"budget": ctx.budget, "lr": ctx.cfg.teacher.lr, "distill.kd_weight": 1.0,
                                      **ctx.extra})
        m = run_baseline(cfg, arch, shared=ctx.shared, epochs=cfg.teacher.epochs + cfg.train.epochs)
        return {"accuracy": m["accuracy"], "val_accuracy": m["val_accuracy"], "macs_ratio": m["macs_ratio"],
                "width": m["width"], "lr": cfg.train.lr, "warmup_epochs": cfg.train.warmup_epochs}
    return run


_NO_KD = {"kd_weight": 0.0, "inner_weight": 0.0}
SCRATCH = ("effnet_b0", "mnv3_small", "mnv3_large")
METHODS: dict[str, tuple[Callable[[Ctx], dict], str]] = {
    "ours": (_trial({}), "knapsack allocation + CE + inner KD (the product's defaults)"),
    "ours_logits": (_trial({"kd_weight": 1.0}), "knapsack + CE + logits KD + inner KD (the defaults before 2026-11-30)"),
    "logits_kd": (_trial({"kd_weight": 1.0, "inner_weight": 0.0}), "knapsack + CE + logits KD (T=4)"),
    "no_kd": (_trial(_NO_KD), "knapsack + CE only"),
    "uniform_kd": (_trial({"allocation": "uniform", "metric": "l1"}),
                   "uniform per-group fraction (L1 ranking) + our KD (CE + inner KD)"),
    "uniform_no_kd": (_trial({"allocation": "uniform", "metric": "l1", **_NO_KD}), "uniform + CE only"),
    "tp_plain": (_tp(False), "Torch-Pruning global magnitude (one shot, same MACs) + CE fine-tune"),
    "tp_kd": (_tp(True), "Torch-Pruning global magnitude + our KD (CE + inner KD through projections)"),
    "effnet_b0": (_scratch("efficientnet_b0"), "EfficientNet-B0 at matched MACs from scratch + logits KD"),
    "mnv3_small": (_scratch("mobilenet_v3_small"), "MobileNetV3-Small at matched MACs from scratch + logits KD"),
    "mnv3_large": (_scratch("mobilenet_v3_large"), "MobileNetV3-Large at matched MACs from scratch + logits KD"),
}


# ---- jobs -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    setting: Setting
    extra: tuple[str, ...]  # overrides for every method (e.g. --set, --device)
    seed: int
    budget: float | None  # None = prepare the seed's teacher and importance only
    methods: tuple[str, ...]
    variants: tuple[tuple[str, tuple[str, ...], str], ...]  # (name, overrides, method it runs like)
    cache: str
    threads: int


def seed_dir(job: Job) -> Path:
    """The cache folder of ``job``'s seed under its setting (teacher artifacts, results by budget).

    Args:
        job: the job (its setting, extra overrides, seed and cache root are used).

    Returns:
        ``CACHE/SETTING-HASH/seedN``.
    """
    return Path(job.cache) / job.setting.key(job.extra) / f"seed{job.seed}"


def _seed_config(job: Job):
    from kpid_core.config import load_config

    return load_config(overrides=[*job.setting.overrides, *job.extra, f"seed={job.seed}",
                                  f"teacher.cache_dir={Path(job.cache) / 'teachers'}"])


def prepare_seed(job: Job):
    """The seed's config and shared artifacts: prepared by the seed's own job, read by the others.

    Args:
        job: the job; with ``budget`` None the teacher and importance are computed (and cached),
            otherwise the cached ones are read when present.

    Returns:
        ``(TrialConfig, SharedArtifacts)`` of the seed.
    """
    from kpid_core.trial import SharedArtifacts, prepare_shared

    cfg = _seed_config(job)
    root = seed_dir(job) / "shared"
    if job.budget is not None and (root / "shared.json").is_file():
        return cfg, SharedArtifacts.load(root)
    metrics = {cfg.prune.metric, "l1", "taylor_abs"}
    metrics |= {kv.split("=", 1)[1] for _, ov, _ in job.variants for kv in ov if kv.startswith("prune.metric=")}
    return cfg, prepare_shared(cfg, root, sorted(metrics))


def result_path(job: Job, method: str) -> Path:
    return seed_dir(job) / f"b{job.budget:g}" / f"{method}.json"


def _run_job(job: Job) -> list[str]:
    """One job's methods at ``job.threads`` torch threads; the caller's thread count is restored
    (with ``--jobs 1`` jobs run in the caller's process, e.g. a test's)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(job.threads)
    try:
        return _run_methods(job)
    finally:
        torch.set_num_threads(before)


def _run_methods(job: Job) -> list[str]:
    from kpid_core.config import parse_overrides
    from kpid_core.errors import KPIDError
    from kpid_core.files import atomic_write_text

    cfg, shared = prepare_seed(job)
    lines = []
    if job.budget is None:
        return [f"seed {job.seed}: teacher {shared.teacher_accuracy:.4f}"]
    todo = [(m, METHODS[m][0], (), {}) for m in job.methods]
    for name, ov, base in job.variants:  # values read as --set reads them (YAML scalars and lists)
        todo.append((name, METHODS[base][0], ov, dict(parse_overrides(ov))))
    for name, fn, ov, extra in todo:
        path = result_path(job, name)
        if path.is_file():
            continue
        t0 = time.perf_counter()
        cfg_v = cfg.with_overrides(extra) if extra else cfg
        try:
            row = fn(Ctx(cfg_v, shared, job.budget, extra))  # the method re-applies them over its own recipe
        except KPIDError as exc:  # e.g. a width range that cannot reach the budget: recorded, not retried
            row = {"error": str(exc)}
        except Exception as exc:  # noqa: BLE001 - one failed training must not end the other jobs
            lines.append(f"seed {job.seed} budget {job.budget:g} {name}: FAILED {type(exc).__name__}: {exc}")
            continue
        row.update(seed=job.seed, budget=job.budget, method=name, teacher=shared.teacher_accuracy,
                   seconds=round(time.perf_counter() - t0, 1), overrides=list(job.setting.overrides + job.extra)
                   + list(ov))
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(row, indent=1))
        lines.append(f"seed {job.seed} budget {job.budget:g} {name:<14} " + (
            f"not run: {row['error']}" if "error" in row else
            f"test {row['accuracy']:.4f} val {row['val_accuracy']:.4f} MACs {row['macs_ratio']:.4f} ({row['seconds']:.0f} s)"
            + (f"; chose {', '.join(row['chosen'])}" if row.get("chosen") else "")))
    return lines


def run_jobs(setting: Setting, seeds: list[int], budgets: list[float], methods: list[str], *, cache: str,
             extra: list[str] = (), variants: dict[str, list[str]] | None = None, jobs: int = 1,
             threads: int | None = None, log: Callable[[str], None] = print,
             bases: dict[str, str] | None = None) -> None:
    """Run every method (and variant) at every (seed, budget) not yet in the cache. A variant runs
    the method ``bases[name]`` (default ``ours``) with its overrides taking precedence.
    Teachers first (one job per seed); then with ``jobs`` = 1 one job per (seed, budget), else one
    per (seed, budget, method), the long from-scratch trainings first, ``jobs`` at a time, each at
    ``threads`` torch threads (default: the CPU cores shared out among the jobs)."""
    threads = threads or max(1, (os.cpu_count() or 1) // max(jobs, 1))
    var = tuple((k, tuple(v), (bases or {}).get(k, "ours")) for k, v in (variants or {}).items())
    mk = [Job(setting, tuple(extra), s, None, (), var, cache, threads) for s in seeds]
    if jobs <= 1:
        work = [Job(setting, tuple(extra), s, b, tuple(methods), var, cache, threads) for s in seeds for b in budgets]
    else:
        work = [Job(setting, tuple(extra), s, b, (m,), (), cache, threads) for m in methods for s in seeds for b in budgets]
        work += [Job(setting, tuple(extra), s, b, (), (v,), cache, threads) for v in var for s in seeds for b in budgets]
        work.sort(key=lambda j: (j.methods or (j.variants[0][2],))[0] not in SCRATCH)  # long trainings first
        work = [j for j in work if not all(result_path(j, n).is_file() for n in (*j.methods, *(v[0] for v in j.variants)))]
    if jobs <= 1:
        for j in (*mk, *work):
            for line in _run_job(j):
                log(line)
        return
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as ex:
        run_pipelined(ex, _run_job, mk, work, log)


def run_pipelined(ex: Executor, fn: Callable[[Job], list[str]], teachers: list[Job], cells: list[Job],
                  log: Callable[[str], None]) -> None:
    """Run every teacher job on ``ex``, and a seed's cells as soon as its teacher is ready. (The cells
    used to wait for every teacher: with three seeds on two workers one core idled through the third
    teacher, 17 minutes of a converged-teacher run.)

    Args:
        ex: the executor.
        fn: runs one job, returning its log lines.
        teachers: one job per seed (``budget`` None).
        cells: the (seed, budget) jobs, in the order they should start.
        log: receives each job's lines when it ends.
    """
    later: dict[int, list[Job]] = {}
    for c in cells:
        later.setdefault(c.seed, []).append(c)
    pending = {ex.submit(fn, j): j for j in teachers}
    while pending:
        done, _ = wait(pending, return_when=FIRST_COMPLETED)
        for fut in done:
            j = pending.pop(fut)
            for line in fut.result():
                log(line)
            for c in later.pop(j.seed, []) if j.budget is None else []:
                pending[ex.submit(fn, c)] = c


def load_results(setting: Setting, cache: str, extra: list[str] = ()) -> list[dict]:
    """Every cached result row of ``setting`` (with these extra overrides)."""
    root = Path(cache) / setting.key(tuple(extra))
    rows = [json.loads(p.read_text()) for p in sorted(root.glob("seed*/b*/*.json"))]
    return [r for r in rows if "error" not in r]


# ---- statistics -----------------------------------------------------------------------------------
def _by(rows: list[dict], method: str, budget: float, field_: str = "accuracy") -> dict[int, float]:
    return {r["seed"]: r[field_] for r in rows if r["method"] == method and r["budget"] == budget}


def cell_stats(rows: list[dict], method: str, budget: float, field_: str = "accuracy") -> tuple[float, float, int]:
    """(mean, sample std, n) of ``field_`` over seeds."""
    v = list(_by(rows, method, budget, field_).values())
    if not v:
        return math.nan, math.nan, 0
    return statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v)


def paired(rows: list[dict], a: str, b: str, budget: float, field_: str = "accuracy") -> dict[str, float]:
    """Paired difference a − b over the seeds both have: mean, std, n and the two-sided p-value."""
    x, y = _by(rows, a, budget, field_), _by(rows, b, budget, field_)
    seeds = sorted(set(x) & set(y))
    d = [x[s] - y[s] for s in seeds]
    out = {"n": len(d), "mean": statistics.fmean(d) if d else math.nan,
           "std": statistics.stdev(d) if len(d) > 1 else math.nan, "p": math.nan}
    if len(d) > 1:
        from scipy import stats

        out["p"] = 1.0 if out["std"] == 0 and out["mean"] == 0 else float(stats.ttest_rel([x[s] for s in seeds],
                                                                                           [y[s] for s in seeds]).pvalue)
    return out
