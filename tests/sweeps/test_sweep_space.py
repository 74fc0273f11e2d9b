"""Sweep YAML parsing and the search space (no Ray cluster needed)."""

from __future__ import annotations

import pytest
from ray import tune

from kpid_core.errors import ConfigError
from sweeps.space import BUDGET_KEY, apply_params, describe_space, load_sweep, parse_sweep, tune_param_space


def _sweep(**over):
    raw = {"base": {"epochs": 2}, "space": {"budget": [0.3, 0.6], "metric": ["taylor", "l1"],
                                            "gamma": {"low": 0.0, "high": 2.0}}}
    raw.update(over)
    return raw


def test_aliases_become_dotted_keys_and_budget_is_categorical():
    spec = parse_sweep(_sweep())
    assert set(spec.space) == {"prune.budget", "prune.metric", "distill.inner_weight"}
    assert spec.base["train.epochs"] == 2
    space = tune_param_space(spec)
    assert isinstance(space[BUDGET_KEY], tune.search.sample.Categorical)
    assert space[BUDGET_KEY].categories == [0.3, 0.6]
    assert isinstance(space["distill.inner_weight"], tune.search.sample.Float)
    assert spec.metrics == ["taylor", "l1"] and spec.budgets == [0.3, 0.6]


def test_budget_range_with_step_expands_to_a_list():
    spec = parse_sweep(_sweep(space={"budget": {"low": 0.2, "high": 0.6, "step": 0.2}, "lr": [0.01, 0.1]}))
    assert spec.space[BUDGET_KEY] == [0.2, 0.4, 0.6]


def test_grid_mode_is_exhaustive():
    spec = parse_sweep(_sweep(space={"budget": [0.3, 0.6], "kd_weight": [0.0, 1.0, 2.0]},
                              search={"mode": "grid"}))
    assert spec.num_trials() == 6
    space = tune_param_space(spec)
    assert space["distill.kd_weight"] == {"grid_search": [0.0, 1.0, 2.0]}


def test_apply_params_builds_a_nested_trial_config():
    spec = parse_sweep(_sweep())
    cfg = apply_params(spec.base, {"prune.budget": 0.3, "distill.inner_weight": 0.5})
    assert cfg["prune"]["budget"] == 0.3 and cfg["distill"]["inner_weight"] == 0.5
    assert cfg["train"]["epochs"] == 2 and cfg["data"]["name"] == "digits"


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (_sweep(base={"epoch": 3}), "unknown config key 'epoch'"),
        (_sweep(space={"budgt": [0.1, 0.2]}), "unknown config key 'budgt'"),
        (_sweep(space={}), "empty search space"),
        (_sweep(space={"budget": [0.5]}), "empty search space"),
        (_sweep(space={"budget": [0.0, 0.5]}), "outside (0, 1]"),
        (_sweep(space={"budget": [0.5, 1.5]}), "outside (0, 1]"),
        (_sweep(space={"metric": ["taylor", "magic"]}), "prune.metric"),
        (_sweep(search={"mode": "random"}), "search.mode"),
        (_sweep(search={"samples": 3}), "search: unknown key"),
        (_sweep(space={"kd_weight": {"low": 2.0, "high": 1.0}}), "low <= high"),
        (_sweep(search={"early_stopping": {"grace_period": 0}}), "grace_period must be an integer >= 1"),
        (_sweep(search={"early_stopping": {"reduction_factor": 1}}), "reduction_factor a number > 1"),
        (_sweep(search={"early_stopping": {"grace": 2}}), "search.early_stopping: expected"),
        (_sweep(search={"early_stopping": "asha"}), "search.early_stopping: expected"),
        (_sweep(search={"num_samples": "many"}), "search.num_samples must be a whole number >= 1, got 'many'"),
        (_sweep(search={"num_samples": 0}), "search.num_samples must be a whole number >= 1"),
        (_sweep(search={"seed": -1}), "search.seed must be a whole number >= 0"),
        (_sweep(search={"max_failures": 1.5}), "search.max_failures must be a whole number >= 0"),
        (_sweep(search={"max_concurrent": 0}), "search.max_concurrent must be a whole number >= 1"),
        (_sweep(search={"max_concurrent": "two"}), "search.max_concurrent must be a whole number >= 1"),
        (_sweep(search={"max_concurrent": float("inf")}), "search.max_concurrent must be a whole number >= 1"),
        (_sweep(name="../elsewhere"), "name must be a folder name"),
        (_sweep(search={"early_stopping": {"grace_period": "two"}}), "grace_period must be an integer >= 1"),
        (_sweep(search={"early_stopping": {"grace_period": 1.5}}), "grace_period must be an integer >= 1"),
        (_sweep(search={"early_stopping": {"reduction_factor": ".nan"}}), "reduction_factor a number > 1"),
    ],
)
def test_bad_sweeps_raise_one_clear_config_error(raw, needle):
    with pytest.raises(ConfigError) as err:
        parse_sweep(raw)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_early_stopping_is_asha_by_default_and_null_switches_it_off():
    assert parse_sweep(_sweep()).early_stopping == {"grace_period": 1, "reduction_factor": 2.0}
    assert parse_sweep(_sweep(search={"early_stopping": {"grace_period": 2}})).early_stopping == {
        "grace_period": 2, "reduction_factor": 2.0}
    assert parse_sweep(_sweep(search={"early_stopping": None})).early_stopping is None


def test_bundled_demo_config_parses():
    spec = load_sweep()
    assert spec.name == "digits_demo" and spec.mode == "optuna" and len(spec.budgets) >= 2


