"""Channel groups (channels that must be removed together) and an exact MAC model over them.

Groups come from torch-pruning's ``DependencyGraph`` traced on the real model — no per-architecture
rules: residual additions tie the channels of a whole stage, depthwise convs tie their input and
output, squeeze-excitation convs join the group of the channels they gate. The final classifier's
output (the logits) is never pruned.

A grouped conv (G > 1 groups, not depthwise) and a GroupNorm split their channels into equal blocks
that must stay equal: their groups are pruned in *units*, the channels at one position of every
block (``ChannelGroup.units``), as torch-pruning's own pruners do for grouped convs. A group's
``size``, its scores and its kept indices then count units.

The MAC model: for every conv/linear call L, ``MACs_L = coef_L · cin_L / groups_L · cout_L`` where
``cin_L / groups_L`` and ``cout_L`` are affine in the kept counts ``k`` of the groups (the input
image and the logits are fixed; a depthwise conv has ``cin/groups == 1``; a kept unit adds one input
channel per block to a grouped conv). ``ChannelGroups.macs(k)`` is therefore an exact quadratic in
``k`` and equals ``count_macs`` of the physically pruned model.

The tensor ops the tracing forward rewrites or records (channel shuffles, ECA, channel splits and
slices) are in :mod:`kpid_core.engine.channel_mix`; how one group of torch-pruning's graph becomes
:class:`ChannelGroup` s (members, units, ties, sections) is :mod:`kpid_core.engine.channel_group`.
This module re-exports ``ChannelGroup``, ``GroupMember`` and ``is_depthwise`` from there.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from kpid_core.engine.channel_group import ChannelGroup, GroupMember, Traced, channel_groups, is_depthwise
from kpid_core.engine.channel_mix import ChannelMixTracer, refuse_channel_slices
from kpid_core.engine.macs import LayerMACs, trace_layers
from kpid_core.engine.splits import SplitRecord, fix_split_mappings, split_attributes
from kpid_core.engine.tp_guards import IndexBlowUp, bounded_index_maps, recording_ties
from kpid_core.errors import ConfigError, UnsupportedModelError

__all__ = ["ChannelGroup", "ChannelGroups", "GroupMember", "execution_order", "find_groups", "is_depthwise"]

def execution_order(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    """Names of leaf modules in the order a forward pass first calls them."""
    return trace_layers(model, tuple(example_input.shape[1:]))[1]


class ChannelGroups:
    """All prunable groups of one traced model plus the exact MAC model over their kept counts.

    ``kept`` arguments are either an array of kept counts (one per group, in ``groups`` order) or a
    mapping ``group_key -> count or list of kept indices``.
    """

    def __init__(self, model: nn.Module, dg: Any, groups: list[ChannelGroup], layers: list[LayerMACs],
                 input_shape: tuple[int, ...], classifier: str | None, order: list[str],
                 whole: dict[str, list[str]] | None = None, splits: list[SplitRecord] | None = None):
        self.model = model
        # channel splits whose sizes a module attribute holds (surgery updates it)
        self.splits = list(splits or [])
        # operations that keep channels unpruned -> the root modules of the groups they keep whole
        self.whole = dict(whole or {})
        self.dg = dg
        self.groups = groups
        self.layers = layers
        self.input_shape = input_shape
        self.classifier = classifier
        self.execution_order = order
        self.by_key = {g.key: g for g in groups}
        self.sizes = np.array([g.size for g in groups], dtype=np.int64)
        # root channels per unit of each group (0: units of different sizes)
        self.unit_channels = np.array([1 if g.units is None else len(g.units[0]) * all(
            len(u) == len(g.units[0]) for u in g.units) for g in groups], dtype=np.int64)
        self._build_mac_model()

    # ---- MAC model -------------------------------------------------------------------------
    def _build_mac_model(self) -> None:
        n_l, n_g = len(self.layers), len(self.groups)
        A = np.zeros((n_l, n_g), dtype=np.int64)   # in-channel multiplicity per group
        B = np.zeros((n_l, n_g), dtype=np.int64)   # out-channel multiplicity per group
        rows_of: dict[str, list[int]] = {}
        for i, layer in enumerate(self.layers):
            rows_of.setdefault(layer.name, []).append(i)
        for gi, g in enumerate(self.groups):
            for mem in g.members:
                for i in rows_of.get(mem.module, []):
                    mult = len(mem.idxs) // g.size
                    lay = self.layers[i]
                    if mem.dim == "out":
                        B[i, gi] += mult
                    elif lay.groups == 1:
                        A[i, gi] += mult
                    elif lay.groups != lay.in_channels:  # grouped: a unit holds one channel per block
                        A[i, gi] += mult // lay.groups
                    # (depthwise: cin/groups stays 1)
        cin = np.array([lay.in_channels // lay.groups for lay in self.layers], dtype=np.int64)
        cout = np.array([lay.out_channels for lay in self.layers], dtype=np.int64)
        self.coef = np.array([lay.coef for lay in self.layers], dtype=np.int64)
        self.A, self.B = A, B
        self.A0 = cin - A @ self.sizes
        self.B0 = cout - B @ self.sizes

    def counts(self, kept: Any) -> np.ndarray:
        """Kept counts as an int array in group order (from an array or a key mapping)."""
        if isinstance(kept, Mapping):
            out = self.sizes.copy()
            for key, v in kept.items():
                g = self.by_key.get(key)
                if g is None:
                    raise ConfigError(f"kept: unknown group key {key!r}")
                out[g.index] = v if isinstance(v, (int, np.integer)) else len(v)
            return out
        k = np.asarray(kept, dtype=np.int64)
        if k.shape != self.sizes.shape:
            raise ConfigError(f"kept: expected {len(self.sizes)} counts, got shape {k.shape}")
        return k

    def channels(self, kept: Any) -> tuple[np.ndarray, np.ndarray]:
        """(cin/groups, cout) per layer call at kept counts."""
        k = self.counts(kept)
        return self.A0 + self.A @ k, self.B0 + self.B @ k

    def macs(self, kept: Any = None) -> int:
        """Exact MACs (one image) of the model pruned to ``kept`` (None = dense)."""
        k = self.sizes if kept is None else self.counts(kept)
        cin, cout = self.channels(k)
        return int(np.sum(self.coef * cin * cout))

    def marginal_costs(self, kept: Any = None) -> np.ndarray:
        """∂MACs/∂k_g at ``kept`` (float array, MACs per channel)."""
        k = self.sizes if kept is None else self.counts(kept)
        cin, cout = self.channels(k)
        return (self.A.T @ (self.coef * cout) + self.B.T @ (self.coef * cin)).astype(np.float64)

    def removal_costs(self, kept: Any) -> np.ndarray:
        """Exact MACs saved by removing one more channel from each group: M(k) − M(k − e_g)."""
        k = self.counts(kept)
        cin, cout = self.channels(k)
        lin = self.A.T @ (self.coef * cout) + self.B.T @ (self.coef * cin)
        return lin - (self.A * self.B).T @ self.coef

    def addition_costs(self, kept: Any) -> np.ndarray:
        """Exact MACs added by keeping one more channel in each group: M(k + e_g) − M(k)."""
        k = self.counts(kept)
        cin, cout = self.channels(k)
        lin = self.A.T @ (self.coef * cout) + self.B.T @ (self.coef * cin)
        return lin + (self.A * self.B).T @ self.coef

    def __len__(self) -> int:
        return len(self.groups)

    def __iter__(self):
        return iter(self.groups)

    def keys(self) -> list[str]:
        return [g.key for g in self.groups]


def _resolve_ignored(model: nn.Module, ignored: Iterable[Any] | None) -> list[nn.Module]:
    mods = dict(model.named_modules())
    out = []
    for item in ignored or []:
        if isinstance(item, str):
            if item not in mods:
                raise ConfigError(f"ignored_layers: no module named {item!r} in the model")
            out.append(mods[item])
        elif isinstance(item, nn.Module):
            out.append(item)
        else:
            raise ConfigError(f"ignored_layers: expected module names or modules, got {type(item).__name__}")
    return out


def _to_input(example_input: Any) -> torch.Tensor:
    if isinstance(example_input, torch.Tensor):
        return example_input
    if isinstance(example_input, Sequence) and all(isinstance(s, int) for s in example_input):
        return torch.zeros(1, *example_input)
    raise ConfigError("example_input: expected a tensor of shape (1, C, H, W) or a (C, H, W) shape tuple")


def find_groups(model: nn.Module, example_input: Any, ignored_layers: Iterable[Any] | None = None
                ) -> ChannelGroups:
    """Trace ``model`` with torch-pruning and return its prunable channel groups + MAC model.

    The returned object is bound to ``model`` (its dependency graph references the modules), so
    prune a copy if the original must survive. Groups through a grouped conv or a GroupNorm prune
    in units that keep every block the same size (see the module docstring). A ``torch.split`` whose
    sizes a module attribute holds prunes section by section and a static slice ``x[:, a:b]`` prunes
    the channels its bounds do not count (:mod:`kpid_core.engine.splits`); root channels torch-pruning
    ties through a concatenation (GhostNet) prune as one unit. Groups touching a grouped transposed
    conv, any other channel split (``chunk``, sizes computed in ``forward``) or a channel shuffle (a
    view that splits or merges the channel dim, ``channel_shuffle``) or a channel attention that
    convolves across the channels (ECA) are left unpruned: torch-pruning 1.6 cannot shrink those
    consistently. So
    ShuffleNetV2 prunes its stem, every branch's inner channels and its head conv, and keeps the
    shuffled channels between blocks whole; an ECA-ResNet keeps the channels its ECA gates whole.

    Args:
        model: the network (traced in eval mode; its train/eval mode and ``requires_grad`` flags
            are restored afterwards).
        example_input: a ``(1, C, H, W)`` tensor or a ``(C, H, W)`` shape tuple.
        ignored_layers: modules (or their names) whose output channels are never pruned; the final
            classifier is always added.

    Returns:
        The :class:`ChannelGroups` of ``model``.

    Raises:
        UnsupportedModelError: torch-pruning cannot trace the model's channel dependencies.
    """
    x = _to_input(example_input)
    p = next(iter(model.parameters()), None)
    if p is not None:
        x = x.to(p.device)
    input_shape = tuple(int(s) for s in x.shape[1:])
    layers, order = trace_layers(model, input_shape)
    classifier = layers[-1].name if layers else None
    modules = dict(model.named_modules())
    ignored = _resolve_ignored(model, ignored_layers)
    if classifier is not None:
        ignored.append(modules[classifier])
    dg, raw, traced = _trace_dependencies(model, x, ignored)
    names = {m: n for n, m in model.named_modules()}
    groups: list[ChannelGroup] = []
    whole: dict[str, list[str]] = {}  # why groups stay unpruned -> the root modules of those groups
    for grp in raw:
        found, reasons = channel_groups(grp, dg, names, traced)
        for reason in reasons:
            whole.setdefault(reason, []).append(names.get(grp[0].dep.target.module, "?"))
        for group in found:
            base, n = group.key, 1
            while group.key in {g.key for g in groups}:  # sections of one root's channels
                group.key, n = f"{base}#{n}", n + 1
            group.index = len(groups)
            groups.append(group)
    owned = [r for r in traced.splits.values() if r.owner is not None]
    return ChannelGroups(model, dg, groups, layers, input_shape, classifier, order, whole, owned)


def _trace_dependencies(model: nn.Module, x: torch.Tensor, ignored: list[nn.Module]
                        ) -> tuple[Any, list[Any], Traced]:
    """torch-pruning's dependency graph of ``model``, its raw groups (outside ``ignored``) and what
    the tracing forward recorded (:class:`Traced`)."""
    import torch_pruning as tp

    tracer = ChannelMixTracer(split_attributes(model))

    def forward(net: nn.Module, inp: torch.Tensor) -> Any:
        with tracer:
            return net(inp)

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad():  # tracing relies on autograd
            # frozen weights (requires_grad=False) leave no autograd graph to trace: unfreeze
            # while tracing, then restore every flag
            frozen = [p for p in model.parameters() if not p.requires_grad]
            for p in frozen:
                p.requires_grad_(True)
            try:
                dg = tp.DependencyGraph().build_dependency(model, example_inputs=x.clone(), forward_fn=forward,
                                                           verbose=False)
                splits = fix_split_mappings(dg, tracer.splits)
                refuse_channel_slices(model, dg)
                mixing = {op for op, node in dg.module2node.items() if node.grad_fn in tracer.regroups}
                with recording_ties(), bounded_index_maps():
                    raw = list(_all_groups(dg, ignored) if splits else dg.get_all_groups(ignored_layers=ignored))
                return dg, raw, Traced(mixing, splits)
            except IndexBlowUp as exc:
                raise UnsupportedModelError(
                    f"model {type(model).__name__} cannot be pruned: torch-pruning cannot trace its channel "
                    f"dependencies: its reshapes map channels onto more than {exc.args[0]:,} indices, a "
                    "cycle through views that mix channels with positions (e.g. global-context or lambda "
                    "attention)") from None
            except (ArithmeticError, IndexError, KeyError, AttributeError, TypeError) as exc:
                raise _untraceable(model, exc) from None
            finally:
                for p in frozen:
                    p.requires_grad_(False)
    finally:
        model.train(was_training)


def _all_groups(dg: Any, ignored: list[nn.Module]) -> Iterable[Any]:
    """torch-pruning's ``get_all_groups``, except that a conv/linear whose output channels earlier
    groups cover only in part roots a group over the rest: through a split or slice, part of a
    layer's outputs may join a residual (ReXNet's ``x[:, 0:c] + shortcut``) while the rest is free,
    and torch-pruning never roots a layer it has met in any group."""
    covered: dict[Any, set[int]] = {}
    ignored = list(ignored) + list(dg.IGNORED_LAYERS_IN_TRACING)
    for m in list(dg.module2node):
        if m in ignored or not isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
            continue
        pruner = dg.get_pruner_of_module(m)
        n = None if pruner is None else pruner.get_out_channels(m)
        left = [i for i in range(n or 0) if i not in covered.get(m, ())]
        if not left:
            continue
        group = dg.get_pruning_group(m, pruner.prune_out_channels, left)
        prunable = True
        for item in group:
            if dg.is_out_channel_pruning_fn(item.dep.handler):
                covered.setdefault(item.dep.target.module, set()).update(int(i) for i in item.idxs)
                prunable = prunable and item.dep.target.module not in ignored
        if prunable:
            yield group


def _untraceable(model: nn.Module, exc: BaseException) -> UnsupportedModelError:
    """The error for a model torch-pruning failed to trace, naming the operation it failed in."""
    where = exc.__traceback__
    while where.tb_next is not None:
        where = where.tb_next
    op = where.tb_frame.f_code.co_name
    hint = "; a reshape that mixes channels" if "reshape" in op else ""
    return UnsupportedModelError(
        f"model {type(model).__name__} cannot be pruned: torch-pruning cannot trace its channel "
        f"dependencies ({type(exc).__name__} in {op}{hint})")
