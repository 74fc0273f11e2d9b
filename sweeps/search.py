"""Search algorithm and early stopping that respect budgets and partial results.

- :class:`BudgetASHA`: one ``AsyncHyperBandScheduler`` per budget value, so a trial at budget 0.3 is
  never stopped for being worse than trials at budget 0.7 (they cannot be compared).
- :class:`KPIDOptunaSearch`: multi-objective ``OptunaSearch`` that records trials that did not finish
  (stopped early or NaN) as PRUNED / FAIL instead of COMPLETE with partial values, and tolerates a
  trial that Optuna already closed before a driver crash (``UpdateFinishedTrialError`` on restore).
"""

from __future__ import annotations

import logging
import pickle
from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from kpid_core.results_schema import FINAL_KEY, FINISHED, trial_status

__all__ = ["FINAL_KEY", "BudgetASHA", "KPIDOptunaSearch", "is_final", "make_searcher"]

log = logging.getLogger(__name__)

def is_final(result: dict[str, Any] | None) -> bool:
    """True for the last result of a trial that ran to completion (status ``finished``).

    ``FINAL_KEY`` (re-exported from :mod:`kpid_core.results_schema`) marks that result."""
    return trial_status(result) == FINISHED


class BudgetASHA(FIFOScheduler):
    """ASHA with one independent rung state per value of ``budget_key``.

    ``time_attr`` is the epoch counter the trials report; ``max_t`` the most epochs any trial runs.
    Results flagged as errors are not ranked. The trial ids it stopped are kept in ``.stopped``.
    """

    def __init__(
        self,
        budget_key: str,
        *,
        metric: str,
        mode: str,
        max_t: int,
        time_attr: str = "epoch",
        grace_period: int = 1,
        reduction_factor: float = 2,
    ):
        super().__init__()
        self._budget_key = budget_key
        self._metric = metric
        self._mode = mode
        self._kw = {
            "time_attr": time_attr, "metric": metric, "mode": mode, "max_t": max(max_t, grace_period),
            "grace_period": grace_period, "reduction_factor": reduction_factor,
            # At max_t the trial still has to report its final (test) metrics: never stop it there.
            "stop_last_trials": False,
        }
        self._children: dict[Any, AsyncHyperBandScheduler] = {}
        self._child_of: dict[str, Any] = {}
        self.stopped: set[str] = set()

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # metric/mode are our own (ASHA ranks one metric; the searcher has two)

    def _child(self, trial: Any) -> AsyncHyperBandScheduler:
        key = self._child_of.get(trial.trial_id)
        if key is None:
            key = trial.config.get(self._budget_key)
            self._child_of[trial.trial_id] = key
        if key not in self._children:
            self._children[key] = AsyncHyperBandScheduler(**self._kw)
        child = self._children[key]
        if trial.trial_id not in child._trial_info:
            child.on_trial_add(None, trial)
        return child

    def budget_of(self, trial_id: str) -> Any:
        """The budget whose bracket ranks ``trial_id`` (None before the trial was added)."""
        return self._child_of.get(trial_id)

    @property
    def budgets(self) -> set[Any]:
        """The budgets that have a bracket of their own so far."""
        return set(self._children)

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._child(trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if trial_status(result) in (FINISHED, "error"):
            return TrialScheduler.CONTINUE
        action = self._child(trial).on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP:
            self.stopped.add(trial.trial_id)
        return action

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        child = self._child(trial)
        if trial_status(result) == "early_stopped":
            child.on_trial_complete(tune_controller, trial, result)
        else:
            child._trial_info.pop(trial.trial_id, None)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._child(trial)._trial_info.pop(trial.trial_id, None)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._child(trial)._trial_info.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        return f"BudgetASHA: {len(self._children)} budget(s), {len(self.stopped)} trial(s) stopped early"

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


class KPIDOptunaSearch(OptunaSearch):
    """OptunaSearch whose study holds only finished trials as COMPLETE."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        import optuna

        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        ot_trial = self._ot_trials[trial_id]
        try:
            status = trial_status(result, error="error" if error else None)
            if status == FINISHED:
                values = [result.get(m) for m in self._metric]  # type: ignore[union-attr]
                self._ot_study.tell(ot_trial, values, state=optuna.trial.TrialState.COMPLETE)
            elif status == "error":
                self._ot_study.tell(ot_trial, None, state=optuna.trial.TrialState.FAIL)
            else:  # stopped early by ASHA: partial values must not look like a finished trial
                self._ot_study.tell(ot_trial, None, state=optuna.trial.TrialState.PRUNED)
        except optuna.exceptions.UpdateFinishedTrialError:
            # Told before a driver crash, then re-run after restore: the first record stands.
            log.info("optuna trial for %s already finished; keeping the first record", trial_id)
        except Exception as exc:  # noqa: BLE001 - NaN objective etc.: keep the sweep going
            log.warning("optuna could not record trial %s: %s", trial_id, exc)
        self._completed_trials.add(trial_id)


def make_searcher(
    objectives: tuple[tuple[str, str], ...], storage_db: str, study_name: str, seed: int
) -> KPIDOptunaSearch:
    """Multi-objective Optuna search persisted in sqlite ``storage_db`` (absolute path)."""
    import optuna

    storage = optuna.storages.RDBStorage(f"sqlite:///{storage_db}")
    return KPIDOptunaSearch(
        metric=[m for m, _ in objectives],
        mode=[d for _, d in objectives],
        storage=storage,
        study_name=study_name,
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=4),
    )
