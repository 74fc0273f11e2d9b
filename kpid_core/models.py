"""Model registry: every architecture the project can build, by name.

A dense model must be rebuildable from ``(name, kwargs)`` alone: pruned-model specs store exactly
that, and ``load_pruned`` rebuilds the dense skeleton before resizing it.
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from kpid_core._tv import torchvision
from kpid_core.errors import UnknownNameError

__all__ = ["build_model", "register", "MODEL_NAMES", "model_input_size", "default_taps", "TORCHVISION_MODELS"]

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


def _tv_factory(name: str):
    def build(num_classes: int = 1000, **kw) -> nn.Module:
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kw)

    return build


def _tv_taps(name: str) -> list[str]:
    if name.startswith(("resnet", "wide_resnet")):
        return ["layer1", "layer2", "layer3", "layer4"]
    if name.startswith(("mobilenet", "efficientnet")):
        return []  # filled in by the model-family logic in default_taps
    return []


for _n in TORCHVISION_MODELS:
    register(_n, 224, _tv_taps(_n))(_tv_factory(_n))


def _unknown(name: str) -> UnknownNameError:
    return UnknownNameError(f"unknown model {name!r}; valid models: {', '.join(sorted(_REGISTRY))}")


def build_model(name: str, num_classes: int = 1000, **kwargs) -> nn.Module:
    """Build a dense, randomly initialised model by registry name."""
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
