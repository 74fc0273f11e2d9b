"""Allocation options: score normalisation, where the coupled MAC model is linearised, and the
spread that keeps each group near its uniform count."""

import numpy as np
import pytest
import torch

from kpid_core.config import load_config
from kpid_core.engine.allocation import allocate, min_keep_floors, normalize_scores, score_vectors
from kpid_core.engine.groups import find_groups
from kpid_core.errors import ConfigError, UnknownNameError
from kpid_core.models import build_model
from kpid_core.prune import prune_to_budget

X = torch.zeros(1, 1, 28, 28)


@pytest.fixture(scope="module")
def resnet20():
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10, in_channels=1)
    groups = find_groups(model, X)
    return model, groups, score_vectors(groups, None, model)


def _counts(groups, kept):
    return np.array([len(kept[g.key]) for g in groups])


def test_normalize_scores_puts_groups_on_one_scale():
    v = [np.array([4.0, 2.0, 0.0]), np.array([30.0, 10.0]), np.zeros(2)]
    mean = normalize_scores(v, "mean")
    assert np.allclose(mean[0], [2.0, 1.0, 0.0]) and np.allclose(mean[1], [1.5, 0.5]) and not mean[2].any()
    assert np.allclose(normalize_scores(v, "max")[1], [1.0, 1 / 3])
    assert normalize_scores(v, "none")[1] is v[1]


@pytest.mark.parametrize("budget", [0.25, 0.1])
def test_spread_keeps_every_group_near_its_uniform_count(resnet20, budget):
    _, groups, vec = resnet20
    even = _counts(groups, allocate(groups, vec, budget, allocation="uniform"))
    free = _counts(groups, allocate(groups, vec, budget, spread=0))
    dense = groups.macs()
    for spread in (1.5, 2.0):
        k = _counts(groups, allocate(groups, vec, budget, spread=spread))
        assert groups.macs(k) <= budget * dense and groups.macs(k) > 0.97 * budget * dense
        assert np.all(k >= np.ceil(even / spread - 1e-9)) and np.all(k <= np.floor(even * spread + 1e-9))
    # unbounded (the paper), the linear knapsack values drive groups to their corners: the floor or whole
    floors = min_keep_floors(groups, 0.1)
    assert np.any(free == floors) and np.any(free == groups.sizes)
    assert not np.all(np.abs(np.log(free / even)) <= np.log(2.0))


def test_linearize_at_uniform_and_normalize_land_on_budget(resnet20):
    _, groups, vec = resnet20
    dense = groups.macs()
    for kw in ({"linearize": "uniform"}, {"normalize": "mean"}, {"normalize": "max", "spread": 2.0}):
        k = _counts(groups, allocate(groups, vec, 0.25, **kw))
        assert 0.24 * dense < groups.macs(k) <= 0.25 * dense, kw
    assert not np.array_equal(_counts(groups, allocate(groups, vec, 0.25, normalize="mean")),
                              _counts(groups, allocate(groups, vec, 0.25)))


def test_prune_to_budget_and_config_check_the_new_options(resnet20):
    model = resnet20[0]
    res = prune_to_budget(model, X, 0.3, spread=2.0, normalize="mean", linearize="uniform")
    assert res.macs_ratio <= 0.3
    with pytest.raises(ConfigError, match="spread must be 0 .* or a number >= 1"):
        prune_to_budget(model, X, 0.3, spread=0.5)
    with pytest.raises(UnknownNameError, match="unknown normalize 'sum'; valid values: none, mean, max"):
        prune_to_budget(model, X, 0.3, normalize="sum")
    with pytest.raises(UnknownNameError, match="unknown linearize 'start'"):
        prune_to_budget(model, X, 0.3, linearize="start")
    cfg = load_config(overrides=["prune.spread=2", "prune.normalize=mean", "prune.linearize=uniform"])
    assert (cfg.prune.spread, cfg.prune.normalize, cfg.prune.linearize) == (2.0, "mean", "uniform")
    with pytest.raises(ConfigError, match=r"prune.spread=0.5 is out of range; allowed: \[1.0, inf\)"):
        load_config(overrides=["prune.spread=0.5"])
    assert load_config(overrides=["prune.spread=1"]).prune.spread == 1.0
    with pytest.raises(ConfigError, match="prune.normalize='l2' is not allowed; allowed values: none, mean, max"):
        load_config(overrides=["prune.normalize=l2"])


def test_spread_one_is_the_uniform_allocation_ranked_by_the_scores(resnet20):
    # the candidate pool of a selecting trial can then hold the uniform allocation (prune.spread=1)
    _, groups, vec = resnet20
    for budget in (0.5, 0.25, 0.1):
        assert allocate(groups, vec, budget, spread=1.0) == allocate(groups, vec, budget, allocation="uniform")
        assert allocate(groups, vec, budget, spread=1.0) != allocate(groups, vec, budget, spread=1.25)
    model = resnet20[0]
    assert prune_to_budget(model, X, 0.25, spread=1.0).kept == prune_to_budget(model, X, 0.25, allocation="uniform").kept


def test_cost_normalizer_values_a_groups_average_channel_at_its_cost():
    v = [np.array([4.0, 2.0, 0.0]), np.array([30.0, 10.0])]
    out = normalize_scores(v, "cost", np.array([5.0, 1.0]))
    assert np.allclose(out[0], [10.0, 5.0, 0.0]) and np.allclose(out[1], [1.5, 0.5])
    with pytest.raises(ValueError):
        normalize_scores(v, "cost")


def test_cost_normalizer_ignores_a_groups_scale_and_follows_its_concentration(resnet20):
    _, groups, _ = resnet20
    keys = [g.key for g in groups]
    base = [np.linspace(2.0, 1.0, g.size) for g in groups]  # every group: the same mild slope
    a, b = keys.index("layer1.0.conv1"), keys.index("layer1.1.conv1")  # twin block-inner groups
    scaled = [v * (1000.0 if i == a else 1.0) for i, v in enumerate(base)]
    for budget in (0.25, 0.1):
        k = _counts(groups, allocate(groups, base, budget, normalize="cost"))
        assert np.array_equal(k, _counts(groups, allocate(groups, scaled, budget, normalize="cost")))
        # the paper's sums do move channels to the group whose scores are 1000x larger
        assert _counts(groups, allocate(groups, scaled, budget))[a] > k[a]
    peaked = list(base)
    peaked[a] = np.concatenate([[40.0], np.full(len(base[a]) - 1, 0.1)])  # one channel carries the group
    k = _counts(groups, allocate(groups, peaked, 0.25, normalize="cost", spread=0))
    assert k[a] < k[b]  # a concentrated group gives up channels, its flat twin keeps them
