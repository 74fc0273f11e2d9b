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
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from kpid_core.engine.macs import LayerMACs, trace_layers
from kpid_core.engine.splits import SplitRecord, channel_slice, fix_split_mappings, split_attributes
from kpid_core.errors import ConfigError, UnsupportedModelError

__all__ = ["ChannelGroup", "ChannelGroups", "GroupMember", "execution_order", "find_groups", "is_depthwise"]


@dataclass
class GroupMember:
    """One module dimension that a group's channels live on.

    ``idxs[j]`` is a channel index on that module's ``dim`` ("out" or "in") and ``root_idxs[j]`` the
    group channel it belongs to (several idxs may share a root, e.g. a Linear after a flatten).
    """

    module: str
    dim: str
    type: str
    idxs: list[int]
    root_idxs: list[int]


@dataclass
class ChannelGroup:
    """Channels removed together. ``key`` — the name of the first module (in ``named_modules``
    order) whose output channels the group holds — is stable across processes and builds."""

    key: str
    size: int
    members: list[GroupMember]
    index: int = 0
    root: Any = field(default=None, repr=False)        # the root nn.Module (traced model)
    prune_fn: Any = field(default=None, repr=False)    # torch-pruning handler of the root's out dim
    # units[u]: the root channels that unit u removes together (None: each unit is one channel)
    units: list[list[int]] | None = field(default=None, repr=False)
    # (split, its input channels, their root channels) for each owned split the channels pass
    sections: list[tuple[SplitRecord, list[int], list[int]]] = field(default_factory=list, repr=False)

    def modules(self, dim: str | None = None) -> list[str]:
        return [m.module for m in self.members if dim is None or m.dim == dim]

    def root_channels(self, units: Iterable[int]) -> list[int]:
        """The root module's channel indices of the given units (sorted).

        Args:
            units: unit indices of this group (what ``size``, scores and kept lists count).

        Returns:
            The channels those units hold on the group's root module.
        """
        if self.units is None:
            return sorted(int(u) for u in units)
        return sorted(c for u in units for c in self.units[int(u)])


def is_depthwise(m: nn.Module) -> bool:
    """Whether ``m`` is a depthwise conv: one filter per input channel, so its input channels are
    its output channels and a channel removed on one side is removed on both.

    Args:
        m: any module.

    Returns:
        True for a conv with ``groups == in_channels > 1``.
    """
    # torch's public Conv1d/2d/3d and their transposes share only this private base class
    return isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 and m.groups == m.in_channels


