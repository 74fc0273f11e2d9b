"""Run a KPID sweep with Ray Tune: ``python sweeps/run.py [--config sweep.yaml] [options]``.

The default sweeps the bundled digits demo on this machine's CPUs/GPUs, writes
``results/digits_demo/{trials.parquet,trials.csv,sweep.yaml,optuna.db,shared/,report/}`` and prints
the best trial per budget. A second run with the same name refuses (use ``--resume`` or ``--name``).
Errors a user can cause print one line ``error: ...`` and exit 2 without writing anything. The first
Ctrl-C (SIGINT) or SIGTERM stops the sweep in whatever phase it is, with one line saying how to
continue it (``--resume``), exit code 130.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

if __package__ in (None, ""):  # run as a script: make `sweeps` and `kpid_core` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# tuner.pkl files of earlier sweeps refer to this function as sweeps.run._trial_dirname: the name keeps
# them restorable with --resume.
from sweeps.tuner import trial_dirname as _trial_dirname  # noqa: F401

__all__ = ["EXIT_USAGE", "ResourceRequest", "RunDescription", "build_parser", "describe_run", "main", "run_sweep"]

EXIT_USAGE = 2
DEFAULT_NAME = "digits_demo"


def build_parser() -> argparse.ArgumentParser:
    from kpid_core.cli import ArgumentParser, DefaultsHelpFormatter

    p = ArgumentParser(
        prog="python sweeps/run.py",
        description="Sweep KPID pruning settings (budget, importance metric, distillation weights) with "
        "Ray Tune on every GPU/CPU of this machine or a Ray cluster.",
        formatter_class=DefaultsHelpFormatter,
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
    p.add_argument("--workers-per-trial", type=_at_least_1, default=None,
                   help="data-parallel workers per trial on CPU (gloo); default 1")
    p.add_argument("--cpus-per-trial", type=float, default=None, help="CPUs per trial (default 1)")
    p.add_argument("--num-samples", type=_at_least_1, default=None,
                   help="trials to sample (optuna) or repeats of the grid (default from the config)")
    p.add_argument("--address", default=None,
                   help="join an existing Ray cluster (host:port or 'auto'); default: start a local one "
                   "whose servers listen on 127.0.0.1 only, with Ray's token authentication on")
    p.add_argument("--storage", default=None,
                   help="absolute path for results (default ./results, made absolute); on a "
                   "multi-node cluster it must be shared storage that every node mounts at the same path")
    p.add_argument("--name", type=_exp_name, default=None, help=f"experiment name (default: config name or {DEFAULT_NAME})")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted sweep STORAGE/NAME (finished trials are kept)")
    p.add_argument("--max-concurrent", type=_at_least_1, default=None,
                   help="at most this many trials at once (default: as many as fit)")
    p.add_argument("--seed", type=_at_least_0, default=None, help="search seed (default from the config, else 0)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved search space and resources; start nothing, write nothing")
    p.add_argument("--dashboard", action="store_true",
                   help="start Ray's dashboard on 127.0.0.1 (local cluster; off by default)")
    p.add_argument("--start-timeout", type=_seconds, default=600.0, metavar="S",
                   help="the shared preparation and each baseline must start within S seconds of being "
                   "submitted (their resources may be held by other work), else the sweep stops with an error")
    p.add_argument("--stall-timeout", type=_seconds, default=600.0, metavar="S",
                   help="a running preparation or baseline whose process stops responding (no heartbeat) "
                   "for S seconds is cancelled and the sweep stops with an error")
    p.add_argument("-v", "--verbose", action="store_true", help="show Ray's own logs and tables")
    return p


def _at_least_1(text: str) -> int:
    from kpid_core.cli import whole_at_least

    return whole_at_least(text, 1)


def _at_least_0(text: str) -> int:
    from kpid_core.cli import whole_at_least

    return whole_at_least(text, 0)


def _exp_name(text: str) -> str:
    """An experiment name is one folder under --storage: no path separators, not '.'/'..'."""
    from sweeps.space import is_folder_name

    if not is_folder_name(text):
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a folder name (no '/', not '.' or '..')")
    return text


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected seconds > 0") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected seconds > 0")
    return v


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


class ResourceRequest(NamedTuple):
    """What the command line and the sweep file ask of the cluster, before it is checked against
    the cluster's totals (:func:`sweeps.cluster.plan_resources`). None: decide from the cluster."""

    num_gpus: float | None
    gpus_per_trial: float | None  # the command line's: it wins
    sweep_gpus_per_trial: float | None  # the sweep file's: used when GPUs are in use (default 1 then)
    cpus_per_trial: float
    workers_per_trial: int


