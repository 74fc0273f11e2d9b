"""MAC counting: torchvision's convention (conv + linear, one image)."""

import pytest
import torch
from torch import nn

from kpid_core._tv import torchvision
from kpid_core.engine.macs import count_macs, count_params, macs_breakdown
from kpid_core.models import build_model


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", "efficientnet_b0", "mobilenet_v3_large", "mobilenet_v3_small"])
def test_matches_torchvision_ops(name):
    ops = torchvision.models.get_model_weights(name).DEFAULT.meta["_ops"]  # GMACs, 3 decimals
    gmacs = count_macs(build_model(name), (3, 224, 224)) / 1e9
    # within 0.5 %, or equal after the metadata's own rounding to 3 decimals (mobilenet_v3_small:
    # 0.0565 G is published as 0.057, a 0.9 % rounding step)
    assert abs(gmacs / ops - 1) <= 0.005 or round(gmacs, 3) == ops, (gmacs, ops)


def test_hand_computed_layers():
    m = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),       # 8x8 out
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8),  # depthwise, 4x4 out
        nn.Conv2d(8, 6, 1, groups=2),                   # grouped, 4x4
        nn.Flatten(),
        nn.Linear(6 * 16, 10),
    )
    rows = macs_breakdown(m, (3, 8, 8))
    expected = [64 * 9 * 3 * 8, 16 * 9 * 1 * 8, 16 * 1 * 4 * 6, 96 * 10]
    assert [r.macs for r in rows] == expected
    assert [r.name for r in rows] == ["0", "1", "2", "4"]
    assert rows[1].output_hw == (4, 4) and rows[1].kernel == (3, 3) and rows[1].groups == 8
    assert count_macs(m, (3, 8, 8)) == sum(expected)
    assert count_params(m) == sum(p.numel() for p in m.parameters())


def test_linear_on_tokens_and_mode_restored():
    m = nn.Sequential(nn.Flatten(2), nn.Linear(4, 5))  # (1, 3, 4, 1) -> tokens 3 x features 4
    m.train()
    assert count_macs(m, (3, 4, 1)) == 3 * 4 * 5
    assert m.training  # counting runs in eval mode but restores the caller's mode


def test_shared_layer_counted_per_call():
    lin = nn.Linear(4, 4)

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            return self.lin(self.lin(x))

    assert count_macs(Twice(), (4,)) == 2 * 16
    assert torch.is_grad_enabled()
