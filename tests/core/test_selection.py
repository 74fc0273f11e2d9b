"""Candidate allocations chosen by their loss after adaptive batch norm (kpid_core.engine.selection): the
plan, the batch-norm re-estimate, the choice, and a trial that selects, saves, reloads and resumes."""

import json
import types

import pytest
import torch
from torch import nn

from kpid_core.config import load_config
from kpid_core.engine.selection import (
    Candidate,
    adaptive_bn_loss,
    candidate_plan,
    perturb,
    select_allocation,
    training_batches,
)
from kpid_core.errors import ConfigError
from kpid_core.prune import load_pruned
from kpid_core.training.train import evaluate
from kpid_core.trial import run_trial, trial_data
from tests.core.resume_check import assert_resume_matches


def _batches(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        y = torch.randint(0, 2, (16,), generator=g)
        x = torch.randn(16, 3, 4, 4, generator=g) + 3.0 * y.view(-1, 1, 1, 1).float()
        out.append((x, y))
    return out


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 2))


def test_plan_starts_with_the_configured_allocation_and_has_n_distinct_candidates():
    plan = candidate_plan("taylor", 1.5, 10, seed=3)
    assert len(plan) == 10 and plan[0] == Candidate("taylor spread 1.5", "taylor", 1.5)
    assert len({(c.metric, c.spread, c.noise) for c in plan}) == 10
    assert {c.metric for c in plan} == {"taylor", "l1"}
    assert [c.noise for c in plan if c.noise] == [3001, 3002, 3003, 3004]
    assert candidate_plan("taylor", 1.5, 1) == plan[:1]
    # the configured spread among the tried ones is not tried twice; an L1 trial has one ranking
    assert [(c.metric, c.spread) for c in candidate_plan("l1", 2.0, 2)] == [("l1", 2.0), ("l1", 1.25)]
    with pytest.raises(ConfigError, match="prune.candidates"):
        candidate_plan("taylor", 1.5, 0)


def test_perturb_moves_groups_not_the_ranking_inside_one():
    scores = {"a": torch.tensor([3.0, 1.0, 2.0]), "b": torch.tensor([1.0, 5.0])}
    p, q = perturb(scores, 7), perturb(scores, 7)
    for k, v in scores.items():
        torch.testing.assert_close(p[k], q[k])
        assert torch.equal(p[k].argsort(), v.argsort())
    ratios = {k: float(p[k][0] / scores[k][0]) for k in scores}
    assert ratios["a"] != pytest.approx(ratios["b"])  # one factor per group, not one for all
    assert perturb(scores, 8)["a"][0] != p["a"][0]


def test_adaptive_bn_re_estimates_the_statistics_and_leaves_the_model_alone():
    recal, score = _batches(4, 0), _batches(4, 1)
    clean, bogus = _net(), _net()
    with torch.no_grad():
        bogus[1].running_mean.fill_(50.0)
        bogus[1].running_var.fill_(1e-3)
        bogus[1].num_batches_tracked.fill_(1000)  # as in a trained network
    before = bogus[1].running_mean.clone()
    # the stored statistics do not matter: both are re-estimated on the same batches
    assert adaptive_bn_loss(bogus, recal, score) == pytest.approx(adaptive_bn_loss(clean, recal, score))
    assert torch.equal(bogus[1].running_mean, before) and bogus[1].momentum == 0.1
    # and they are the plain average of the recalibration batches' statistics (what BN's momentum=None
    # keeps): the same network with those statistics written in by hand scores the same
    ref = _net()
    with torch.no_grad():
        acts = [ref[0](x) for x, _ in recal]
        ref[1].running_mean.copy_(torch.stack([a.mean((0, 2, 3)) for a in acts]).mean(0))
        ref[1].running_var.copy_(torch.stack([a.transpose(0, 1).flatten(1).var(1) for a in acts]).mean(0))
        ref.eval()
        out = torch.cat([ref(x) for x, _ in score])
        y = torch.cat([y for _, y in score])
    loss, acc = adaptive_bn_loss(bogus, recal, score)
    assert loss == pytest.approx(nn.functional.cross_entropy(out, y).item(), rel=1e-5)
    assert acc == pytest.approx((out.argmax(1) == y).float().mean().item())