class RunDescription(NamedTuple):
    """One sweep run, resolved once from the command line and the sweep file.

    ``spec`` is the sweep to run (for ``resume``, the one saved in ``exp_dir/sweep.yaml``) with the
    command line's ``--num-samples``/``--seed``/``--max-concurrent`` applied and ``name`` set;
    ``exp_dir`` is ``storage/name``.
    """

    spec: Any  # sweeps.space.SweepSpec
    storage: str
    name: str
    exp_dir: str
    resume: bool
    dry_run: bool
    request: ResourceRequest
    address: str | None
    dashboard: bool
    verbose: bool
    waits: Any = None  # sweeps.waits.TaskWaits


def _config_error(msg: str) -> Exception:
    from kpid_core.errors import ConfigError

    return ConfigError(msg)


def describe_run(args: argparse.Namespace) -> RunDescription:
    """Resolve the command line and the sweep file into one run description; nothing is started.

    Args:
        args: the parsed command line (:func:`build_parser`).

    Returns:
        The run. Raises ConfigError for a relative or URI ``--storage``, a ``--resume`` without a
        saved sweep or with a ``--config`` or option that would change it, an existing experiment
        without ``--resume`` (unless ``--dry-run``), or ``--num-samples`` < 1.
    """
    storage = _storage_root(args.storage)
    spec, name = _resumed_spec(args, storage) if args.resume else _new_spec(args, storage)
    spec.name = name
    res = spec.resources
    request = ResourceRequest(
        num_gpus=args.num_gpus,
        gpus_per_trial=args.gpus_per_trial,
        sweep_gpus_per_trial=float(res["gpus_per_trial"]) if "gpus_per_trial" in res else None,
        cpus_per_trial=args.cpus_per_trial if args.cpus_per_trial is not None else float(res.get("cpus_per_trial", 1.0)),
        workers_per_trial=args.workers_per_trial if args.workers_per_trial is not None else int(
            res.get("workers_per_trial", 1)),
    )
    from sweeps.waits import TaskWaits

    waits = TaskWaits(start_s=float(getattr(args, "start_timeout", 600.0)),
                      stall_s=float(getattr(args, "stall_timeout", 600.0)))
    return RunDescription(spec, storage, name, _exp_dir(storage, name), bool(args.resume), bool(args.dry_run),
                          request, args.address, bool(args.dashboard), bool(args.verbose), waits)


def _exp_dir(storage: str, name: str) -> str:
    return f"{storage.rstrip('/')}/{name}"


def _resumed_spec(args: argparse.Namespace, storage: str) -> tuple[Any, str]:
    from kpid_core.cli import YamlFileError, read_yaml
    from sweeps.space import load_sweep, parse_sweep

    given = load_sweep(args.config) if args.config else None
    name = args.name or (given.name if given else None) or DEFAULT_NAME
    saved = Path(_exp_dir(storage, name)) / "sweep.yaml"
    if not saved.exists():
        raise _config_error(f"--resume: no sweep to resume at {_exp_dir(storage, name)} (sweep.yaml missing); "
                            "check --storage and --name")
    try:
        raw = read_yaml(saved)
    except YamlFileError as why:
        raise _config_error(f"--resume: the sweep's saved {saved} {why}; it was written by the first run: "
                            "restore it, or start a new sweep under another --name") from None
    spec = parse_sweep(raw, where=str(saved))
    _check_unchanged(args, given, spec, saved)
    return spec, name


# What a resumed sweep cannot change: Tune restores the trials and the searcher of the first run.
_FIXED_ON_RESUME = ("base", "space", "mode", "early_stopping", "objectives", "baselines")


def _check_unchanged(args: argparse.Namespace, new: Any, saved_spec: Any, saved: Path) -> None:
    """``--resume`` runs the sweep saved by the first run: a ``--config`` (read as ``new``) or an
    option that would change it is refused (one line naming it) rather than silently ignored."""
    if new is not None:
        if new.gpu and saved_spec.base == {**new.base, **new.gpu}:  # the first run had GPUs (saved as run)
            new.use_gpu_settings()
        for key in _FIXED_ON_RESUME:
            if getattr(new, key) != getattr(saved_spec, key):
                raise _config_error(f"--config: {args.config} changes {key!r} of the sweep saved in {saved}; "
                                    "--resume continues that sweep as it was started (run the changed file "
                                    "under a new --name)")
    for flag, value, kept in (("--num-samples", args.num_samples, saved_spec.num_samples),
                              ("--seed", args.seed, saved_spec.seed),
                              ("--max-concurrent", args.max_concurrent, saved_spec.max_concurrent)):
        if value is not None and value != kept:
            raise _config_error(f"{flag}: {value} differs from the resumed sweep's {kept} (saved in {saved}); "
                                f"drop {flag} with --resume, or start a new sweep under another --name")