def _is_grouped(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 and not is_depthwise(m)


def _block_period(m: nn.Module, dim: str) -> int | None:
    """Channels per block on ``dim`` of a module that splits that dim into equal blocks whose sizes
    must stay equal: a grouped conv (``groups`` blocks on each side) or a GroupNorm. None otherwise
    (a depthwise conv ties its input to its output instead; torch-pruning handles that)."""
    if isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 and not (
            m.groups == m.in_channels == m.out_channels):
        return (m.out_channels if dim == "out" else m.in_channels) // m.groups
    if isinstance(m, nn.GroupNorm) and 1 < m.num_groups < m.num_channels:
        return m.num_channels // m.num_groups
    return None


# torch-pruning's stand-ins for channel-splitting tensor ops in a traced graph, and what they trace
_SPLIT_OPS = {"_SplitOp": "a channel split (torch.split/chunk)", "_UnbindOp": "a channel unbind",
              "_SliceOp": "a channel slice"}
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


class _ChannelMixTracer(torch.overrides.TorchFunctionMode):
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


def _refuse_channel_slices(model: nn.Module, dg: Any) -> None:
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


def _dim_size(m: nn.Module, dim: str) -> int:
    """Channels on ``dim`` ("out"/"in") of a module with channel dims (a large number otherwise)."""
    if isinstance(m, nn.modules.conv._ConvNd):
        return m.out_channels if dim == "out" else m.in_channels
    if isinstance(m, nn.Linear):
        return m.out_features if dim == "out" else m.in_features
    if isinstance(m, nn.GroupNorm):
        return m.num_channels
    w = getattr(m, "weight", None)
    return int(w.shape[0]) if isinstance(w, torch.Tensor) and w.dim() >= 1 else 1 << 62


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
        found, reasons = _channel_groups(grp, dg, names, traced)
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


@dataclass
class _Traced:
    """What the tracing forward found besides torch-pruning's graph: the graph's ops that regroup
    channels (see :class:`_ChannelMixTracer`) and its recorded channel splits (op -> record)."""

    mixing: set[Any]
    splits: dict[Any, SplitRecord]


def _trace_dependencies(model: nn.Module, x: torch.Tensor, ignored: list[nn.Module]
                        ) -> tuple[Any, list[Any], _Traced]:
    """torch-pruning's dependency graph of ``model``, its raw groups (outside ``ignored``) and what
    the tracing forward recorded (:class:`_Traced`)."""
    import torch_pruning as tp

    tracer = _ChannelMixTracer(split_attributes(model))

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
                _refuse_channel_slices(model, dg)
                mixing = {op for op, node in dg.module2node.items() if node.grad_fn in tracer.regroups}
                with _recording_ties():
                    raw = list(_all_groups(dg, ignored) if splits else dg.get_all_groups(ignored_layers=ignored))
                return dg, raw, _Traced(mixing, splits)
            except (ArithmeticError, IndexError, KeyError, AttributeError, TypeError) as exc:
                raise _untraceable(model, exc) from None
            finally:
                for p in frozen:
                    p.requires_grad_(False)
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _recording_ties():
    """While torch-pruning builds groups: record on each group (``_kpid_ties``) the pairs of root
    channels that reach one channel of a layer by different paths. Its group merge keeps the first
    root of such a channel and drops the other, and with it the fact that removing either root
    channel removes that channel (GhostNet's cheap depthwise conv ties the two halves of its
    concatenation); :func:`_tied_channels` puts them back together."""
    from torch_pruning.dependency.group import Group

    merge = Group.add_and_merge

    def add_and_merge(self, dep, idxs):
        for have, old in self._group:
            if have.target == dep.target and have.handler == dep.handler:
                first = {i.idx: i.root_idx for i in old}
                ties = self.__dict__.setdefault("_kpid_ties", [])
                ties.extend((first[i.idx], i.root_idx) for i in idxs if first.get(i.idx, i.root_idx) != i.root_idx)
                break
        return merge(self, dep, idxs)

    Group.add_and_merge = add_and_merge
    try:
        yield
    finally:
        Group.add_and_merge = merge


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


_PINNED = "a channel slice (x[:, a:b]) whose bounds are numbers in the code"


def _channel_groups(grp: Any, dg: Any, names: dict[nn.Module, str], traced: _Traced
                    ) -> tuple[list[ChannelGroup], list[str]]:
    """One torch-pruning group as :class:`ChannelGroup` s, one per class of its channels that
    every member sees alike (channels split into sections of different layers prune as separate
    groups), and the operations that keep channels whole (one phrase each)."""
    root_item = grp[0]
    root = root_item.dep.target.module
    key = names.get(root)
    size = len(root_item.idxs)
    # the root's channels this group holds (all of them, unless earlier groups hold some: _all_groups)
    chan = [int(i) for i in root_item.idxs]
    if key is None or size < 2:
        return [], []
    found = _group_members(grp, dg, names, {c: p for p, c in enumerate(chan)}, traced)
    if isinstance(found, str):
        return [], [found]
    members, periods, sections = found
    ties = list(getattr(grp, "_kpid_ties", ()))
    for item in grp:  # one channel of a layer listed once per root channel it comes from
        first: dict[int, int] = {}
        ties.extend((first.setdefault(int(i), int(r)), int(r)) for i, r in zip(item.idxs, item.root_idxs))
    atoms = _tied_channels([(a, b) for a, b in ties if a != b], chan)
    classes = _channel_classes(members, sections, atoms)
    if len(classes) > 1 and not sections and len(atoms) == size:
        # members that see the channels unevenly without a split or a tie that explains it
        return [], ["a concatenation or split that torch-pruning maps unevenly"]
    if len(atoms) < size and any(p is not None for p in periods):
        return [], ["grouped-conv or GroupNorm blocks that cannot be kept equal"]
    out, reasons = [], []
    for class_atoms, pinned in classes:
        if pinned:
            reasons.append(_PINNED)
            continue
        group = _class_group(class_atoms, chan, members, periods, sections, names, key)
        if isinstance(group, ChannelGroup):
            group.root, group.prune_fn = root, root_item.dep.handler
            out.append(group)
        elif group is not None:
            reasons.append(group)
    return out, sorted(set(reasons))


def _tied_channels(ties: Iterable[tuple[int, int]], chan: list[int]) -> list[list[int]]:
    """The group's root channels (positions in ``chan``) in atoms removed together: channels that
    one layer's channel is reached from (torch-pruning merges such paths and keeps one root, e.g.
    GhostNet's ``cat([x1, cheap(x1)])``, whose channels ``i`` and ``c + i`` come from one channel of
    ``x1``; :func:`_recording_ties`), else one channel each; ordered by first channel."""
    pos = {c: p for p, c in enumerate(chan)}
    parent = list(range(len(chan)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in ties:
        if a in pos and b in pos:
            parent[find(pos[a])] = find(pos[b])
    atoms: dict[int, list[int]] = {}
    for p in range(len(chan)):
        atoms.setdefault(find(p), []).append(p)
    return sorted(atoms.values(), key=lambda a: a[0])


def _channel_classes(members: list[GroupMember], sections: list[tuple[SplitRecord, list[int], list[int]]],
                     atoms: list[list[int]]) -> list[tuple[list[list[int]], bool]]:
    """The group's atoms (:func:`_tied_channels`) by how often each member sees them and whether a
    slice pins them: ``(atoms, pinned)`` per class, ordered by first channel. Within a class every
    member sees every atom equally often, so the MAC model is affine in the class's kept count."""
    size = sum(len(a) for a in atoms)
    seen = np.zeros((len(members) + 1, size), dtype=np.int64)
    for j, mem in enumerate(members):
        seen[j] = np.bincount(np.asarray(mem.root_idxs, dtype=np.int64), minlength=size)
    for rec, idxs, roots in sections:
        for i, r in zip(idxs, roots):
            if rec.pins(i):
                seen[-1, r] = 1
    per_atom = np.stack([seen[:, a].sum(axis=1) for a in atoms], axis=1)
    per_atom[-1] = per_atom[-1] > 0
    _, label = np.unique(per_atom.T, axis=0, return_inverse=True)
    classes: dict[int, list[list[int]]] = {}
    for a, lab in zip(atoms, np.asarray(label).reshape(-1)):
        classes.setdefault(int(lab), []).append(a)
    return [(c, bool(seen[-1, c[0][0]] or any(seen[-1, a].any() for a in c))) for c in classes.values()]


def _class_group(atoms: list[list[int]], chan: list[int], members: list[GroupMember],
                 periods: list[tuple[int, int] | None], sections: list[tuple[SplitRecord, list[int], list[int]]],
                 names: dict[nn.Module, str], key: str) -> ChannelGroup | str | None:
    """The group of the root channels in ``atoms`` (positions in ``chan``, the root's channels the
    group holds; its members restricted to them, their ``root_idxs`` counting atoms); the phrase
    that keeps them whole, or None when nothing is left to prune."""
    size = len(chan)
    local = np.full(size, -1, dtype=np.int64)
    for j, a in enumerate(atoms):
        local[a] = j
    cmembers, blocks = [], {}
    for mem, per in zip(members, periods):
        pairs = [(i, int(local[r])) for i, r in zip(mem.idxs, mem.root_idxs) if local[r] >= 0]
        if pairs:
            if per is not None:
                blocks[len(cmembers)] = per
            cmembers.append(GroupMember(mem.module, mem.dim, mem.type, [i for i, _ in pairs], [r for _, r in pairs]))
    mine = {c for a in atoms for c in a}
    csections = [(rec, [i for i, r in zip(idxs, roots) if r in mine], [chan[r] for r in roots if r in mine])
                 for rec, idxs, roots in sections if rec.owner is not None]
    n = len(atoms)
    whole = n == size and chan == list(range(size))
    units = None if whole else [[chan[c] for c in a] for a in atoms]
    if blocks:  # atoms are single channels here (_channel_groups)
        tied = _tied_units(cmembers, blocks, n)
        if tied is None:
            return "grouped-conv or GroupNorm blocks that cannot be kept equal"
        units, n = [[chan[atoms[j][0]] for j in u] for u in tied], len(tied)
    if n < 2:
        return None
    # key: the group's first out-member in definition order — independent of trace order
    outs = {m.module for m in cmembers if m.dim == "out"}
    key = next((nm for nm in names.values() if nm in outs), key)
    return ChannelGroup(key, n, cmembers, 0, None, None, units, csections)


def _tied_units(members: list[GroupMember], blocks: dict[int, tuple[int, int]], size: int) -> list[list[int]] | None:
    """Split a group's ``size`` root channels into units that keep every block of a grouped conv
    (or GroupNorm) the same size; rewrite the members' ``root_idxs`` to unit indices.

    In a conv with G groups, input channel ``c`` feeds only the filters of group ``c // (C/G)``
    and output channel ``c`` comes from them; removing the channels at the same position
    ``c % (C/G)`` of every block keeps the conv a G-group conv of C/G fewer channels per side (what
    torch-pruning's ``ConvPruner`` assumes for the input side: it keeps the first block's positions).
    So the channels at one position are tied: one unit, removed together, across every member.

    Args:
        members: the group's members (their ``root_idxs`` are replaced by unit indices).
        blocks: member position in ``members`` -> (channels per block, blocks) on that member's dim.
        size: the group's number of root channels.

    Returns:
        ``units[u]`` = the root channels of unit u (units ordered by their first channel), or None
        when a position's channels are not all in this group or the members do not see every unit
        the same number of times (then the group is left unpruned).
    """
    parent = list(range(size))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for pos, (period, n_blocks) in blocks.items():
        mem = members[pos]
        by_slot: dict[int, list[tuple[int, int]]] = {}
        for i, r in zip(mem.idxs, mem.root_idxs):
            by_slot.setdefault(i % period, []).append((i, r))
        for slot in by_slot.values():
            if len({i for i, _ in slot}) != n_blocks:
                return None  # a position whose channels lie partly outside this group
            for _, r in slot[1:]:
                parent[find(r)] = find(slot[0][1])
    comp: dict[int, list[int]] = {}
    for c in range(size):
        comp.setdefault(find(c), []).append(c)
    units = sorted(comp.values(), key=lambda u: u[0])
    unit_of = np.empty(size, dtype=np.int64)
    for u, chans in enumerate(units):
        unit_of[chans] = u
    for mem in members:
        new = unit_of[np.asarray(mem.root_idxs, dtype=np.int64)]
        counts = np.bincount(new, minlength=len(units))
        if counts.min() != counts.max():
            return None  # not affine in the kept units
        mem.root_idxs = [int(u) for u in new]
    return units


def _group_members(grp: Any, dg: Any, names: dict[nn.Module, str], pos: dict[int, int], traced: _Traced
                   ) -> tuple[list[GroupMember], list[tuple[int, int] | None], list[tuple[SplitRecord, list[int], list[int]]]] | str:
    """The module dimensions of a group with MACs, for each of them (on a grouped conv or
    GroupNorm) its channels per block and blocks, and the recorded splits the group passes with
    their input channels; or, when a member makes the group unprunable, the operation that does
    (one phrase)."""
    members: list[GroupMember] = []
    periods: list[tuple[int, int] | None] = []
    sections = []
    for item in grp:
        mod = item.dep.target.module
        if mod in traced.mixing:
            # channels through a channel shuffle: their order changes there, and torch-pruning maps
            # them one to one, so pruning them would remove the wrong channels after it
            return "a channel shuffle or a view that regroups channels"
        if type(mod).__name__ in _SPLIT_OPS:
            rec = traced.splits.get(mod)
            if rec is None or rec.bad or (rec.owner is None and rec.pos is None):
                # a split whose sizes live in forward's code (chunk, a split by one size, CSPNet's
                # x.split(c // 2)) cannot follow a pruned input (see kpid_core.engine.splits)
                return _SPLIT_OPS[type(mod).__name__]
            roots = [pos.get(int(r), -1) for r in item.root_idxs]
            if min(roots, default=0) < 0:
                return "a concatenation or split that torch-pruning maps unevenly"
            sections.append((rec, [int(i) for i in item.idxs], roots))
            continue
        name = names.get(mod)
        if name is None or not isinstance(mod, nn.Module):
            continue  # element-wise/reshape ops and unwrapped parameters carry no MACs
        if _is_grouped(mod) and mod.transposed:
            # torch-pruning slices a grouped transposed conv's weight as if ungrouped
            return "a grouped transposed conv"
        dim = "out" if dg.is_out_channel_pruning_fn(item.dep.handler) else "in"
        if max(item.idxs, default=0) >= _dim_size(mod, dim):
            # torch-pruning lost track of a channel split (e.g. CSPNet's x.split)
            return "a channel split whose indices torch-pruning loses"
        root_idxs = [pos.get(int(r), -1) for r in item.root_idxs]  # positions among the group's root channels
        if min(root_idxs, default=0) < 0:
            return "a concatenation or split that torch-pruning maps unevenly"
        period = _block_period(mod, dim)
        periods.append(None if period is None else (period, _dim_size(mod, dim) // period))
        members.append(GroupMember(name, dim, type(mod).__name__, [int(i) for i in item.idxs], root_idxs))
    return members, periods, sections
