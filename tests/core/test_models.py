"""Model registry: CIFAR ResNets, the digits default, torchvision kwargs, inner-KD taps."""

import pytest
import torch
from torch import nn

from kpid_core import models
from kpid_core.errors import ConfigError, UnknownNameError
from kpid_core.models import BasicBlock, build_model, default_taps, model_in_channels, model_input_size


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name, blocks", [("resnet20", 9), ("resnet56", 27), ("resnet110", 54)])
def test_cifar_resnets_have_he_depth_and_option_b_shortcuts(name, blocks):
    m = build_model(name, num_classes=10)
    bb = [b for b in m.modules() if isinstance(b, BasicBlock)]
    assert len(bb) == blocks  # depth = 6n + 2 with n blocks per stage
    convs = [b.shortcut[0] for b in bb if isinstance(b.shortcut, nn.Sequential)]
    assert len(convs) == 2 and all(c.kernel_size == (1, 1) for c in convs)  # option B at the 2 stage changes
    assert model_input_size(name) == 32
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet20_parameter_count_matches_he_et_al():
    # He et al. report 0.27M for ResNet-20 (option A); option B adds two 1x1 projections (+BN).
    n = _n_params(build_model("resnet20", num_classes=10))
    assert 0.27e6 < n < 0.28e6


def test_digits_resnet_shapes_width_and_channels():
    m = build_model("digits_resnet", num_classes=10)
    assert model_input_size("digits_resnet") == 16 and model_in_channels("digits_resnet") is None
    assert m.conv1.in_channels == 1 and m(torch.randn(3, 1, 16, 16)).shape == (3, 10)
    assert [m.layer1[0].conv1.out_channels, m.layer2[0].conv1.out_channels, m.layer3[0].conv1.out_channels] == [16, 32, 64]
    half = build_model("digits_resnet", num_classes=10, width=0.5, in_channels=3)
    assert half.layer3[0].conv1.out_channels == 32 and half.conv1.in_channels == 3
    assert _n_params(half) < _n_params(m) / 3


def test_taps_are_real_modules():
    for name in ["digits_resnet", "resnet20", "resnet18", "mobilenet_v2", "mobilenet_v3_small",
                 "mobilenet_v3_large", "efficientnet_b0", "efficientnet_b1", "regnet_y_400mf"]:
        taps = default_taps(name)
        assert len(taps) >= 3, name
        names = dict(build_model(name, num_classes=10).named_modules())
        assert all(t in names for t in taps), (name, taps)


def test_torchvision_width_and_bad_kwargs():
    small = build_model("mobilenet_v3_small", num_classes=10, width=0.5)
    assert _n_params(small) < _n_params(build_model("mobilenet_v3_small", num_classes=10))
    assert "efficientnet_b1" in models.MODEL_NAMES
    with pytest.raises(ConfigError, match="no width multiplier"):
        build_model("resnet18", num_classes=10, width=0.5)
    with pytest.raises(ConfigError, match="3 input channels"):
        build_model("resnet18", num_classes=10, in_channels=1)
    assert model_in_channels("resnet18") == 3


def test_efficientnet_b0_width_scales_channels_and_keeps_b0_depth_and_regularisation():
    from torchvision.ops import StochasticDepth

    def stage_channels(m):  # output channels of the stem, the seven stages and the head conv
        return [[c for c in stage.modules() if isinstance(c, nn.Conv2d)][-1].out_channels for stage in m.features]

    def reg(m):
        return m.classifier[0].p, [round(s.p, 6) for s in m.modules() if isinstance(s, StochasticDepth)]

    full, narrow = build_model("efficientnet_b0", num_classes=10), build_model("efficientnet_b0", 10, width=0.3)
    assert stage_channels(full) == [32, 16, 24, 40, 80, 112, 192, 320, 1280]
    # torchvision's rounding: nearest multiple of 8, at least 8, never more than 10 % down (9.6 → 16)
    assert stage_channels(narrow) == [16, 8, 8, 16, 24, 32, 56, 96, 384]
    assert reg(narrow) == reg(full) and reg(full)[0] == 0.2 and len(reg(full)[1]) == 16  # B0: 16 blocks
    assert narrow.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 10)
    assert models.model_has_width("efficientnet_b0") and not models.model_has_width("efficientnet_b1")
    assert "efficientnet_b0" in models.models_with_width() and "resnet18" not in models.models_with_width()


def test_unknown_model_lists_names():
    with pytest.raises(UnknownNameError) as e:
        build_model("resnet9000")
    assert "digits_resnet" in str(e.value) and "resnet56" in str(e.value)
    with pytest.raises(UnknownNameError):
        default_taps("nope")