def test_training_batches_are_disjoint_repeatable_and_keep_the_global_generator():
    data = torch.utils.data.TensorDataset(torch.arange(64.0).view(64, 1), torch.zeros(64, dtype=torch.long))
    loader = torch.utils.data.DataLoader(data, batch_size=8, shuffle=True)
    torch.manual_seed(11)
    state = torch.random.get_rng_state()
    recal, score = training_batches(loader, 3, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert len(recal) == len(score) == 3
    seen = torch.cat([x for x, _ in recal + score]).flatten().tolist()
    assert len(set(seen)) == len(seen)
    again = training_batches(loader, 3, seed=5)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(recal + score, again[0] + again[1]))
    # a loader with its own shuffling generator (the product's): the same draw whatever state that
    # generator was left in, and the state is given back
    g = torch.Generator().manual_seed(0)
    own = torch.utils.data.DataLoader(data, batch_size=8, shuffle=True, generator=g)
    first = training_batches(own, 3, seed=5)
    list(own)  # moves g on, as an earlier pass over the loader would
    g_state = g.get_state()
    second = training_batches(own, 3, seed=5)
    assert torch.equal(g.get_state(), g_state)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first[0] + first[1], second[0] + second[1]))
    one = training_batches(torch.utils.data.DataLoader(data, batch_size=64), 3, seed=0)
    assert len(one[0]) == 1 and one[0] == one[1]  # a tiny split: the one batch does both jobs
    with pytest.raises(ConfigError, match="training split is empty"):
        training_batches([], 3, seed=0)


def _result(model, kept):
    return types.SimpleNamespace(model=model, kept=kept, macs_ratio=0.5)


def test_select_keeps_the_lowest_loss_scores_duplicates_once_and_follows_rank_0(monkeypatch):
    recal, score = _batches(4, 0), _batches(4, 1)
    good = _net(0)
    with torch.no_grad():  # a classifier that reads the class off the input's mean
        good[0].weight.fill_(1.0)
        good[0].bias.zero_()
        good[5].weight.copy_(torch.tensor([[-1.0] * 4, [1.0] * 4]))
        good[5].bias.zero_()
    bad = _net(1)
    with torch.no_grad():
        bad[5].weight.mul_(-20.0)
    models = {1.5: bad, 1.25: good, 2.0: bad}
    kept = {1.5: {"g": [0]}, 1.25: {"g": [1]}, 2.0: {"g": [0]}}
    built = []

    def build(scores, spread):
        built.append(spread)
        return _result(models[spread], kept[spread])

    plan = candidate_plan("l1", 1.5, 3)
    calls = []
    import kpid_core.engine.selection as sel

    real = sel.adaptive_bn_loss
    monkeypatch.setattr(sel, "adaptive_bn_loss", lambda m, r, s, d="cpu": calls.append(m) or real(m, r, s, d))
    chosen, rows = select_allocation(build, plan, lambda metric: {"g": torch.ones(2)}, recal, score)
    assert built == [1.5, 1.25, 2.0] and len(calls) == 2  # the third keeps the first's channels
    assert chosen.model is good and [r["chosen"] for r in rows] == [False, True, False]
    assert rows[2]["loss"] == rows[0]["loss"] > rows[1]["loss"]
    forced, rows = select_allocation(build, plan, lambda metric: {"g": torch.ones(2)}, recal, score,
                                     agree=lambda i: 0)
    assert forced.model is bad and rows[0]["chosen"]


def test_candidates_config_checks():
    assert load_config().prune.candidates == 6  # chosen on Fashion-MNIST (bench/BENCHMARKS.quality.md)
    with pytest.raises(ConfigError, match="prune.candidates"):
        load_config(overrides=["prune.candidates=0"])
    with pytest.raises(ConfigError, match="prune.candidate_batches"):
        load_config(overrides=["prune.candidate_batches=0"])


@pytest.mark.slow
def test_a_selecting_trial_records_its_choice_reloads_and_resumes(tmp_path):
    # teacher.epochs=3: test_trial's and test_baseline's teacher, trained once in the session's cache
    cfg = load_config(overrides=["teacher.epochs=3", "epochs=2", "budget=0.2", "prune.candidates=4",
                                 "prune.candidate_batches=2"])
    full = run_trial(cfg, out_dir=tmp_path / "out", checkpoint_dir=tmp_path / "full")
    assert full["macs_ratio"] <= 0.2 and full["status"] == "finished"
    spec = json.loads((tmp_path / "out" / "model" / "spec.json").read_text())
    rows = spec["selection"]
    assert len(rows) == 4 and sum(r["chosen"] for r in rows) == 1
    chosen = next(r for r in rows if r["chosen"])
    assert chosen["loss"] == min(r["loss"] for r in rows)
    assert all(r["macs_ratio"] <= 0.2 for r in rows)
    model = load_pruned(tmp_path / "out" / "model")
    assert evaluate(model, trial_data(cfg).test) == pytest.approx(full["accuracy"], abs=1e-9)

    assert_resume_matches(cfg, full, tmp_path, stop_after=1)