def _new_spec(args: argparse.Namespace, storage: str) -> tuple[Any, str]:
    from sweeps.space import load_sweep

    spec = load_sweep(args.config)
    name = args.name or spec.name or DEFAULT_NAME
    if args.num_samples is not None:
        spec.num_samples = args.num_samples
    if args.seed is not None:
        spec.seed = args.seed
    if args.max_concurrent is not None:
        spec.max_concurrent = args.max_concurrent
    if not args.dry_run and _exp_exists(_exp_dir(storage, name)):
        raise _config_error(f"--name: an experiment {name!r} already exists in {storage}; continue it "
                            f"with --resume, or start a new one with --name NEW_NAME")
    return spec, name


def _resources_from(request: ResourceRequest, totals: dict[str, float]) -> Any:
    from sweeps.cluster import plan_resources

    have_gpu = (request.num_gpus if request.num_gpus is not None else totals.get("GPU", 0.0)) > 0
    gpt = request.gpus_per_trial
    if gpt is None:
        sweep_gpt = request.sweep_gpus_per_trial
        gpt = (sweep_gpt if sweep_gpt is not None else 1.0) if have_gpu else 0.0
    return plan_resources(totals, num_gpus=request.num_gpus, gpus_per_trial=gpt,
                          cpus_per_trial=request.cpus_per_trial, workers_per_trial=request.workers_per_trial)


def _local_totals() -> dict[str, float]:
    from sweeps.cluster import TRIAL_SLOT, local_gpu_count

    return {"CPU": float(os.cpu_count() or 1), "GPU": float(local_gpu_count()), TRIAL_SLOT: 10_000.0}


def run_sweep(
    args: argparse.Namespace,
    *,
    trial_fn: Any = None,
    prepare_fn: Any = None,
    baseline_fn: Any = None,
    out=None,
) -> Path:
    """Validate, start/join Ray, prepare shared artifacts, run (or resume) the sweep, write results.

    Args:
        args: the parsed command line (:func:`build_parser`).
        trial_fn: replaces ``kpid_core.trial.run_trial`` (same signature, plain-dict config); tests use it.
        prepare_fn: replaces ``kpid_core.trial.prepare_shared`` likewise.
        baseline_fn: replaces ``kpid_core.baseline.run_baseline`` likewise.
        out: where progress lines go (default: ``sys.stdout`` at call time).

    Returns:
        The experiment directory ``STORAGE/NAME``. Raises :class:`sweeps.interrupt.SweepInterrupted`
        (its message says how to continue) when a SIGINT/SIGTERM stopped the sweep.
    """
    from sweeps.cluster import quiet_environment
    from sweeps.interrupt import StopGuard

    out = out if out is not None else sys.stdout  # looked up now: notebooks and tests redirect it
    quiet_environment(args.verbose)
    if not args.verbose:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    run = describe_run(args)
    with StopGuard() as guard:
        try:
            return _started_run(run, guard, out, trial_fn=trial_fn, prepare_fn=prepare_fn, baseline_fn=baseline_fn)
        except KeyboardInterrupt:
            raise _interrupted(run, guard) from None


def _started_run(run: RunDescription, guard: Any, out: Any, **fns: Any) -> Path:
    """Connect to Ray, size the trials and run (or dry-run) the sweep; shuts down what it started."""
    started, totals = _connect(run)
    guard.reinstall()
    try:
        res = _resources_from(run.request, totals)
        if res.gpus_per_trial > 0 and run.spec.gpu:
            applied = run.spec.use_gpu_settings()
            print("gpu: " + ", ".join(f"{k}={v}" for k, v in applied.items()), file=out)
        if run.dry_run:
            _print_dry_run(run, res, totals, out)
            return Path(run.exp_dir)
        from sweeps.waits import check_placeable

        # Tune would keep such a trial pending forever: every trial (or Train worker) must fit one node
        check_placeable("each trial" if res.workers == 1 else "each data-parallel worker",
                        {"CPU": res.cpus_per_worker, "GPU": res.gpus_per_worker})
        run.spec.resources = {"cpus_per_trial": res.cpus_per_trial, "gpus_per_trial": res.gpus_per_trial,
                              "workers_per_trial": res.workers}
        return _execute(run, res, guard, out=out, **fns)
    finally:
        if started:
            import ray

            ray.shutdown()


