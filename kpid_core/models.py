"""Model registry: every architecture the project can build, by name.

A dense model must be rebuildable from ``(name, kwargs)`` alone: pruned-model specs store exactly
that, and ``load_pruned`` rebuilds the dense skeleton before resizing it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from kpid_core._tv import torchvision
from kpid_core.errors import ConfigError, UnknownNameError

__all__ = [
    "MODEL_NAMES",
    "TORCHVISION_MODELS",
    "BasicBlock",
    "CifarResNet",
    "build_model",
    "default_taps",
    "model_has_width",
    "model_in_channels",
    "model_input_size",
    "models_with_width",
    "register",
]

MODEL_NAMES: list[str]  # computed on access (module __getattr__), so late registrations show up
_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_INPUT_SIZE: dict[str, int] = {}
_TAPS: dict[str, list[str]] = {}

# torchvision classifiers offered by name (all prune at budget 0.5; see tests/core).
TORCHVISION_MODELS = [
    "resnet18", "resnet34", "resnet50", "resnet101", "wide_resnet50_2",
    "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
    "vgg11_bn", "vgg16_bn", "alexnet", "mnasnet1_0", "regnet_y_400mf",
]


def register(name: str, input_size: int, taps: list[str] | None = None):
    """Decorator: register a model factory ``f(num_classes=..., **kw) -> nn.Module``."""

    def deco(fn):
        _REGISTRY[name] = fn
        _INPUT_SIZE[name] = input_size
        _TAPS[name] = list(taps or [])
        return fn

    return deco


# torchvision classifiers whose builder takes a width multiplier: ``width`` becomes ``width_mult``.
_TV_WIDTH = {"mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0"}


def _efficientnet_b0(width: float, num_classes: int, **kw) -> nn.Module:
    """EfficientNet-B0 with its channels scaled by ``width`` (depth stays B0's 1.0).

    torchvision has no public way to set EfficientNet's ``width_mult``: ``efficientnet_b0`` fixes it at
    1.0. Its private ``_efficientnet_conf`` is the stage table every public builder uses; calling it
    (rather than copying B0's table here) keeps the stages and the channel rounding (multiples of 8)
    exactly torchvision's. B0's dropout (0.2) and stochastic depth (the class default, 0.2) are kept
    unless ``kw`` overrides them.
    """
    effnet = torchvision.models.efficientnet
    setting, last_channel = effnet._efficientnet_conf("efficientnet_b0", width_mult=width, depth_mult=1.0)
    return effnet.EfficientNet(setting, kw.pop("dropout", 0.2), num_classes=num_classes, last_channel=last_channel,
                               **kw)


def _tv_factory(name: str):
    def build(num_classes: int = 1000, width: float = 1.0, in_channels: int = 3, **kw) -> nn.Module:
        if in_channels != 3:
            raise ConfigError(f"model {name!r} takes 3 input channels (got in_channels={in_channels})")
        if width != 1.0:
            if name not in _TV_WIDTH:
                raise ConfigError(
                    f"model.width={width}: torchvision model {name!r} has no width multiplier "
                    f"(only {', '.join(sorted(_TV_WIDTH))} do); use width: 1.0"
                )
            if width <= 0:
                raise ConfigError(f"model.width must be > 0 (got {width})")
            if name == "efficientnet_b0":
                return _efficientnet_b0(float(width), num_classes, **kw)
            kw["width_mult"] = float(width)
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kw)

    return build


# Inner-KD tap points for torchvision families: block outputs spread over the depth
# (about 1/4, 1/2, 3/4 and the last block before the head conv).
_FAMILY_TAPS = {
    "mobilenet_v2": ["features.3", "features.6", "features.13", "features.17"],
    "mobilenet_v3_small": ["features.1", "features.3", "features.8", "features.11"],
    "mobilenet_v3_large": ["features.3", "features.6", "features.12", "features.15"],
    "efficientnet": ["features.2", "features.3", "features.5", "features.7"],
    "regnet": ["trunk_output.block1", "trunk_output.block2", "trunk_output.block3", "trunk_output.block4"],
}


def _tv_taps(name: str) -> list[str]:
    if name.startswith(("resnet", "wide_resnet", "resnext")):
        return ["layer1", "layer2", "layer3", "layer4"]
    for prefix, taps in _FAMILY_TAPS.items():
        if name.startswith(prefix):
            return list(taps)
    return []  # e.g. vgg/alexnet: no stage structure; inner KD then has no default taps


for _n in TORCHVISION_MODELS:
    register(_n, 224, _tv_taps(_n))(_tv_factory(_n))


# --- CIFAR-style ResNets (He et al. 2016, section 4.2) -------------------------------------------
class BasicBlock(nn.Module):
    """3x3-3x3 residual block; option-B shortcut (1x1 conv + BN) when the shape changes, so that a
    pruner can tie the residual channels through a real layer instead of zero padding."""

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
    global average pool, linear head. ``width`` scales every stage's channel count."""

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


_CIFAR_TAPS = ["layer1", "layer2", "layer3"]


def _cifar(blocks: tuple[int, int, int]):
    def build(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
        return CifarResNet(blocks, num_classes=num_classes, in_channels=in_channels, width=width)

    return build


register("resnet20", 32, _CIFAR_TAPS)(_cifar((3, 3, 3)))
register("resnet56", 32, _CIFAR_TAPS)(_cifar((9, 9, 9)))
register("resnet110", 32, _CIFAR_TAPS)(_cifar((18, 18, 18)))


@register("digits_resnet", 16, _CIFAR_TAPS)
def digits_resnet(num_classes: int = 10, in_channels: int = 1, width: float = 1.0) -> nn.Module:
    """The bundled default: one residual block per stage, widths 16/32/64, for 1x16x16 digits."""
    return CifarResNet((1, 1, 1), num_classes=num_classes, in_channels=in_channels, width=width)


# Models built here accept any ``in_channels``; torchvision classifiers take RGB only.
_FLEXIBLE_INPUT = {"resnet20", "resnet56", "resnet110", "digits_resnet"}


def model_in_channels(name: str) -> int | None:
    """Input channels a model requires (3 for torchvision classifiers), or None if it takes
    ``in_channels=`` and adapts to the data."""
    if name not in _REGISTRY:
        raise _unknown(name)
    return None if name in _FLEXIBLE_INPUT else 3


def model_has_width(name: str) -> bool:
    """Whether ``build_model(name, width=...)`` accepts a channel multiplier other than 1.0."""
    if name not in _REGISTRY:
        raise _unknown(name)
    return name in _FLEXIBLE_INPUT or name in _TV_WIDTH


def models_with_width() -> list[str]:
    """Registered models that take a channel multiplier ``width``, sorted."""
    return sorted(n for n in _REGISTRY if model_has_width(n))


def _unknown(name: str) -> UnknownNameError:
    return UnknownNameError(f"unknown model {name!r}; valid models: {', '.join(sorted(_REGISTRY))}")


def build_model(name: str, num_classes: int = 1000, **kwargs) -> nn.Module:
    """Build a dense, randomly initialised model by registry name.

    Common kwargs: ``width`` (channel multiplier, see :func:`models_with_width`; the mobilenets and
    efficientnet_b0 map it to torchvision's ``width_mult``),
    ``in_channels`` (only for models where :func:`model_in_channels` is None)."""
    if name not in _REGISTRY:
        raise _unknown(name)
    return _REGISTRY[name](num_classes=num_classes, **kwargs)


def model_input_size(name: str) -> int:
    """Default square input resolution (pixels) of a registered model."""
    if name not in _INPUT_SIZE:
        raise _unknown(name)
    return _INPUT_SIZE[name]


def default_taps(name: str) -> list[str]:
    """Module names whose outputs inner distillation compares by default (stage outputs)."""
    if name not in _TAPS:
        raise _unknown(name)
    return list(_TAPS[name])


def __getattr__(attr: str):
    if attr == "MODEL_NAMES":
        return sorted(_REGISTRY)
    raise AttributeError(attr)
