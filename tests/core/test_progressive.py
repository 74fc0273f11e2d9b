"""Progressive prune-and-distill: cuts compose back to the dense model, land on the budget, and a
progressive trial trains as many epochs as a one-shot one, saves, reloads and resumes."""

import json
import math

import pytest
import torch

from kpid_core.config import load_config
from kpid_core.engine.importance import compute_importance
from kpid_core.errors import ConfigError, SpecError
from kpid_core.models import build_model
from kpid_core.progressive import compose_kept, progressive_prune, step_budgets
from kpid_core.prune import load_pruned, prune_to_budget, prune_to_kept
from kpid_core.training.train import evaluate
from kpid_core.trial import run_trial, trial_data
from tests.core.resume_check import assert_resume_matches

X = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _resnet():
    torch.manual_seed(0)
    m = build_model("resnet20", num_classes=10, in_channels=3)
    for mod in m.modules():  # non-trivial BN statistics, so that a wrong channel shows in the output
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 1.5)
    return m.eval()


def test_step_budgets_and_compose_kept():
    assert step_budgets(0.1, 1) == [0.1]
    b = step_budgets(0.1, 2)
    assert b[-1] == 0.1 and b[0] == pytest.approx(math.sqrt(0.1))
    assert compose_kept({"g": [1, 3, 5, 7]}, {"g": [0, 2]}) == {"g": [1, 5]}
    with pytest.raises(SpecError):
        compose_kept({"g": [1, 3]}, {"h": [0]})
    with pytest.raises(SpecError):
        compose_kept({"g": [1, 3]}, {"g": [2]})


def test_prune_to_kept_reproduces_a_knapsack_prune():
    model = _resnet()
    ref = prune_to_budget(model, X[:1], 0.3, compute_importance(model, (3, 32, 32), "l1"))
    again = prune_to_kept(model, X[:1], ref.kept)
    assert again.kept == ref.kept and again.channel_map == ref.channel_map
    assert again.macs_after == ref.macs_after and again.budget == pytest.approx(ref.macs_ratio)
    with torch.no_grad():
        torch.testing.assert_close(again.model.eval()(X), ref.model.eval()(X))
    bad = dict(ref.kept)
    bad[next(iter(bad))] = [10_000]
    with pytest.raises(SpecError):
        prune_to_kept(model, X[:1], bad)
    with pytest.raises(SpecError):
        prune_to_kept(model, X[:1], {k: v for k, v in list(ref.kept.items())[1:]})


def test_progressive_prune_lands_and_refers_to_the_dense_model():
    dense = _resnet()
    seen = []

    def prune(m, b, s):
        return prune_to_budget(m, X[:1], b, s)

    def tune(result, step):  # "training" doubles every conv weight: the final cut must carry that over
        seen.append((step, result.macs_ratio))
        with torch.no_grad():
            for mod in result.model.modules():
                if isinstance(mod, torch.nn.Conv2d):
                    mod.weight.mul_(2.0)

    res = progressive_prune(dense, X[:1], 0.1, 3, compute_importance(dense, (3, 32, 32), "l1"), prune=prune,
                            rescore=lambda m: compute_importance(m, (3, 32, 32), "l1"), tune=tune,
                            rebuild=lambda kept: prune_to_kept(dense, X[:1], kept))
    assert [s for s, _ in seen] == [0, 1]
    for (_, ratio), target in zip(seen, step_budgets(0.1, 3)):  # each intermediate cut lands on its target
        assert 0.99 * target <= ratio <= target
    assert res.macs_after <= math.floor(0.1 * res.macs_before) and res.macs_ratio >= 0.095
    ref = prune_to_kept(dense, X[:1], res.kept)  # the same channels cut from the dense model in one go
    assert res.channel_map == ref.channel_map and res.spec["shapes"] == ref.spec["shapes"]
    tuned, cut = dict(res.model.named_modules()), dict(ref.model.named_modules())
    for name, mod in cut.items():
        if isinstance(mod, torch.nn.Conv2d):  # two tuned steps: 4 x the dense weights at the kept indices
            torch.testing.assert_close(tuned[name].weight, 4.0 * mod.weight)
    w = dict(dense.named_modules())["layer3.0.conv1"].weight
    cm = res.channel_map["layer3.0.conv1"]
    torch.testing.assert_close(tuned["layer3.0.conv1"].weight, 4.0 * w[cm["out"]][:, cm["in"]])


def test_progressive_config_checks():
    with pytest.raises(ConfigError, match="prune.steps"):
        load_config(overrides=["prune.steps=3", "prune.step_epochs=1", "epochs=2"])
    with pytest.raises(ConfigError, match="prune.steps"):
        load_config(overrides=["prune.steps=0"])
    with pytest.raises(ConfigError, match="prune.steps"):
        load_config(overrides=["prune.steps=2", "prune.cost=params"])


@pytest.mark.slow
def test_progressive_trial_trains_the_same_epochs_saves_reloads_and_resumes(tmp_path):
    # teacher.epochs=3: test_trial's and test_baseline's teacher, trained once in the session's cache
    cfg = load_config(overrides=["teacher.epochs=3", "epochs=3", "budget=0.2", "prune.steps=2"])
    epochs = []
    full = run_trial(cfg, on_epoch=lambda e, m: epochs.append(e), out_dir=tmp_path / "out",
                     checkpoint_dir=tmp_path / "full")
    assert epochs == [2, 3] and full["epochs_done"] == 3  # 1 epoch after the first cut + 2 after the last
    assert full["macs_ratio"] <= 0.2 and full["status"] == "finished"
    assert "step_finetune_s" in full["times"]
    spec = json.loads((tmp_path / "out" / "model" / "spec.json").read_text())
    assert spec["steps"] == 2 and spec["budget"] == 0.2
    model = load_pruned(tmp_path / "out" / "model")  # rebuilt from the dense architecture, spec refers to it
    assert evaluate(model, trial_data(cfg).test) == pytest.approx(full["accuracy"], abs=1e-9)

    assert_resume_matches(cfg, full, tmp_path, stop_after=2)


def test_prune_to_kept_accepts_counts_whose_ratio_rounds_below_them():
    """The ratio a/M of a composed cut, times M, can be a hair under a in floating point (7 % of
    random ResNet-20 cuts): the MAC check must not call that over budget."""
    import random

    from kpid_core.engine.groups import find_groups

    model = _resnet()
    groups = find_groups(model, X[:1])
    dense, rng = groups.macs(), random.Random(0)
    for _ in range(2000):
        counts = {g.key: rng.randint(1, g.size) for g in groups}
        macs = groups.macs(groups.counts(counts))
        if math.floor(macs / dense * dense) < macs:
            break
    else:
        pytest.fail("no cut with a ratio that rounds below its MACs was found")
    res = prune_to_kept(model, X[:1], {k: list(range(n)) for k, n in counts.items()})
    assert res.macs_after == macs
