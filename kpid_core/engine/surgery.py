"""Physical pruning: remove the channels an allocation drops, with torch-pruning, and record which
teacher channels every module keeps (the map that inner distillation and the spec need)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kpid_core.engine.groups import ChannelGroups, is_depthwise
from kpid_core.engine.splits import updated_split_sizes

__all__ = ["remove_channels"]


def _dim_sizes(m: nn.Module) -> tuple[int, int] | None:
    """(out, in) channel counts of a module with channel dims, else None."""
    if isinstance(m, nn.modules.conv._ConvNd):
        return m.out_channels, m.in_channels
    if isinstance(m, nn.Linear):
        return m.out_features, m.in_features
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return m.num_features, m.num_features
    if isinstance(m, nn.LayerNorm):
        return int(m.normalized_shape[-1]), int(m.normalized_shape[-1])
    if isinstance(m, nn.GroupNorm):
        return m.num_channels, m.num_channels
    if isinstance(m, nn.PReLU) and m.num_parameters > 1:
        return m.num_parameters, m.num_parameters
    return None


def _channel_map(groups: ChannelGroups, kept: dict[str, list[int]], dense_sizes: dict[str, tuple[int, int]],
                 tied: set[str]) -> dict[str, dict[str, list[int]]]:
    """Teacher indices kept per module dim. ``tied``: modules whose input channels are their output
    channels (depthwise convs, norms), so a removal on one dim is a removal on both."""
    removed: dict[str, dict[str, set[int]]] = {}
    for g in groups:
        keep = set(kept[g.key])
        for mem in g.members:
            gone = {i for i, r in zip(mem.idxs, mem.root_idxs) if r not in keep}
            if gone and mem.module in dense_sizes:
                removed.setdefault(mem.module, {"out": set(), "in": set()})[mem.dim] |= gone
    cmap = {}
    for name, dims in removed.items():
        n_out, n_in = dense_sizes[name]
        if name in tied:
            dims["in"] = dims["out"] = dims["in"] | dims["out"]
        cmap[name] = {"out": [i for i in range(n_out) if i not in dims["out"]],
                      "in": [i for i in range(n_in) if i not in dims["in"]]}
    return cmap


def remove_channels(model: nn.Module, groups: ChannelGroups, kept: dict[str, list[int]]
                    ) -> tuple[dict[str, dict[str, list[int]]], dict[str, tuple[int, int]]]:
    """Remove, in place, every channel of ``model`` that ``kept`` does not keep.

    Args:
        model: the model ``groups`` was traced from; modified in place.
        groups: its channel groups (their dependency graph does the removal).
        kept: ``group_key -> kept unit indices`` (channels, or the tied channels of a grouped conv's
            blocks: :attr:`~kpid_core.engine.groups.ChannelGroup.units`), as from
            :func:`kpid_core.engine.allocation.allocate`.

    Returns:
        ``(channel_map, dense_sizes)``: ``channel_map[module] = {"out": [...], "in": [...]}``, the
        teacher indices kept on each dim of every module that lost channels; ``dense_sizes[module] =
        (out, in)``, the channel counts before removal of every module with channel dims.
    """
    modules = dict(model.named_modules())
    dense_sizes = {n: s for n, m in modules.items() if (s := _dim_sizes(m)) is not None}
    tied = {n for n, m in modules.items() if _dim_sizes(m) is not None and (
        not isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) or is_depthwise(m))}
    cmap = _channel_map(groups, kept, dense_sizes, tied)

    # the sections of one root's channels (kpid_core.engine.splits) are separate groups: cut each root once,
    # as its channel indices shift with every cut
    drops: dict[int, tuple[Any, Any, set[int], dict[Any, set[int]]]] = {}
    for g in groups:
        keep = set(kept[g.key])
        drop = set(g.root_channels(i for i in range(g.size) if i not in keep))  # units -> root channels
        _, _, root_drop, cuts = drops.setdefault(id(g.root), (g.root, g.prune_fn, set(), {}))
        root_drop.update(drop)
        for rec, idxs, roots in g.sections:  # the split's input channels this cut removes
            cuts.setdefault(rec, set()).update(i for i, r in zip(idxs, roots) if r in drop)
    for root, fn, drop, cuts in drops.values():
        if drop:
            groups.dg.get_pruning_group(root, fn, sorted(drop)).prune(record_history=False)
        for rec, gone in cuts.items():
            rec.cut(gone)
    updated_split_sizes(model, groups.splits)
    _cut_own_state(modules, cmap, dense_sizes)
    return cmap, dense_sizes


def _cut_own_state(modules: dict[str, nn.Module], cmap: dict[str, dict[str, list[int]]],
                   dense_sizes: dict[str, tuple[int, int]]) -> None:
    """Cut the per-output-channel tensors that a conv/linear subclass adds to ``weight``/``bias``
    (timm's ``ScaledStdConv2d`` gain, shape ``(out, 1, 1, 1)``) like its outputs: torch-pruning
    resizes only the weight and bias, and the forward then fails on the stale size."""
    for name, dims in cmap.items():
        m = modules[name]
        n_out = dense_sizes[name][0]
        if not isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) or len(dims["out"]) == n_out:
            continue
        for pname, t in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False)):
            if pname in ("weight", "bias") or t is None or t.dim() == 0 or t.shape[0] != n_out:
                continue
            cut = t.detach().index_select(0, torch.tensor(dims["out"], device=t.device))
            if isinstance(t, nn.Parameter):
                setattr(m, pname, nn.Parameter(cut, requires_grad=t.requires_grad))
            else:
                m._buffers[pname] = cut
