"""Channel shuffles (ShuffleNetV2's view-transpose-view, ``nn.ChannelShuffle``): the channels they
reorder stay whole, every other group prunes, and the pruned network is the dense one with the
removed channels masked."""

from __future__ import annotations

import copy

import torch
from torch import nn

from kpid_core._tv import torchvision
from kpid_core.engine.groups import find_groups, is_depthwise
from kpid_core.prune import prune_to_budget


def _masked(dense: nn.Module, channel_map: dict) -> nn.Module:
    """``dense`` with the weights that read a removed channel zeroed (at every conv/linear that
    reads channels), so removed channels cannot reach the output."""
    net = copy.deepcopy(dense)
    modules = dict(net.named_modules())
    for name, dims in channel_map.items():
        m = modules[name]
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not is_depthwise(m):
            gone = sorted(set(range(m.weight.shape[1])) - set(dims["in"]))  # no grouped convs here
            with torch.no_grad():
                m.weight[:, gone] = 0
    return net


def _assert_pruned_equals_masked(dense: nn.Module, size: int, budget: float = 0.5) -> None:
    torch.manual_seed(0)
    res = prune_to_budget(dense, (3, size, size), budget)
    assert 0.99 * budget <= res.macs_ratio <= budget, res.macs_ratio
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        got, want = res.model.eval()(x), _masked(dense, res.channel_map).eval()(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))  # random init: small logits


def test_shufflenet_groups_keep_shuffled_channels_whole():
    net = torchvision.models.shufflenet_v2_x0_5(num_classes=10)
    G = find_groups(net, (3, 32, 32))
    blocks = [f"{s}.{i}" for s, n in (("stage2", 4), ("stage3", 8), ("stage4", 4)) for i in range(n)]
    assert set(G.keys()) == {"conv1.0", "conv5.0"} | {f"{b}.branch2.0" for b in blocks}
    members = {(m.module, m.dim) for g in G for m in g.members}
    inner = {("stage3.2.branch2.0", "out"), ("stage3.2.branch2.3", "out"), ("stage3.2.branch2.5", "in")}
    assert inner <= {(m.module, m.dim) for m in G.by_key["stage3.2.branch2.0"].members}
    assert ("stage2.0.branch1.0", "out") in {(m.module, m.dim) for m in G.by_key["conv1.0"].members}
    assert {("conv5.0", "out"), ("fc", "in")} <= {(m.module, m.dim) for m in G.by_key["conv5.0"].members}
    for b in blocks:  # the branches' outputs are concatenated and shuffled: never pruned
        assert (f"{b}.branch2.5", "out") not in members
        assert b == "stage2.0" or (f"{b}.branch2.0", "in") not in members  # stage2.0 reads the stem
    assert ("stage3.0.branch1.2", "out") not in members


def test_pruned_shufflenet_is_the_dense_one_with_removed_channels_masked():
    _assert_pruned_equals_masked(torchvision.models.shufflenet_v2_x0_5(num_classes=10).eval(), 32)


class _ShuffleNet(nn.Module):
    """Not ShuffleNetV2: a shuffle written as reshape-permute-flatten, then ``nn.ChannelShuffle``
    and a split by sizes, each between two pruned-or-not convs."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.a = nn.Conv2d(16, 12, 1)
        self.b = nn.Conv2d(16, 12, 1)
        self.mid = nn.Conv2d(24, 20, 3, padding=1)
        self.shuffle = nn.ChannelShuffle(4)
        self.c = nn.Conv2d(10, 10, 1)
        self.head = nn.Conv2d(20, 32, 1)
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.cat([self.a(x), self.b(x)], 1)
        n, c, h, w = x.shape
        x = x.reshape(n, 2, c // 2, h, w).permute(0, 2, 1, 3, 4).flatten(1, 2)
        x = self.shuffle(torch.relu(self.mid(x)))
        x1, x2 = x.split([10, 10], dim=1)
        x = torch.relu(self.head(torch.cat([x1, self.c(x2)], 1)))
        return self.fc(x.mean((2, 3)))


def test_any_channel_shuffle_is_kept_whole_not_only_shufflenets():
    torch.manual_seed(0)
    net = _ShuffleNet().eval()
    G = find_groups(copy.deepcopy(net), (3, 8, 8))
    assert set(G.keys()) == {"stem", "c", "head"}  # a, b, mid reach a shuffle (c's output a split)
    _assert_pruned_equals_masked(net, 8, budget=0.85)  # 0.73 of its MACs are in shuffled channels