def _interrupted(run: RunDescription, guard: Any) -> Exception:
    """The one-line :class:`~sweeps.interrupt.SweepInterrupted` for a stop in ``guard.phase``."""
    import signal

    from sweeps.interrupt import SweepInterrupted

    sig = signal.Signals(guard.signum).name if guard.signum else "SIGINT"
    if not (Path(run.exp_dir) / "sweep.yaml").is_file():
        return SweepInterrupted(f"interrupted ({sig}) while {guard.phase}: nothing was written; run the same "
                                "command again")
    return SweepInterrupted(
        f"interrupted ({sig}) while {guard.phase}: finished trials are kept; continue with: python "
        f"sweeps/run.py --resume --storage {run.storage} --name {run.name}"
    )


def _connect(run: RunDescription) -> tuple[bool, dict[str, float]]:
    """Start or join Ray (a dry run without ``--address`` starts nothing); returns whether this
    call started it and the cluster's resource totals."""
    import ray

    from sweeps.cluster import cluster_totals, init_ray, local_gpu_count

    if run.dry_run and not run.address:
        return False, (cluster_totals() if ray.is_initialized() else _local_totals())
    num_gpus = run.request.num_gpus
    if not run.address and num_gpus is not None and num_gpus > local_gpu_count() and not ray.is_initialized():
        raise _config_error(f"--num-gpus: {num_gpus:g} requested but this machine has {local_gpu_count()} GPU(s)")
    started = init_ray(run.address, dashboard=run.dashboard, verbose=run.verbose, num_gpus=None)
    return started, cluster_totals()


def _print_dry_run(run: RunDescription, res: Any, totals: dict[str, float], out: Any) -> None:
    from sweeps.space import describe_space

    spec = run.spec
    print(f"experiment: {run.exp_dir}  (search: {spec.mode}, trials: {spec.num_trials()})", file=out)
    print("search space:", file=out)
    for line in describe_space(spec):
        print(line, file=out)
    print("resources: " + ", ".join(f"{k}={v:g}" for k, v in res.as_dict().items()), file=out)
    print(f"cluster: {', '.join(f'{k}={v:g}' for k, v in sorted(totals.items()) if '_' not in k)}", file=out)
    if not run.resume and _exp_exists(run.exp_dir):
        print(f"note: an experiment {run.name!r} already exists there: the real run needs --resume or "
              "a new --name", file=out)


def _execute(run: RunDescription, res: Any, guard: Any, *, trial_fn: Any, prepare_fn: Any, baseline_fn: Any,
             out: Any) -> Path:
    """The sweep proper: sweep file, shared artifacts, Tune, the trials table, baselines, report.
    ``guard`` (:class:`sweeps.interrupt.StopGuard`) learns the phase and watches the trials."""
    from kpid_core.files import atomic_write_text, output_dir
    from sweeps.tuner import build_tuner

    exp_path = output_dir(run.exp_dir, "--storage")  # a local (mounted) path: _storage_root refuses URIs
    if not run.resume:
        import yaml

        with _results_errors(run):
            atomic_write_text(exp_path / "sweep.yaml", yaml.safe_dump(run.spec.to_dict(), sort_keys=False))
    timings: dict[str, Any] = {}
    if run.resume:
        from sweeps.resume_checks import check_resumable

        check_resumable(exp_path)
    guard.phase = "preparing shared artifacts"
    with _timed(timings, "prepare_s"):
        shared = _prepare(run, res, prepare_fn, out)
    if run.resume:
        from sweeps.resume_checks import check_shared

        check_shared(shared)
    tuner = build_tuner(run, res, shared, trial_fn, out)
    print(f"running {run.spec.num_trials()} trial(s), up to {res.slots} at once -> {run.exp_dir}", file=out,
          flush=True)
    guard.phase = "running trials"
    with _timed(timings, "fit_s"):
        grid = guard.run_fit(tuner.fit)
    if guard.fit_was_interrupted(grid, run.spec.num_trials()):
        raise KeyboardInterrupt
    rows = _trial_rows(grid, run.spec)
    guard.phase = "training baselines"
    with _timed(timings, "baselines_s"), _results_errors(run):
        if run.spec.baselines:
            from sweeps.baselines import run_baselines

            rows += run_baselines(run.spec, exp_path, shared, num_cpus=res.cpus_per_worker,
                                  num_gpus=res.gpus_per_worker, out=out, baseline_fn=baseline_fn,
                                  waits=run.waits)
    guard.phase = "writing results and the report"
    print("writing results and the report ...", file=out, flush=True)
    with _results_errors(run):
        _write_results(rows, exp_path, {**timings, "resumed": run.resume}, out)
    return exp_path


