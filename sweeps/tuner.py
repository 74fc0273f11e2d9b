"""The Ray Tune ``Tuner`` of a sweep run: the trainable with its resources, the search space, the
searcher and scheduler, the run config with its callbacks — or the interrupted tuner restored.
:mod:`sweeps.run` resolves the run (:class:`~sweeps.run.RunDescription`) and drives it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # run imports this module to build its tuner
    from sweeps.run import RunDescription

__all__ = ["build_tuner", "callbacks", "progress_callback", "trial_dirname", "tune_config", "tune_storage"]


def trial_dirname(trial: Any) -> str:
    """Short trial folder names (Ray's default embeds every parameter and a timestamp)."""
    return f"trial_{trial.trial_id}"


def progress_callback(base: dict[str, Any], out=sys.stdout) -> Any:
    """A Tune callback printing one line per trial that ends, on ``out``."""
    from ray.tune import Callback

    from sweeps.results import trial_row

    class _Progress(Callback):
        """One line per trial that ends (finished / stopped early / error)."""

        def __init__(self, stream: Any) -> None:  # a parameter, not a closure: see __getstate__
            self.done = 0
            self.out = stream

        def __getstate__(self) -> dict[str, Any]:
            # Tune pickles its callbacks into tuner.pkl; a notebook's or pytest's stream cannot be pickled
            return {"done": self.done}

        def __setstate__(self, state: dict[str, Any]) -> None:
            self.done, self.out = state["done"], sys.stdout

        def _line(self, trial: Any, error: str | None = None) -> None:
            self.done += 1
            r = trial_row(trial.trial_id, trial.config, base, trial.last_result or {}, error)
            acc = r["accuracy"] if r["status"] == "finished" else r["val_accuracy"]
            macs = f"{int(r['macs']):,d}" if r["macs"] is not None else "-"
            extra = f"  {r['error'][:80]}" if r["error"] else ""
            print(f"[{self.done:>3}] {r['status']:<13} budget={r['budget']:.3f} metric={r['metric']:<10} "
                  f"acc={acc:.4f} MACs={macs}{extra}", file=self.out, flush=True)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._line(trial)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._line(trial, error="crashed (see the trial's error.txt)")

    return _Progress(out)


def callbacks(base: dict[str, Any], out: Any) -> list[Any]:
    """The progress lines on ``out`` and Tune's JSON/CSV result loggers."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    # explicit, so that result.json / progress.csv exist even when a user's environment sets
    # TUNE_DISABLE_AUTO_CALLBACK_LOGGERS
    return [progress_callback(base, out), JsonLoggerCallback(), CSVLoggerCallback()]


def build_tuner(run: RunDescription, res: Any, shared: Any, trial_fn: Any, out: Any) -> Any:
    """A new ``tune.Tuner`` for the run, or the interrupted one restored (``run.resume``)."""
    from ray import tune

    from sweeps.space import tune_param_space
    from sweeps.trainable import make_trainable

    spec = run.spec
    trainable = tune.with_resources(
        make_trainable(spec.base, shared, trial_fn=trial_fn, workers=res.workers,
                       cpus_per_worker=res.cpus_per_worker, gpus_per_worker=res.gpus_per_worker),
        res.tune_request(),
    )
    if run.resume and tune.Tuner.can_restore(run.exp_dir):
        tuner = tune.Tuner.restore(run.exp_dir, trainable, resume_unfinished=True, resume_errored=False,
                                   restart_errored=False)
        # Callbacks are not restored from tuner.pkl and the restore API takes none: Ray has no public
        # way to set them, so they go into the restored tuner's private run config.
        tuner._local_tuner._run_config.callbacks = callbacks(spec.base, out)  # type: ignore[union-attr]
        return tuner
    storage, name = tune_storage(run)
    return tune.Tuner(
        trainable,
        param_space=tune_param_space(spec),
        tune_config=tune_config(run, res),
        run_config=tune.RunConfig(
            name=name, storage_path=storage, verbose=1 if run.verbose else 0,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            callbacks=callbacks(spec.base, out),
        ),
    )


def tune_storage(run: RunDescription) -> tuple[str, str]:
    """Tune's ``(storage_path, name)``: the experiment directory's parent and last component."""
    storage, name = run.exp_dir.rstrip("/").rsplit("/", 1)
    return storage, name


def tune_config(run: RunDescription, res: Any) -> Any:
    """Tune's search (Optuna or grid), budget-aware early stopping and concurrency for the run."""
    from ray import tune

    from sweeps.search import BudgetASHA, make_searcher
    from sweeps.space import BUDGET_KEY

    spec = run.spec
    max_epochs = spec.space.get("train.epochs", [spec.base["train.epochs"]])
    max_t = int(max(max_epochs) if isinstance(max_epochs, list) else max_epochs["high"])
    scheduler = None
    if spec.early_stopping:
        scheduler = BudgetASHA(BUDGET_KEY, metric=spec.objectives[0][0], mode=spec.objectives[0][1],
                               max_t=max_t, **spec.early_stopping)
    searcher = None
    if spec.mode == "optuna":
        searcher = make_searcher(spec.objectives, str(Path(run.exp_dir) / "optuna.db"),
                                 f"kpid-{tune_storage(run)[1]}", spec.seed)
    max_conc = spec.max_concurrent or res.slots
    return tune.TuneConfig(
        search_alg=searcher, scheduler=scheduler, num_samples=spec.num_samples,
        max_concurrent_trials=min(max_conc, res.slots),
        trial_dirname_creator=trial_dirname,
        # A trial worker costs ~3 s to start (Python + torch import): reuse it across trials.
        # Data-parallel trials keep fresh actors (their Train workers are per trial anyway).
        reuse_actors=res.workers == 1,
        # metric/mode stay off TuneConfig: there they would make the study single-objective
    )
