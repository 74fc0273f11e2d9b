"""Tensor ops that regroup or split channels, seen during torch-pruning's tracing forward.

torch-pruning traces a model's channel dependencies through autograd, and some tensor ops reach it
as something else: a view that splits or merges the channel dim (ShuffleNetV2's channel shuffle), a
view that lays the channels along a ``Conv1d``'s length (ECA's channel attention), a ``chunk`` of
such a regroup, a static channel slice ``x[:, a:b]``, a ``torch.split`` by a sizes list a module
holds. :class:`ChannelMixTracer`, a ``TorchFunctionMode`` active during that forward, turns each
into an op torch-pruning traces consistently and records it (the regroups it made, and every
channel split as a :class:`~kpid_core.engine.splits.SplitRecord`); :func:`refuse_channel_slices`
refuses the slices it could not turn into a split. :mod:`kpid_core.engine.groups` uses both.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kpid_core.engine.splits import SplitRecord, channel_slice
from kpid_core.errors import UnsupportedModelError

__all__ = ["ChannelMixTracer", "refuse_channel_slices"]

_VIEW_FUNCS = (torch.Tensor.view, torch.Tensor.reshape, torch.reshape, torch.Tensor.unflatten, torch.unflatten,
               torch.Tensor.flatten, torch.flatten)
_CHUNK_FUNCS = (torch.Tensor.chunk, torch.chunk, torch.Tensor.split, torch.split)
# ops that permute channels in one call (nn.ChannelShuffle): torch-pruning maps them one to one
_SHUFFLE_FUNCS = (torch.nn.functional.channel_shuffle, torch.channel_shuffle, torch.native_channel_shuffle)


def _regroups_channels(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the view ``a -> b`` splits the channel dim in two (``(N, C, *S) -> (N, g, C/g, *S)``)
    or merges two dims into channels (the reverse), as a channel shuffle does around its transpose."""
    if a.dim() > b.dim():
        a, b = b, a
    return (a.dim() >= 3 and b.dim() == a.dim() + 1 and b.shape[0] == a.shape[0] and b.shape[1] > 1
            and b.shape[2] > 1 and b.shape[3:] == a.shape[2:])


def _channels_along_length(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the view ``a -> b`` lays the channels out along a 1-D length (``(N, C)`` or
    ``(N, C, 1, 1)`` -> ``(N, 1, C)``), or back: ECA's channel attention (timm's ``EcaModule``,
    ``CecaModule``) runs a ``Conv1d`` across the channels that way, so each channel's gate depends on
    its neighbours. torch-pruning maps such a view as a flatten of stride C, which makes one
    channel of the ``Conv1d`` stand for all C, and its group search then builds C × C indices per
    pass (minutes for timm's ecaresnet26t, whose C reaches 2048)."""
    if a.dim() == 3:
        a, b = b, a
    return (b.dim() == 3 and b.shape[1] == 1 and b.shape[2] > 1 and a.dim() >= 2 and a.shape[0] == b.shape[0]
            and a.shape[1] == b.shape[2] and all(s == 1 for s in a.shape[2:]))


class _ChannelRegroup(torch.autograd.Function):
    """One tensor op that reorders channels (``op(x)``), as one autograd node that torch-pruning
    traces as element-wise (its name holds none of the words torch-pruning maps to
    reshape/split/concat handling); the groups that reach it are left unpruned."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, op: Any) -> torch.Tensor:
        ctx.op = op
        ctx.save_for_backward(x)
        return op(x).clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            xx = x.detach().requires_grad_(True)
            return torch.autograd.grad(ctx.op(xx), xx, grad)[0], None


class ChannelMixTracer(torch.overrides.TorchFunctionMode):
    """During torch-pruning's tracing forward: every view that regroups channels (ShuffleNetV2's
    channel shuffle: ``view(N, g, C/g, H, W)``, ``transpose``, ``view(N, C, H, W)``), every view
    that lays the channels along a ``Conv1d``'s length and back (ECA's channel attention, see
    :func:`_channels_along_length`) and every ``channel_shuffle`` call (``nn.ChannelShuffle``)
    becomes a :class:`_ChannelRegroup`, recorded in ``regroups`` (its ``grad_fn``); a channel split
    of a regroup's output (``chunk``/``split`` on dim 1, ShuffleNetV2's next block) becomes ``split``
    with explicit sizes, which torch-pruning reads from the graph (for ``chunk`` it infers them
    through the graph, and fails past a regroup). Other splits are traced as before, so every
    model without a regroup traces exactly as without this mode. Values are unchanged."""

    def __init__(self, owners: dict[int, tuple[str, str]] | None = None):
        super().__init__()
        self.regroups: set[Any] = set()
        self.owners = owners or {}
        self.splits: dict[Any, SplitRecord] = {}  # grad_fn of a split's outputs -> its record

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not (args and isinstance(args[0], torch.Tensor) and args[0].requires_grad):
            return out
        x = args[0]
        if isinstance(out, torch.Tensor) and (func in _SHUFFLE_FUNCS or (func in _VIEW_FUNCS and (
                _regroups_channels(x, out) or _channels_along_length(x, out)))):
            out = _ChannelRegroup.apply(x, lambda t, f=func, a=args[1:], k=kwargs or {}: f(t, *a, **k))
            self.regroups.add(out.grad_fn)
        elif (func in _CHUNK_FUNCS and x.grad_fn in self.regroups and isinstance(out, (tuple, list))
              and len(out) > 1 and all(o.shape[0] == x.shape[0] and o.shape[2:] == x.shape[2:] for o in out)):
            out = torch.split(x, [int(o.shape[1]) for o in out], dim=1)
        elif func is torch.Tensor.__getitem__ and (cut := channel_slice(x, args[1])) is not None:
            sizes, pos, tail = cut
            out = torch.split(x, sizes, dim=1)[pos]
            self.splits[out.grad_fn] = SplitRecord(sizes, pos=pos, tail=tail)
        elif func in (torch.split, torch.Tensor.split) and isinstance(out, (tuple, list)) and len(out) > 1:
            self._record_split(x, out, args, kwargs or {})
        return out

    def _record_split(self, x: torch.Tensor, out: Any, args: tuple, kwargs: dict) -> None:
        """Record ``torch.split(x, sizes, 1)`` by a sizes list that one module attribute holds."""
        sizes = args[1] if len(args) > 1 else kwargs.get("split_size_or_sections", kwargs.get("split_size"))
        dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
        if isinstance(sizes, (list, tuple)) and isinstance(dim, int) and dim % x.dim() == 1 and x.dim() >= 4:
            self.splits[out[0].grad_fn] = SplitRecord([int(s) for s in sizes], owner=self.owners.get(id(sizes)))


def refuse_channel_slices(model: nn.Module, dg: Any) -> None:
    """Refuse a model that slices its channels in a way the tracer did not turn into a split
    (:func:`kpid_core.engine.splits.channel_slice`: a unit-step ``x[:, a:b]`` of a feature map prunes): a
    strided slice, or one of another kind of tensor; its bounds live in its code, and
    torch-pruning's group search through such slices can run for many minutes."""
    for node in dg.module2node.values():
        op = node.module
        if type(op).__name__ == "_SliceOp" and getattr(op, "dim", None) == 1:
            end = "" if op.end is None or op.end >= 1 << 62 else op.end
            step = f":{op.step}" if op.step not in (None, 1) else ""
            raise UnsupportedModelError(
                f"model {type(model).__name__} cannot be pruned: it slices channels (x[:, {op.start}:{end}{step}]), "
                f"which channel pruning cannot resize")
