"""Grouped convolutions (ResNeXt, RegNet, ResNeSt) and GroupNorm prune in tied units: the channels at
one position of every block go together, so each block keeps the same size; the MAC model, the
importance scores, the physical cut and save → load agree."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from kpid_core.engine.groups import find_groups, is_depthwise
from kpid_core.engine.importance import compute_importance
from kpid_core.engine.macs import count_macs
from kpid_core.models import build_model
from kpid_core.prune import load_pruned, prune_to_budget, prune_to_kept, save_pruned


class _Grouped(nn.Module):
    """conv → BN → grouped conv (4 groups) → GroupNorm (3 groups) → 1x1 conv → linear."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.c2, self.gn = nn.Conv2d(16, 24, 3, padding=1, groups=4), nn.GroupNorm(3, 24)
        self.c3, self.fc = nn.Conv2d(24, 32, 1), nn.Linear(32, 5)

    def forward(self, x):
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.gn(self.c2(x)))
        return self.fc(self.c3(x).mean((2, 3)))


def _masked(dense: nn.Module, channel_map: dict) -> nn.Module:
    """``dense`` with every weight that reads a removed channel zeroed; a grouped conv's input
    channel ``c`` is read by its block's filters at position ``c % (in/groups)``."""
    net = copy.deepcopy(dense)
    modules = dict(net.named_modules())
    for name, dims in channel_map.items():
        m = modules[name]
        if not isinstance(m, (nn.Conv2d, nn.Linear)) or (isinstance(m, nn.Conv2d) and is_depthwise(m)):
            continue
        groups = getattr(m, "groups", 1)
        n_in = m.weight.shape[1] * groups
        per_in, per_out = n_in // groups, m.weight.shape[0] // groups
        with torch.no_grad():
            for c in sorted(set(range(n_in)) - set(dims["in"])):
                b = c // per_in
                m.weight[b * per_out:(b + 1) * per_out, c % per_in] = 0
    return net


def test_units_tie_one_position_of_every_block():
    groups = find_groups(_Grouped(), (3, 8, 8))
    by_key = {g.key: g for g in groups}
    # c1's 16 outputs feed 4 blocks of 4: the unit at position p holds p, p+4, p+8, p+12
    assert by_key["c1"].size == 4
    assert by_key["c1"].units == [[p, p + 4, p + 8, p + 12] for p in range(4)]
    # c2's 24 outputs: 4 conv blocks of 6 and 3 GroupNorm blocks of 8 tie every other channel
    assert by_key["c2"].size == 2
    assert by_key["c2"].units == [list(range(0, 24, 2)), list(range(1, 24, 2))]
    assert by_key["c3"].units is None and by_key["c3"].size == 32


def test_cut_keeps_blocks_equal_and_matches_masked_dense_model():
    torch.manual_seed(0)
    dense = _Grouped().eval()
    res = prune_to_kept(dense, (3, 8, 8), {"c1": [0, 2, 3], "c2": [1], "c3": list(range(0, 32, 2))})
    net = res.model.eval()
    assert (net.c1.out_channels, net.c2.in_channels, net.c2.out_channels, net.c2.groups) == (12, 12, 12, 4)
    assert (net.gn.num_channels, net.gn.num_groups) == (12, 3)
    assert res.channel_map["c2"]["in"] == [c for c in range(16) if c % 4 != 1]
    assert res.macs_after == count_macs(net, (3, 8, 8))
    x = torch.randn(3, 3, 8, 8)
    masked = _masked(dense, res.channel_map)
    with torch.no_grad():  # GroupNorm's statistics change with its channels: compare up to c2's input
        for m in (net, masked):
            m.gn, m.c3, m.fc = nn.Identity(), nn.Identity(), nn.Identity()
            m.forward = lambda t, m=m: m.c2(torch.relu(m.b1(m.c1(t))))
        got = net(x)
        want = masked(x)[:, res.channel_map["c2"]["out"]]
    torch.testing.assert_close(got, want)


def test_mac_model_is_exact_at_every_count():
    dense = _Grouped()
    groups = find_groups(copy.deepcopy(dense), (3, 8, 8))
    rng = np.random.default_rng(0)
    for _ in range(5):
        kept = {g.key: sorted(rng.choice(g.size, size=int(rng.integers(1, g.size + 1)), replace=False).tolist())
                for g in groups}
        res = prune_to_kept(dense, (3, 8, 8), kept)
        assert groups.macs({k: len(v) for k, v in kept.items()}) == count_macs(res.model, (3, 8, 8))


