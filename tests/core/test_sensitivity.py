"""The ``sensitivity`` metric: masking is removal, curves become diminishing per-channel values, and
the scores measure the loss of cutting a group."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kpid_core.engine.groups import find_groups
from kpid_core.engine.importance import METRICS, compute_importance
from kpid_core.engine.sensitivity import convex_marginals, keep_grid, zeroed_channels
from kpid_core.engine.surgery import remove_channels
from kpid_core.models import build_model
from kpid_core.prune import prune_to_budget

X = torch.zeros(1, 3, 8, 8)


def _model():
    torch.manual_seed(0)
    m = build_model("resnet20", num_classes=5)
    for mod in m.modules():  # non-trivial BN statistics, so a wrongly placed mask would show
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.bias.data.uniform_(-0.5, 0.5)
    return m.eval()


def _removed(model, key, keep):
    work = copy.deepcopy(model)
    groups = find_groups(work, X)
    kept = {g.key: list(range(g.size)) for g in groups}
    kept[key] = sorted(int(i) for i in keep)
    remove_channels(work, groups, kept)
    return work.eval()


def test_zeroing_a_groups_channels_computes_what_removing_them_computes():
    model = _model()
    groups = find_groups(copy.deepcopy(model), X)
    x = torch.randn(4, 3, 8, 8)
    gen = torch.Generator().manual_seed(1)
    for g in groups:  # residual streams (many producers), block-inner convs, the stem
        keep = torch.randperm(g.size, generator=gen)[: max(1, g.size // 3)]
        with torch.no_grad(), zeroed_channels(model, g, keep):
            masked = model(x)
        with torch.no_grad():
            torch.testing.assert_close(masked, _removed(model, g.key, keep)(x), atol=1e-5, rtol=1e-4)
    with torch.no_grad():  # the hooks are gone afterwards
        torch.testing.assert_close(model(x), _removed(model, "conv1", range(16))(x))


def test_convex_marginals_are_diminishing_and_sum_to_the_envelope():
    counts, losses = [1, 2, 4, 6, 8], [5.0, 4.5, 1.0, 0.9, 0.0]  # not convex: 1→2 saves little
    m = convex_marginals(counts, losses, 8)
    assert np.all(np.diff(m) < 0)  # strictly decreasing: sorting by value keeps the ranking
    saved = np.cumsum(m[1:])  # keeping ranks 1..k-1 on top of rank 0
    # the lower convex envelope goes straight from (1, 5) to (4, 1), then (4, 1) → (8, 0)
    env = np.interp(np.arange(2, 9), [1, 4, 8], [5.0, 1.0, 0.0])
    np.testing.assert_allclose(saved, 5.0 - env, atol=1e-6)
    assert keep_grid(16) == [1, 2, 3, 4, 5, 6, 8, 10, 11, 13, 14, 16]
    assert keep_grid(1) == [1]


def test_sensitivity_scores_measure_the_kl_of_cutting_each_group():
    model = _model()
    gen = torch.Generator().manual_seed(0)
    data = [(torch.randn(8, 3, 8, 8, generator=gen), torch.randint(0, 5, (8,), generator=gen)) for _ in range(2)]
    sens = compute_importance(model, X, "sensitivity", loader=data, n_batches=2).scores
    taylor = compute_importance(model, X, "taylor", loader=data, n_batches=2).scores
    assert "sensitivity" in METRICS
    for key in ("conv1", "layer2.1.conv1"):
        s, t = sens[key], taylor[key]
        assert torch.equal(torch.argsort(s, descending=True), torch.argsort(t, descending=True, stable=True))
        best = int(torch.argmax(t))
        cut = _removed(model, key, [best])  # the group cut to its single best channel
        with torch.no_grad():
            kl = sum(F.kl_div(F.log_softmax(cut(x), 1), F.log_softmax(model(x), 1), log_target=True,
                              reduction="batchmean") for x, _ in data) / len(data)
        # every channel but the best one together saves the whole measured loss of the cut
        assert float(s.sum() - s.max()) == pytest.approx(float(kl), rel=1e-4, abs=1e-7)
        assert float(kl) > 0


def test_knapsack_on_sensitivity_lands_on_budget():
    model = _model()
    data = [(torch.randn(8, 3, 8, 8), torch.randint(0, 5, (8,))) for _ in range(1)]
    scores = compute_importance(model, X, "sensitivity", loader=data, n_batches=1)
    res = prune_to_budget(model, X, 0.3, scores, spread=0)
    assert 0.29 <= res.macs_after / res.macs_before <= 0.3
