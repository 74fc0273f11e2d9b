"""Per-budget early stopping and the Optuna bookkeeping of unfinished trials (no cluster needed)."""

from __future__ import annotations

from types import SimpleNamespace

import optuna
from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from sweeps.search import BudgetASHA, KPIDOptunaSearch

STOP, CONT = TrialScheduler.STOP, TrialScheduler.CONTINUE


def _trial(tid: str, budget: float):
    return SimpleNamespace(trial_id=tid, config={"prune.budget": budget})


def _feed(sched, trials_accs):
    actions = []
    for t, acc in trials_accs:
        sched.on_trial_add(None, t)
        actions.append(sched.on_trial_result(None, t, {"epoch": 1, "val_accuracy": acc}))
    return actions


def test_trials_of_different_budgets_never_compete():
    big = [_trial("a1", 0.75), _trial("a2", 0.75), _trial("a3", 0.75)]
    small = [_trial("b1", 0.25), _trial("b2", 0.25), _trial("b3", 0.25)]
    seq = [(big[0], 0.90), (big[1], 0.95), (big[2], 0.93), (small[0], 0.50), (small[1], 0.40),
           (small[2], 0.60)]

    # one shared ASHA would stop the first small-budget trial for being worse than large-budget ones
    plain = AsyncHyperBandScheduler(time_attr="epoch", metric="val_accuracy", mode="max", max_t=4,
                                    grace_period=1, reduction_factor=2)
    assert _feed(plain, seq)[3] == STOP

    per_budget = BudgetASHA("prune.budget", metric="val_accuracy", mode="max", max_t=4, grace_period=1,
                            reduction_factor=2)
    actions = _feed(per_budget, seq)
    assert actions[3] == CONT  # b1 is only compared with its own budget
    assert actions[4] == STOP  # b2 is worse than b1 at the same budget: ASHA still works per budget
    assert per_budget.stopped == {t.trial_id for (t, _), a in zip(seq, actions) if a == STOP}
    assert per_budget.budgets == {0.75, 0.25}


def test_final_and_error_results_are_not_ranked():
    s = BudgetASHA("prune.budget", metric="val_accuracy", mode="max", max_t=2, grace_period=1)
    t = _trial("x", 0.5)
    assert s.on_trial_result(None, t, {"epoch": 2, "final": True, "val_accuracy": 0.1}) == CONT
    assert s.on_trial_result(None, t, {"epoch": 1, "trial_error": "nan", "final": True}) == CONT


def test_optuna_records_only_finished_trials_as_complete(tmp_path):
    search = KPIDOptunaSearch(metric=["val_accuracy", "macs"], mode=["max", "min"],
                              storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'o.db'}"),
                              study_name="s")
    search.set_search_properties(None, None, {"prune.budget": tune.choice([0.3, 0.6])})
    for i in range(4):
        search.suggest(f"t{i}")
    search.on_trial_complete("t0", {"val_accuracy": 0.9, "macs": 10, "final": True})
    search.on_trial_complete("t1", {"val_accuracy": 0.95, "macs": 5, "epoch": 1})  # stopped early
    search.on_trial_complete("t2", {"final": True, "trial_error": "NonFiniteLossError"})
    search.on_trial_complete("t3", None, error=True)
    search.on_trial_complete("t0", {"val_accuracy": 0.1, "macs": 1, "final": True})  # re-run after restore
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'o.db'}")
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "PRUNED", "FAIL", "FAIL"]
    assert study.trials[0].values == [0.9, 10.0]
    assert [t.number for t in study.best_trials] == [0]  # the partial (better-looking) trial is not on the front
