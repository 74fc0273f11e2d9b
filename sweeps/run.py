"""Run a KPID sweep with Ray Tune: ``python sweeps/run.py [--config sweep.yaml] [options]``.

The default sweeps the bundled digits demo on this machine's CPUs/GPUs, writes
``results/digits_demo/{trials.parquet,trials.csv,sweep.yaml,optuna.db,shared/,report/}`` and prints
the best trial per budget. A second run with the same name refuses (use ``--resume`` or ``--name``).
Errors a user can cause print one line ``error: ...`` and exit 2 without writing anything.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `sweeps` and `kpid_core` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

__all__ = ["EXIT_USAGE", "build_parser", "main", "run_sweep"]

EXIT_USAGE = 2
DEFAULT_NAME = "digits_demo"


def build_parser() -> argparse.ArgumentParser:
    from kpid_core.cli import ArgumentParser

    p = ArgumentParser(
        prog="python sweeps/run.py",
        description="Sweep KPID pruning settings (budget, importance metric, distillation weights) with "
        "Ray Tune on every GPU/CPU of this machine or a Ray cluster.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--config", default=None,
                   help="sweep YAML (base trial config + space + search); default: the bundled "
                   "sweeps/configs/digits_demo.yaml")
    p.add_argument("--num-gpus", type=float, default=None,
                   help="GPUs to use (default: all the machine/cluster has; 0 on CPU)")
    p.add_argument("--gpus-per-trial", type=float, default=None,
                   help="GPUs per trial: a fraction packs several trials per GPU; a whole number > 1 "
                   "trains each trial data-parallel over that many GPUs (Ray Train). Default 1 with "
                   "GPUs, 0 without")
    p.add_argument("--workers-per-trial", type=int, default=None,
                   help="data-parallel workers per trial on CPU (gloo); default 1")
    p.add_argument("--cpus-per-trial", type=float, default=None, help="CPUs per trial (default 1)")
    p.add_argument("--num-samples", type=int, default=None,
                   help="trials to sample (optuna) or repeats of the grid (default from the config)")
    p.add_argument("--address", default=None,
                   help="join an existing Ray cluster (host:port or 'auto'); default: start a local one "
                   "on 127.0.0.1")
    p.add_argument("--storage", default=None,
                   help="absolute path for results (default ./results, made absolute); on a "
                   "multi-node cluster it must be shared storage that every node mounts at the same path")
    p.add_argument("--name", default=None, help=f"experiment name (default: config name or {DEFAULT_NAME})")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted sweep STORAGE/NAME (finished trials are kept)")
    p.add_argument("--max-concurrent", type=int, default=None,
                   help="at most this many trials at once (default: as many as fit)")
    p.add_argument("--seed", type=int, default=None, help="search seed (default from the config, else 0)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved search space and resources; start nothing, write nothing")
    p.add_argument("--dashboard", action="store_true", help="start Ray's dashboard (off by default)")
    p.add_argument("-v", "--verbose", action="store_true", help="show Ray's own logs and tables")
    return p


def _storage_root(arg: str | None) -> str:
    if arg is None:
        return os.path.abspath("results")
    if "://" in arg:
        from kpid_core.errors import ConfigError

        # Trials read the shared artifacts (teacher, importance) as files: they need a filesystem
        # path that every node mounts, not an object store.
        raise ConfigError(
            f"--storage: {arg!r}: URIs are not supported yet; give an absolute path on storage that "
            "every node mounts at the same path (NFS, Lustre, a fuse-mounted bucket)"
        )
    if not os.path.isabs(arg):
        from kpid_core.errors import ConfigError

        raise ConfigError(
            f"--storage: {arg!r} is relative; give an absolute path (on a multi-node cluster it "
            "must be shared storage that every node mounts at the same path)"
        )
    return arg


def _exp_exists(exp_dir: str) -> bool:
    p = Path(exp_dir)
    return p.is_dir() and any(p.iterdir())


def _resources_from(args: argparse.Namespace, spec_res: dict[str, Any], totals: dict[str, float]) -> Any:
    from sweeps.cluster import plan_resources

    num_gpus = args.num_gpus
    have_gpu = (num_gpus if num_gpus is not None else totals.get("GPU", 0.0)) > 0
    gpt = args.gpus_per_trial
    if gpt is None:
        gpt = float(spec_res.get("gpus_per_trial", 1.0 if have_gpu else 0.0))
        if not have_gpu:
            gpt = 0.0
    cpt = args.cpus_per_trial if args.cpus_per_trial is not None else float(spec_res.get("cpus_per_trial", 1.0))
    wpt = args.workers_per_trial if args.workers_per_trial is not None else int(spec_res.get("workers_per_trial", 1))
    return plan_resources(totals, num_gpus=num_gpus, gpus_per_trial=gpt, cpus_per_trial=cpt,
                          workers_per_trial=wpt)


def _local_totals() -> dict[str, float]:
    from sweeps.cluster import TRIAL_SLOT, local_gpu_count

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(local_gpu_count()), TRIAL_SLOT: 10_000.0}


def _trial_dirname(trial: Any) -> str:
    """Short trial folder names (Ray's default embeds every parameter and a timestamp)."""
    return f"trial_{trial.trial_id}"


def _progress_callback(base: dict[str, Any], out=sys.stdout) -> Any:
    from ray.tune import Callback

    from sweeps.results import trial_row

    class _Progress(Callback):
        """One line per trial that ends (finished / stopped early / error)."""

        def __init__(self) -> None:
            self.done = 0

        def _line(self, trial: Any, error: str | None = None) -> None:
            self.done += 1
            r = trial_row(trial.trial_id, trial.config, base, trial.last_result or {}, error)
            acc = r["accuracy"] if r["status"] == "finished" else r["val_accuracy"]
            macs = f"{int(r['macs']):,d}" if r["macs"] is not None else "-"
            extra = f"  {r['error'][:80]}" if r["error"] else ""
            print(f"[{self.done:>3}] {r['status']:<13} budget={r['budget']:.3f} metric={r['metric']:<10} "
                  f"acc={acc:.4f} MACs={macs}{extra}", file=out, flush=True)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._line(trial)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._line(trial, error="crashed (see the trial's error.txt)")

    return _Progress()


def run_sweep(
    args: argparse.Namespace,
    *,
    trial_fn: Any = None,
    prepare_fn: Any = None,
    out=None,
) -> Path:
    """Validate, start/join Ray, prepare shared artifacts, run (or resume) the sweep, write results.

    ``trial_fn``/``prepare_fn`` replace ``kpid_core.trial.run_trial``/``prepare_shared`` (same
    signatures, plain-dict config); tests use them. Returns the experiment directory.
    """
    import yaml

    from sweeps.cluster import init_ray, quiet_environment

    out = out if out is not None else sys.stdout  # looked up now: notebooks and tests redirect it

    quiet_environment(args.verbose)
    if not args.verbose:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    from sweeps.space import describe_space, load_sweep, parse_sweep

    storage = _storage_root(args.storage)
    if args.resume:
        name = args.name or (load_sweep(args.config).name if args.config else None) or DEFAULT_NAME
        exp_dir = f"{storage.rstrip('/')}/{name}"
        saved = Path(exp_dir) / "sweep.yaml"
        if not saved.exists():
            from kpid_core.errors import ConfigError

            raise ConfigError(f"--resume: no sweep to resume at {exp_dir} (sweep.yaml missing); "
                              "check --storage and --name")
        spec = parse_sweep(yaml.safe_load(saved.read_text()), where=str(saved))
    else:
        spec = load_sweep(args.config)
        name = args.name or spec.name or DEFAULT_NAME
        exp_dir = f"{storage.rstrip('/')}/{name}"
        if args.num_samples is not None:
            if args.num_samples < 1:
                from kpid_core.errors import ConfigError

                raise ConfigError("--num-samples must be >= 1")
            spec.num_samples = args.num_samples
        if args.seed is not None:
            spec.seed = args.seed
        if args.max_concurrent is not None:
            spec.max_concurrent = args.max_concurrent
        if not args.dry_run and _exp_exists(exp_dir):
            from kpid_core.errors import ConfigError

            raise ConfigError(f"--name: an experiment {name!r} already exists in {storage}; continue it "
                              f"with --resume, or start a new one with --name NEW_NAME")
    spec.name = name

    if args.dry_run and not args.address:
        import ray

        totals = {k: float(v) for k, v in ray.cluster_resources().items()} if ray.is_initialized() \
            else _local_totals()
        started = False
    else:
        from sweeps.cluster import cluster_totals, local_gpu_count

        if not args.address and args.num_gpus is not None and args.num_gpus > local_gpu_count():
            import ray

            if not ray.is_initialized():
                from kpid_core.errors import ConfigError

                raise ConfigError(f"--num-gpus: {args.num_gpus:g} requested but this machine has "
                                  f"{local_gpu_count()} GPU(s)")
        started = init_ray(args.address, dashboard=args.dashboard, verbose=args.verbose,
                           num_gpus=None)
        totals = cluster_totals()
    try:
        res = _resources_from(args, spec.resources, totals)
        if args.dry_run:
            print(f"experiment: {exp_dir}  (search: {spec.mode}, trials: {spec.num_trials()})", file=out)
            print("search space:", file=out)
            for line in describe_space(spec):
                print(line, file=out)
            print("resources: " + ", ".join(f"{k}={v:g}" for k, v in res.as_dict().items()), file=out)
            print(f"cluster: {', '.join(f'{k}={v:g}' for k, v in sorted(totals.items()) if '_' not in k)}",
                  file=out)
            if not args.resume and _exp_exists(exp_dir):
                print(f"note: an experiment {name!r} already exists there: the real run needs --resume or "
                      "a new --name", file=out)
            return Path(exp_dir)
        spec.resources = {"cpus_per_trial": res.cpus_per_trial, "gpus_per_trial": res.gpus_per_trial,
                          "workers_per_trial": res.workers}
        return _execute(spec, exp_dir, res, resume=args.resume, trial_fn=trial_fn,
                        prepare_fn=prepare_fn, verbose=args.verbose, out=out)
    finally:
        if started:
            import ray

            ray.shutdown()


def _execute(spec: Any, exp_dir: str, res: Any, *, resume: bool, trial_fn: Any, prepare_fn: Any,
             verbose: bool, out: Any) -> Path:
    import yaml
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from sweeps.prepare import prepare_shared_artifacts
    from sweeps.results import summary_lines, trial_row, trials_table, write_trials
    from sweeps.search import BudgetASHA, make_searcher
    from sweeps.space import BUDGET_KEY, apply_params, tune_param_space
    from sweeps.trainable import make_trainable

    exp_path = Path(exp_dir)  # always a local (mounted) path: _storage_root refuses URIs
    exp_path.mkdir(parents=True, exist_ok=True)
    if not resume:
        (exp_path / "sweep.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    base_nested = apply_params(spec.base, {})
    print(f"preparing shared artifacts (data, teacher, importance: {', '.join(spec.metrics)}) ...",
          file=out, flush=True)
    t_prep = time.perf_counter()
    shared = prepare_shared_artifacts(
        base_nested, exp_path, spec.metrics, prepare_fn=prepare_fn,
        num_cpus=min(1.0, res.cpus_per_trial), num_gpus=1.0 if res.num_gpus >= 1 else 0.0, reuse=resume,
    )
    prepare_s = time.perf_counter() - t_prep
    trainable = tune.with_resources(
        make_trainable(spec.base, shared, trial_fn=trial_fn, workers=res.workers,
                       cpus_per_worker=res.cpus_per_worker, gpus_per_worker=res.gpus_per_worker),
        res.tune_request(),
    )
    storage, name = exp_dir.rstrip("/").rsplit("/", 1)
    if resume:
        tuner = tune.Tuner.restore(exp_dir, trainable, resume_unfinished=True, resume_errored=False,
                                   restart_errored=False)
    else:
        max_epochs = spec.space.get("train.epochs", [spec.base["train.epochs"]])
        max_t = int(max(max_epochs) if isinstance(max_epochs, list) else max_epochs["high"])
        scheduler = None
        if spec.early_stopping:
            scheduler = BudgetASHA(BUDGET_KEY, metric=spec.objectives[0][0], mode=spec.objectives[0][1],
                                   max_t=max_t, **spec.early_stopping)
        searcher = None
        if spec.mode == "optuna":
            searcher = make_searcher(spec.objectives, str(exp_path / "optuna.db"), f"kpid-{name}",
                                     spec.seed)
        max_conc = spec.max_concurrent or res.slots
        tuner = tune.Tuner(
            trainable,
            param_space=tune_param_space(spec),
            tune_config=tune.TuneConfig(
                search_alg=searcher, scheduler=scheduler, num_samples=spec.num_samples,
                max_concurrent_trials=min(max_conc, res.slots),
                trial_dirname_creator=_trial_dirname,
                # A trial worker costs ~3 s to start (Python + torch import): reuse it across trials.
                # Data-parallel trials keep fresh actors (their Train workers are per trial anyway).
                reuse_actors=res.workers == 1,
                # metric/mode stay off TuneConfig: there they would make the study single-objective
            ),
            run_config=tune.RunConfig(
                name=name, storage_path=storage, verbose=1 if verbose else 0,
                failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                # explicit, so that result.json / progress.csv exist even when a user's environment
                # sets TUNE_DISABLE_AUTO_CALLBACK_LOGGERS
                callbacks=[_progress_callback(spec.base, out), JsonLoggerCallback(), CSVLoggerCallback()],
            ),
        )
    if resume:
        # Callbacks are not restored from tuner.pkl; the restore API takes none, so set them here.
        run_config = tuner._local_tuner._run_config  # type: ignore[union-attr]
        run_config.callbacks = [_progress_callback(spec.base, out), JsonLoggerCallback(), CSVLoggerCallback()]
    print(f"running {spec.num_trials()} trial(s), up to {res.slots} at once -> {exp_dir}", file=out, flush=True)
    t_fit = time.perf_counter()
    grid = tuner.fit()
    fit_s = time.perf_counter() - t_fit

    rows = []
    for r in grid:
        tid = r.path.rstrip("/").rsplit("/", 1)[-1] if r.path else ""
        trial_id = (r.metrics or {}).get("trial_id") or tid
        err = f"{r.error.__class__.__name__}: {r.error}"[:500] if r.error else None
        ckpt = r.checkpoint.path if r.checkpoint else None
        rows.append(trial_row(trial_id, r.config or {}, spec.base, r.metrics, err, ckpt))
    baselines_s = 0.0
    if spec.baselines:
        from sweeps.baselines import run_baselines

        t_base = time.perf_counter()
        rows += run_baselines(spec, exp_path, shared, num_cpus=res.cpus_per_worker, num_gpus=res.gpus_per_worker,
                              out=out)
        baselines_s = time.perf_counter() - t_base
    df = trials_table(rows)
    write_trials(df, exp_path)
    (exp_path / "timings.json").write_text(json.dumps(
        {"prepare_s": round(prepare_s, 3), "fit_s": round(fit_s, 3), "baselines_s": round(baselines_s, 3),
         "resumed": resume}))
    print("\n".join(summary_lines(df)), file=out)
    from analysis.report import make_report
    from kpid_core.errors import KPIDError

    try:
        paths = make_report(exp_path)
    except KPIDError as exc:  # e.g. no finished trial: the table is still written
        print(f"report: skipped ({exc})", file=out)
    else:
        print(f"report: {paths.get('pareto.png', exp_path / 'report')}", file=out)
    return exp_path


def main(argv: Sequence[str] | None = None, *, trial_fn: Any = None, prepare_fn: Any = None) -> int:
    """CLI entry point; returns the exit code (0 ok, 2 bad input, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    from kpid_core.errors import KPIDError

    try:
        run_sweep(args, trial_fn=trial_fn, prepare_fn=prepare_fn)
    except KPIDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted: continue with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
