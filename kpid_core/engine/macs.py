"""MAC counting in torchvision's convention.

MACs are the multiply-accumulates of convolution (any dimensionality, ``groups`` respected) and
linear layers only, for ONE input image; batch norm, activations, pooling and element-wise adds
are not counted. torchvision's weights metadata ``_ops`` (GMACs) uses the same convention, so
``count_macs(resnet50) / 1e9`` reproduces its 4.089.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

__all__ = ["LayerMACs", "count_macs", "count_params", "format_count", "layer_macs", "macs_breakdown", "trace_layers"]


@dataclass(frozen=True)
class LayerMACs:
    """One conv/linear layer's share of the MACs for one image.

    ``kernel`` is the kernel size (empty for Linear); ``output_hw`` the spatial size of the output
    (for Linear: the leading non-feature dims, e.g. ``()`` for a plain 2-D input); ``coef`` the
    factor such that ``macs == coef * (in_channels // groups) * out_channels``.
    """

    name: str
    type: str
    in_channels: int
    out_channels: int
    groups: int
    kernel: tuple[int, ...]
    output_hw: tuple[int, ...]
    coef: int
    macs: int

    def to_dict(self) -> dict:
        return asdict(self)


def layer_macs(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> tuple[int, tuple, tuple] | None:
    """``(coef, kernel, output_hw)`` of a conv/linear call on a batch, or None for other modules.

    ``coef`` counts per image: MACs = coef · (in_channels / groups) · out_channels.

    Args:
        module: the called module.
        inp: its input tensor (batch first).
        out: its output tensor.

    Returns:
        ``(coef, kernel size, output spatial size)`` for a conv or linear layer, else None.
    """
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = tuple(int(k) for k in module.kernel_size)
        k = 1
        for v in kernel:
            k *= v
        if module.transposed:
            # each input position scatters a kernel into every output channel of its group
            spatial = tuple(int(s) for s in inp.shape[2:])
        else:
            spatial = tuple(int(s) for s in out.shape[2:])
        n = 1
        for v in spatial:
            n *= v
        return n * k, kernel, tuple(int(s) for s in out.shape[2:])
    if isinstance(module, nn.Linear):
        lead = tuple(int(s) for s in out.shape[1:-1])
        n = 1
        for v in lead:
            n *= v
        return n, (), lead
    return None


def _channels(module: nn.Module) -> tuple[int, int, int]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features, 1
    return module.in_channels, module.out_channels, module.groups


def _input_for(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 4:  # (1, C, H, W), as prune_to_budget takes it: MACs are per image anyway
        shape = shape[1:]
    p = next(iter(model.parameters()), None)
    device = p.device if p is not None else torch.device("cpu")
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    return torch.zeros((1, *shape), device=device, dtype=dtype)


def macs_breakdown(model: nn.Module, input_shape: Sequence[int] = (3, 224, 224)) -> list[LayerMACs]:
    """Per-layer MACs for one image of shape ``input_shape`` ((C, H, W) or (1, C, H, W)), in execution order.

    A layer called several times (weight sharing) appears once per call.

    Args:
        model: any module (run once in eval mode, without gradients).
        input_shape: (C, H, W), or (1, C, H, W).

    Returns:
        One :class:`LayerMACs` per conv/linear call.
    """
    return trace_layers(model, input_shape)[0]


def trace_layers(model: nn.Module, input_shape: Sequence[int]) -> tuple[list[LayerMACs], list[str]]:
    """One eval-mode forward of a single image (the model's train/eval mode is restored).

    Args:
        model: any module.
        input_shape: (C, H, W), or (1, C, H, W).

    Returns:
        ``(per-call conv/linear MACs, names of the leaf modules in the order they first run)``.
    """
    rows: list[LayerMACs] = []
    order: list[str] = []
    seen: set[str] = set()

    def hook(module, inputs, output, name):
        if name not in seen:
            seen.add(name)
            order.append(name)
        if not isinstance(output, torch.Tensor) or not inputs or not isinstance(inputs[0], torch.Tensor):
            return
        info = layer_macs(module, inputs[0], output)
        if info is None:
            return
        coef, kernel, hw = info
        cin, cout, groups = _channels(module)
        rows.append(LayerMACs(name, type(module).__name__, cin, cout, groups, kernel, hw, coef,
                              coef * (cin // groups) * cout))

    handles = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) or (name and next(m.children(), None) is None):
            handles.append(m.register_forward_hook(lambda mod, i, o, name=name: hook(mod, i, o, name)))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(_input_for(model, input_shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return rows, order


def count_macs(model: nn.Module, input_shape: Sequence[int] = (3, 224, 224)) -> int:
    """Multiply-accumulates of conv and linear layers for one image.

    Args:
        model: any module (run once in eval mode, without gradients).
        input_shape: (C, H, W), or (1, C, H, W) as :func:`~kpid_core.prune.prune_to_budget` takes it.

    Returns:
        MACs for one image.
    """
    return int(sum(r.macs for r in macs_breakdown(model, input_shape)))


def count_params(model: nn.Module) -> int:
    """Number of parameters (each shared tensor counted once).

    Args:
        model: any module.

    Returns:
        The count of scalar parameters.
    """
    return int(sum(p.numel() for p in model.parameters()))


def format_count(n: float, unit: str = "") -> str:
    """Human units: 4089184256 → '4.09 G'.

    Args:
        n: the number.
        unit: appended after the prefix (e.g. ``"MACs"``).

    Returns:
        Three significant digits with a K/M/G/T prefix.
    """
    for div, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.3g} {prefix}{unit}"
    return f"{n:.0f} {unit}".rstrip()
