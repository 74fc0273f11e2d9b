"""CIFAR-style ResNets (He et al. 2016, section 4.2): three stages for small images, and the bundled
default ``digits_resnet``. ``kpid_core.models`` registers them by name (``resnet20``, ``resnet56``,
``resnet110``, ``digits_resnet``) and re-exports the classes.
"""

from __future__ import annotations

import torch
from torch import nn

from kpid_core.errors import ConfigError

__all__ = ["BasicBlock", "CifarResNet", "digits_resnet"]


class BasicBlock(nn.Module):
    """3x3-3x3 residual block; option-B shortcut (1x1 conv + BN) when the shape changes, so that a
    pruner can tie the residual channels through a real layer instead of zero padding.

    Args:
        in_planes: input channels.
        planes: output channels (of both convs).
        stride: stride of the first conv (and of the shortcut).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Three-stage ResNet for small images: stem 3x3 conv, stages ``layer1..3`` (strides 1, 2, 2),
    global average pool, linear head. ``width`` scales every stage's channel count.

    Args:
        blocks: residual blocks per stage.
        num_classes: classifier outputs.
        in_channels: input image channels.
        width: channel multiplier (> 0; each stage keeps at least one channel).
        base: channels of the three stages at width 1.

    Raises:
        ConfigError: ``width`` is not > 0.
    """

    def __init__(
        self,
        blocks: tuple[int, int, int],
        num_classes: int = 10,
        in_channels: int = 3,
        width: float = 1.0,
        base: tuple[int, int, int] = (16, 32, 64),
    ):
        super().__init__()
        if width <= 0:
            raise ConfigError(f"model.width must be > 0 (got {width})")
        planes = [max(1, round(c * width)) for c in base]
        self.conv1 = nn.Conv2d(in_channels, planes[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes[0])
        self.relu = nn.ReLU(inplace=True)
        layers, in_planes = [], planes[0]
        for i, (n, p) in enumerate(zip(blocks, planes)):
            stage = []
            for j in range(n):
                stage.append(BasicBlock(in_planes, p, stride=2 if (i > 0 and j == 0) else 1))
                in_planes = p
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def digits_resnet(num_classes: int = 10, in_channels: int = 1, width: float = 1.0) -> nn.Module:
    """The bundled default: one residual block per stage, widths 16/32/64, for 1x16x16 digits.

    Args:
        num_classes: classifier outputs.
        in_channels: input image channels.
        width: channel multiplier.

    Returns:
        A :class:`CifarResNet` with blocks ``(1, 1, 1)``.
    """
    return CifarResNet((1, 1, 1), num_classes=num_classes, in_channels=in_channels, width=width)
