"""ECA channel attention (timm's ``EcaModule``: a ``Conv1d`` run across the channels through a view
``(N, C) -> (N, 1, C)``): the gated channels stay whole, every other group prunes, and tracing
builds index lists of at most C entries (torch-pruning's flatten mapping of that view built C x C
per group pass: minutes for timm's ecaresnet26t)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from kpid_core._tv import torchvision  # noqa: F401  (torchvision before timm: its ops register once)
from kpid_core.engine.groups import find_groups
from kpid_core.prune import prune_to_budget


def _small_ecaresnet(num_classes: int = 5) -> nn.Module:
    """ecaresnet26t's structure (deep tiered stem, avg-down, Bottleneck + ECA) with one block per stage at 1/8 of its width."""
    from timm.models.resnet import Bottleneck, ResNet  # timm: the dev extra, so CI runs this

    return ResNet(block=Bottleneck, layers=(1, 1, 1, 1), channels=(8, 16, 32, 64), stem_width=8, stem_type="deep_tiered",
                  avg_down=True, block_args={"attn_layer": "eca"}, num_classes=num_classes)


def test_eca_tracing_builds_no_channel_squared_index_lists(monkeypatch):
    from torch_pruning.dependency import index_mapping

    longest = [0]  # the longest index list torch-pruning's flatten mapping returns while grouping
    flatten = index_mapping._FlattenIndexMapping.__call__

    def counted(self, idxs):
        out = flatten(self, idxs)
        longest[0] = max(longest[0], len(out))
        return out

    monkeypatch.setattr(index_mapping._FlattenIndexMapping, "__call__", counted)
    net = _small_ecaresnet().eval()
    find_groups(net, (3, 32, 32))
    widest = max(m.out_channels for m in net.modules() if isinstance(m, nn.Conv2d))  # 256 (was 256 x 256)
    assert longest[0] <= widest, f"a group search built {longest[0]} indices for at most {widest} channels"


def test_eca_gated_channels_stay_whole_and_the_rest_prunes():
    torch.manual_seed(0)
    net = _small_ecaresnet().eval()
    G = find_groups(copy.deepcopy(net), (3, 32, 32))
    outs = {m.module for g in G for m in g.members if m.dim == "out"}
    gated = {f"layer{s}.0.conv3" for s in (1, 2, 3, 4)}  # each block's ECA gates conv3's output
    assert not gated & outs
    assert {f"layer{s}.0.conv{c}" for s in (1, 2, 3, 4) for c in (1, 2)} <= outs
    res = prune_to_budget(net, (3, 32, 32), 0.6)
    assert 0.59 <= res.macs_ratio <= 0.6
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got, want = res.model.eval()(x), _masked(net, res.channel_map).eval()(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def _masked(dense: nn.Module, channel_map: dict) -> nn.Module:
    """``dense`` with every conv/linear weight that reads a removed channel zeroed."""
    net = copy.deepcopy(dense)
    modules = dict(net.named_modules())
    for name, dims in channel_map.items():
        m = modules[name]
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.dim() >= 2 and getattr(m, "groups", 1) == 1:
            gone = sorted(set(range(m.weight.shape[1])) - set(dims["in"]))
            with torch.no_grad():
                m.weight[:, gone] = 0
    return net
