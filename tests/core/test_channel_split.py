"""Channel splits that prune (kpid_core.engine.splits): a ``torch.split`` whose sizes a module attribute
holds prunes each section as its own group and the attribute follows; a static slice
``x[:, a:b]`` keeps the channels its bounds count and prunes the rest; a split whose sizes live in
``forward`` stays whole. The standard: pruned == dense with the removed channels masked."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from kpid_core.engine.groups import find_groups
from kpid_core.errors import UnsupportedModelError
from kpid_core.prune import load_pruned, prune_to_budget, save_pruned
from tests.core.test_channel_shuffle import _assert_pruned_equals_masked


class _Mixed(nn.Module):
    """MixNet's MixedConv2d pattern: ``torch.split(x, self.splits, 1)``, one conv per section, cat."""

    def __init__(self, cin: int, cout: int, kernels: list[int], depthwise: bool = False):
        super().__init__()
        n = len(kernels)
        ins = [cin // n + (cin % n if i == 0 else 0) for i in range(n)]
        outs = [cout // n + (cout % n if i == 0 else 0) for i in range(n)]
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, padding=k // 2, groups=i if depthwise else 1)
                                   for i, o, k in zip(ins, outs, kernels))
        self.splits = ins

    def forward(self, x):
        return torch.cat([c(s) for c, s in zip(self.convs, torch.split(x, self.splits, 1))], 1)


class _MixNet(nn.Module):
    """Sections that do not line up: a 2-way pointwise mix, a 3-way depthwise mix and a 2-way
    projection of unequal halves, with a residual over the block."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 10, 3, padding=1)
        self.pw = _Mixed(10, 24, [1, 1])
        self.dw = _Mixed(24, 24, [3, 5, 7], depthwise=True)
        self.pwl = _Mixed(24, 10, [1, 1])
        self.head = nn.Conv2d(10, 32, 1)
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = x + self.pwl(torch.relu(self.dw(torch.relu(self.pw(x)))))
        return self.fc(torch.relu(self.head(x)).mean((2, 3)))


def test_sections_of_a_split_prune_as_groups_of_their_own():
    net = _MixNet().eval()
    G = find_groups(copy.deepcopy(net), (3, 8, 8))
    assert not G.whole, G.whole
    # pw.convs.0's 12 outputs feed dw sections 0 (8) and 1 (4): two groups, each with one dw conv
    first = [g for g in G if g.key.startswith("pw.convs.0")]
    assert sorted(g.size for g in first) == [4, 8]
    for g in first:
        assert len({m.module for m in g.members if m.module.startswith("dw.convs.")}) == 1
    assert {g.key for g in G} >= {"pw.convs.0", "pw.convs.0#1", "pw.convs.1", "pw.convs.1#1", "stem", "head"}


def test_pruned_split_model_is_the_masked_dense_one_and_its_sizes_follow(tmp_path):
    torch.manual_seed(0)
    net = _MixNet().eval()
    _assert_pruned_equals_masked(net, 8)
    res = prune_to_budget(net, (3, 8, 8), 0.5)
    for name in ("pw", "dw", "pwl"):
        mixed = res.model.get_submodule(name)
        assert mixed.splits == [c.in_channels for c in mixed.convs], name
    assert res.spec["split_sizes"]["dw"]["splits"] == res.model.dw.splits
    save_pruned(res, tmp_path / "m")
    loaded = load_pruned(tmp_path / "m", model_factory=_MixNet).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(res.model.eval()(x), loaded(x))


class _Sliced(nn.Module):
    """ReXNet's partial residual (``cat([x[:, 0:c] + shortcut, x[:, c:]])``) and DPN's dual path
    (``x[:, :c]`` into a sum, ``x[:, c:]`` into a concatenation)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.grow = nn.Conv2d(8, 14, 3, padding=1)     # 8 residual + 6 new channels
        self.dual = nn.Conv2d(14, 20, 1)               # 8 summed + 12 dense channels
        self.head = nn.Conv2d(26, 32, 1)
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        y = self.grow(x)
        x = torch.cat([y[:, 0:8] + x, y[:, 8:]], dim=1)
        y = torch.relu(self.dual(x))
        x = torch.cat([x[:, :8] + y[:, :8], x[:, 8:], y[:, 8:, :, :]], dim=1)
        return self.fc(torch.relu(self.head(x)).mean((2, 3)))


def test_a_static_slice_keeps_the_channels_its_bounds_count_and_prunes_the_rest():
    torch.manual_seed(0)
    net = _Sliced().eval()
    G = find_groups(copy.deepcopy(net), (3, 8, 8))
    assert "a channel slice (x[:, a:b]) whose bounds are numbers in the code" in G.whole
    assert {(g.key, g.size) for g in G} == {("grow", 6), ("dual", 12), ("head", 32)}
    res = prune_to_budget(net, (3, 8, 8), 0.6)
    grow, dual = res.channel_map["grow"]["out"], res.channel_map["dual"]["out"]
    assert grow[:8] == list(range(8)) and len(grow) < 14  # the residual's 8 stay, new ones prune
    assert dual[:8] == list(range(8)) and len(dual) < 20
    _assert_pruned_equals_masked(net, 8, budget=0.6)


class _Halves(nn.Module):
    """A split whose sizes ``forward`` computes: nothing to update, so its channels stay whole."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.a, self.b = nn.Conv2d(6, 6, 3, padding=1), nn.Conv2d(6, 6, 1)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        c = x.shape[1]
        a, b = torch.split(x, [c // 2, c - c // 2], 1)
        return self.fc(torch.cat([self.a(a), self.b(b)], 1).mean((2, 3)))


def test_a_split_sized_in_forward_stays_whole():
    G = find_groups(_Halves().eval(), (3, 8, 8))
    assert G.whole.get("a channel split (torch.split/chunk)") == ["stem"]


class _Strided(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(self.stem(x)[:, ::2].mean((2, 3)))


def test_a_strided_channel_slice_is_refused_in_one_line():
    with pytest.raises(UnsupportedModelError, match=r"slices channels \(x\[:, 0::2\]\)") as e:
        find_groups(_Strided().eval(), (3, 8, 8))
    assert "\n" not in str(e.value)


class _Ghost(nn.Module):
    """GhostNet's module (``cat([x1, cheap(x1)])``, the cheap op a depthwise conv of ``x1``) on a
    residual: channels ``i`` and ``c + i`` of the sum come from one channel of ``x1``, a tie that
    torch-pruning's group merge drops (it keeps one root per channel)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 24, 3, padding=1)
        self.primary = nn.Conv2d(24, 12, 1)
        self.cheap = nn.Conv2d(12, 12, 3, padding=1, groups=12)
        self.head = nn.Conv2d(24, 32, 1)
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x1 = self.primary(x)
        x = torch.cat([x1, self.cheap(x1)], 1) + x  # traced so that the stem roots the group
        return self.fc(torch.relu(self.head(x)).mean((2, 3)))


def test_a_concatenation_of_a_conv_and_its_depthwise_conv_prunes_in_pairs():
    torch.manual_seed(0)
    net = _Ghost().eval()
    G = find_groups(copy.deepcopy(net), (3, 8, 8))
    assert not G.whole, G.whole
    stem = G.by_key["stem"]
    assert stem.size == 12 and sorted(map(sorted, stem.units)) == [[i, 12 + i] for i in range(12)]
    _assert_pruned_equals_masked(net, 8)
