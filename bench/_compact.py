"""Small-input parents for the paired benchmarks: a torchvision architecture built as the from-scratch
baselines build it (``kpid_core.baseline.build_compact``: stem adapted to the data's channels, stride 1
below 64 px), at full width, so that it can be trained as a teacher and pruned to a baseline's MACs.

Use as a model factory: ``--set model=bench._compact:mobilenet_v3_large``, with ``distill.taps`` set to
the torchvision model's, ``kpid_core.models.default_taps("mobilenet_v3_large")`` (a factory has none; the
compact build keeps torchvision's module names).
"""

from __future__ import annotations

from torch import nn

__all__ = ["mobilenet_v3_large"]


def mobilenet_v3_large(num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
                       width: float = 1.0) -> nn.Module:
    """MobileNetV3-Large for ``image_size``-pixel images with ``in_channels`` channels.

    Args:
        num_classes: classifier outputs.
        in_channels: image channels.
        image_size: image side (below 64 px the stem keeps stride 1).
        width: torchvision's width multiplier.

    Returns:
        The randomly initialised network.
    """
    from kpid_core.baseline import build_compact

    return build_compact("mobilenet_v3_large", float(width), (in_channels, image_size, image_size), num_classes)