@contextlib.contextmanager
def _results_errors(run: RunDescription) -> Iterator[None]:
    """A write into the experiment directory that fails (full disk, read-only, quota) ends the sweep
    with one line; what finished is on disk already, and ``--resume`` picks it up."""
    from kpid_core.errors import StorageError

    try:
        yield
    except OSError as exc:
        raise StorageError(
            f"--storage: cannot write {str(exc.filename or run.exp_dir)!r}: {exc.strerror or exc.__class__.__name__}; "
            f"finished trials are kept: make room, then continue with: python sweeps/run.py --resume --storage "
            f"{run.storage} --name {run.name}"
        ) from None


@contextlib.contextmanager
def _timed(into: dict[str, Any], key: str) -> Iterator[None]:
    """Store the block's wall time in ``into[key]`` (seconds, 3 decimals)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        into[key] = round(time.perf_counter() - t0, 3)


def _prepare(run: RunDescription, res: Any, prepare_fn: Any, out: Any) -> Any:
    from sweeps.prepare import prepare_shared_artifacts
    from sweeps.space import apply_params

    print(f"preparing shared artifacts (data, teacher, importance: {', '.join(run.spec.metrics)}) ...",
          file=out, flush=True)
    return prepare_shared_artifacts(
        apply_params(run.spec.base, {}), Path(run.exp_dir), run.spec.metrics, prepare_fn=prepare_fn,
        num_cpus=min(1.0, res.cpus_per_trial), num_gpus=1.0 if res.num_gpus >= 1 else 0.0, reuse=run.resume,
        waits=run.waits,
    )


def _trial_rows(grid: Any, spec: Any) -> list[dict[str, Any]]:
    """One trials-table row per result of Tune's ``ResultGrid``."""
    from sweeps.results import trial_row

    rows = []
    for r in grid:
        tid = r.path.rstrip("/").rsplit("/", 1)[-1] if r.path else ""
        trial_id = (r.metrics or {}).get("trial_id") or tid
        err = f"{r.error.__class__.__name__}: {r.error}"[:500] if r.error else None
        ckpt = r.checkpoint.path if r.checkpoint else None
        rows.append(trial_row(trial_id, r.config or {}, spec.base, r.metrics, err, ckpt))
    return rows


def _write_results(rows: list[dict[str, Any]], exp_path: Path, timings: dict[str, Any], out: Any) -> None:
    """``trials.parquet``/``.csv``, ``timings.json``, the summary on ``out`` and the report."""
    from analysis.report import make_report
    from kpid_core.errors import KPIDError
    from kpid_core.files import atomic_write_text
    from sweeps.results import summary_lines, trials_table, write_trials

    df = trials_table(rows)
    write_trials(df, exp_path)
    atomic_write_text(exp_path / "timings.json", json.dumps(timings))
    print("\n".join(summary_lines(df)), file=out)
    try:
        paths = make_report(exp_path)
    except KPIDError as exc:  # e.g. no finished trial: the table is still written
        print(f"report: skipped ({exc})", file=out)
    else:
        print(f"report: {paths.get('pareto.png', exp_path / 'report')}", file=out)


def main(argv: Sequence[str] | None = None, *, trial_fn: Any = None, prepare_fn: Any = None,
         baseline_fn: Any = None) -> int:
    """CLI entry point; returns the exit code (0 ok, 2 bad input, 130 interrupted).

    Args:
        argv: the command line (default ``sys.argv[1:]``).
        trial_fn: see :func:`run_sweep`.
        prepare_fn: see :func:`run_sweep`.
        baseline_fn: see :func:`run_sweep`.

    Returns:
        The exit code.
    """
    args = build_parser().parse_args(argv)
    from kpid_core.errors import KPIDError
    from sweeps.interrupt import SweepInterrupted

    try:
        run_sweep(args, trial_fn=trial_fn, prepare_fn=prepare_fn, baseline_fn=baseline_fn)
    except KPIDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SweepInterrupted as exc:
        print(str(exc), file=sys.stderr, flush=True)
        return 130
    except KeyboardInterrupt:  # a second signal while the first one's stop was under way
        print("interrupted: continue with --resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