def test_baselines_expand_per_budget_and_round_trip():
    spec = parse_sweep(_sweep(baselines=[{"model": "mobilenet_v3_small"},
                                         {"model": "mobilenet_v2", "width": "match", "budgets": [0.5], "epochs": 9},
                                         {"model": "efficientnet_b1"}, {"model": "digits_resnet", "width": 0.5}]))
    runs = spec.baseline_runs()
    assert [(r["model"], r["width"], r["budget"], r["epochs"]) for r in runs] == [
        *[("mobilenet_v3_small", None, b, None) for b in spec.budgets],  # width: match is the default
        ("mobilenet_v2", None, 0.5, 9), ("efficientnet_b1", 1.0, None, None), ("digits_resnet", 0.5, None, None)]
    assert len({r["label"] for r in runs}) == len(runs)
    again = parse_sweep(spec.to_dict())
    assert again.baseline_runs() == runs
    assert any("baseline mobilenet_v2" in line for line in describe_space(spec))


def test_a_sweep_file_with_matched_efficientnet_b0_and_mobilenet_v3_baselines_is_accepted(tmp_path):
    f = tmp_path / "fashion.yaml"
    f.write_text("base: {epochs: 2}\nspace: {budget: [0.5, 0.25, 0.1], metric: [taylor]}\n"
                 "baselines:\n  - {model: efficientnet_b0, width: match}\n  - {model: mobilenet_v3_small}\n"
                 "  - {model: mobilenet_v3_large, width: match, budgets: [0.5]}\n")
    runs = load_sweep(f).baseline_runs()
    assert [(r["label"], r["width"], r["budget"]) for r in runs] == [
        ("efficientnet_b0-b0.5", None, 0.5), ("efficientnet_b0-b0.25", None, 0.25), ("efficientnet_b0-b0.1", None, 0.1),
        ("mobilenet_v3_small-b0.5", None, 0.5), ("mobilenet_v3_small-b0.25", None, 0.25),
        ("mobilenet_v3_small-b0.1", None, 0.1), ("mobilenet_v3_large-b0.5", None, 0.5)]


@pytest.mark.parametrize(
    ("baselines", "needle"),
    [
        ({"model": "mobilenet_v3_small"}, "expected a list"),
        ([{"arch": "mobilenet_v3_small"}], "baselines[0]: expected a mapping with 'model'"),
        ([{"model": "nosuchnet"}], "baselines[0].model: unknown model 'nosuchnet'; valid models:"),
        ([{"model": "mobilenet_v2", "widht": 1}], "unknown key(s) ['widht']"),
        ([{"model": "mobilenet_v2", "width": -1}], "baselines[0].width: -1; allowed: a number > 0 or 'match'"),
        ([{"model": "efficientnet_b1", "width": "match"}],
         ("baselines[0].width: 'efficientnet_b1' has no width multiplier (these do: digits_resnet, efficientnet_b0, "
          "mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small, resnet110, resnet20, resnet56); use width: 1.0")),
        ([{"model": "mobilenet_v2", "budgets": [1.5]}], "baselines[0].budgets"),
        ([{"model": "mobilenet_v2", "epochs": 0}], "baselines[0].epochs"),
        ([{"model": "mobilenet_v2"}, {"model": "mobilenet_v2"}], "listed twice"),
        # the same run reached twice: all budgets (0.3 among them), then 0.3 alone
        ([{"model": "mobilenet_v2"}, {"model": "mobilenet_v2", "budgets": [0.3]}],
         "listed twice: mobilenet_v2-b0.3"),
        ([{"model": "digits_resnet", "width": 1}, {"model": "digits_resnet", "width": 1.0}], "digits_resnet-w1"),
    ],
)
def test_bad_baselines_are_one_line_config_errors(baselines, needle):
    with pytest.raises(ConfigError) as err:
        parse_sweep(_sweep(baselines=baselines))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_every_bundled_sweep_config_is_valid():
    from pathlib import Path

    import sweeps

    files = sorted((Path(sweeps.__file__).parent / "configs").glob("*.yaml"))
    assert {f.stem for f in files} >= {"digits_demo", "cifar10_resnet56", "resnet50_imagenet"}
    for f in files:
        spec = load_sweep(f)
        assert spec.name == f.stem and spec.num_trials() >= 1 and spec.budgets


def test_gpu_section_is_validated_and_applied_only_on_request():
    import yaml

    spec = load_sweep("sweeps/configs/fashion_mnist.yaml")
    assert spec.base["data.train_size"] == 5000 and spec.base["train.epochs"] == 3
    assert spec.gpu == {"data.train_size": None, "data.val_fraction": 0.15, "data.num_workers": 4,
                        "teacher.epochs": 30, "train.epochs": 15}
    assert spec.use_gpu_settings() == spec.gpu
    assert spec.base["data.train_size"] is None and spec.base["train.epochs"] == 15
    again = parse_sweep(yaml.safe_load(yaml.safe_dump(spec.to_dict())))  # sweep.yaml round trip (resume)
    assert again.gpu == spec.gpu
    raw = {"base": {"dataset": "digits"}, "space": {"budget": [0.3, 0.5]}}
    with pytest.raises(ConfigError, match="gpu"):
        parse_sweep({**raw, "gpu": {"train": {"epochz": 3}}})
    with pytest.raises(ConfigError, match="gpu"):
        parse_sweep({**raw, "gpu": {"epochs": -1}})