def test_l1_score_of_a_unit_sums_its_channels_in_every_member():
    torch.manual_seed(0)
    net = _Grouped()
    scores = compute_importance(net, (3, 8, 8), "l1").scores["c1"]
    net.requires_grad_(False)
    w1, w2 = net.c1.weight.double(), net.c2.weight.double()
    want = []
    for p in range(4):
        chans = [p, p + 4, p + 8, p + 12]
        s = sum(w1[c].abs().sum() + net.c1.bias[c].abs().double() + net.b1.weight[c].abs().double()
                + net.b1.bias[c].abs().double() for c in chans)
        # the grouped conv reads channel c at position c % 4 with the 6 filters of block c // 4
        s = s + sum(w2[(c // 4) * 6:(c // 4 + 1) * 6, c % 4].abs().sum() for c in chans)
        want.append(float(s))
    torch.testing.assert_close(scores.double(), torch.tensor(want, dtype=torch.float64))


@pytest.mark.parametrize("name", ["timm:resnest14d", "resnext50_32x4d"])
def test_grouped_conv_families_prune_run_and_reload(name, tmp_path):
    """ResNeSt's radix convs were left whole before (its min_keep floors exceeded budget 0.5);
    ResNeXt's grouped convs now prune too (its blocks' inner channels, in units of 32)."""
    torch.manual_seed(0)
    model = build_model(name, num_classes=10).eval()
    res = prune_to_budget(model, (3, 32, 32), 0.5, model_name=name, model_kwargs={})
    assert 0.4975 <= res.macs_ratio <= 0.5, res.macs_ratio
    grouped = [m for m in res.model.modules() if isinstance(m, nn.Conv2d) and 1 < m.groups < m.in_channels]
    assert grouped and any(m.in_channels < d.in_channels for m, d in zip(
        grouped, [m for m in model.modules() if isinstance(m, nn.Conv2d) and 1 < m.groups < m.in_channels]))
    x = torch.randn(2, 3, 32, 32)
    res.model.train()(x).sum().backward()
    save_pruned(res, tmp_path / "p")
    loaded = load_pruned(tmp_path / "p").eval()
    with torch.no_grad():
        assert torch.equal(res.model.eval()(x), loaded(x))


class _Wide(nn.Module):
    """conv (32) → grouped conv (2 groups, 32 → 32) → 1x1 conv → linear: 16 units on each side."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.c2, self.b2 = nn.Conv2d(32, 32, 3, padding=1, groups=2), nn.BatchNorm2d(32)
        self.c3, self.fc = nn.Conv2d(32, 32, 1), nn.Linear(32, 5)

    def forward(self, x):
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.b2(self.c2(x)))
        return self.fc(self.c3(x).mean((2, 3)))


def test_progressive_cuts_compose_units_back_to_the_dense_model():
    """Two cuts (the second on the tuned student): the student's units are the dense model's kept
    units in order, so the composed result equals one cut of the dense model, with tuned weights."""
    from kpid_core.progressive import progressive_prune

    torch.manual_seed(0)
    dense = _Wide().eval()

    def tune(result, step):
        with torch.no_grad():
            for mod in result.model.modules():
                if isinstance(mod, nn.Conv2d):
                    mod.weight.mul_(2.0)

    res = progressive_prune(dense, (3, 8, 8), 0.3, 2, compute_importance(dense, (3, 8, 8), "l1"),
                            prune=lambda m, b, s: prune_to_budget(m, (3, 8, 8), b, s),
                            rescore=lambda m: compute_importance(m, (3, 8, 8), "l1"), tune=tune,
                            rebuild=lambda kept: prune_to_kept(dense, (3, 8, 8), kept))
    ref = prune_to_kept(dense, (3, 8, 8), res.kept)
    assert res.spec["shapes"] == ref.spec["shapes"] and res.channel_map == ref.channel_map
    assert res.model.c2.in_channels < 32 and res.model.c2.groups == 2
    for name in ("c1", "c2", "c3"):
        torch.testing.assert_close(getattr(res.model, name).weight, 2.0 * getattr(ref.model, name).weight)


def test_round_to_counts_channels_of_tied_units():
    """round_to=8 on a group of 4-channel units keeps an even number of units (a multiple of 8
    channels), not any number of them (multiples of 4)."""
    torch.manual_seed(0)
    groups = find_groups(_Grouped(), (3, 8, 8))
    assert dict(zip(groups.keys(), groups.unit_channels.tolist())) == {"c1": 4, "c2": 12, "c3": 1}
    for budget in (0.5, 0.7, 0.9):
        res = prune_to_budget(_Grouped(), (3, 8, 8), budget, round_to=8)
        net = res.model
        assert net.c1.out_channels % 8 == 0 and net.c2.out_channels % 8 == 0 and net.c3.out_channels % 8 == 0
        assert net.c2.groups == 4
