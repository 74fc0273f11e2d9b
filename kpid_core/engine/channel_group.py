"""One channel group: what it is (:class:`ChannelGroup`, its :class:`GroupMember` module dims, its
units) and how :func:`channel_groups` makes it from one group of torch-pruning's dependency graph —
the members and their indices, the units a grouped conv or GroupNorm prunes in, the root channels
a concatenation ties, the sections of a channel split, and the reasons a group stays whole.

:func:`kpid_core.engine.groups.find_groups` traces the model and calls it for each raw group.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from kpid_core.engine.splits import SplitRecord

__all__ = ["ChannelGroup", "GroupMember", "Traced", "channel_groups", "is_depthwise"]


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


@dataclass
class Traced:
    """What the tracing forward found besides torch-pruning's graph: the graph's ops that regroup
    channels (see :class:`~kpid_core.engine.channel_mix.ChannelMixTracer`) and its recorded
    channel splits (op -> record)."""

    mixing: set[Any]
    splits: dict[Any, SplitRecord]


_PINNED = "a channel slice (x[:, a:b]) whose bounds are numbers in the code"


def channel_groups(grp: Any, dg: Any, names: dict[nn.Module, str], traced: Traced
                    ) -> tuple[list[ChannelGroup], list[str]]:
    """One torch-pruning group as :class:`ChannelGroup` s, one per class of its channels that
    every member sees alike (channels split into sections of different layers prune as separate
    groups), and the operations that keep channels whole (one phrase each).

    Args:
        grp: a group of torch-pruning's dependency graph (its first item is the root's out dim).
        dg: that graph.
        names: module -> its name in the model.
        traced: what the tracing forward recorded besides the graph.

    Returns:
        The groups (empty when nothing in it can be pruned) and the reasons channels stay whole.
    """
    root_item = grp[0]
    root = root_item.dep.target.module
    key = names.get(root)
    size = len(root_item.idxs)
    # the root's channels this group holds (all of them, unless earlier groups hold some: groups.find_groups)
    chan = [int(i) for i in root_item.idxs]
    if key is None or size < 2:
        return [], []
    found = _group_members(grp, dg, names, {c: p for p, c in enumerate(chan)}, traced)
    if isinstance(found, str):
        return [], [found]
    members, periods, sections = found
    ties = [(a, b) for a, b in getattr(grp, "_kpid_ties", ()) if a != b]
    for item in grp:  # one channel of a layer listed once per root channel it comes from
        ties.extend(_second_roots(item.idxs, item.root_idxs))
    atoms = _tied_channels(ties, chan)
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


def _second_roots(idxs: Any, root_idxs: Any) -> list[tuple[int, int]]:
    """``(first root, other root)`` for each listing of one of a layer's channels under a root channel
    other than the one it was first listed under."""
    idx = np.asarray([int(i) for i in idxs], dtype=np.int64)
    roots = np.asarray([int(r) for r in root_idxs], dtype=np.int64)
    if idx.size == 0:
        return []
    _, first, which = np.unique(idx, return_index=True, return_inverse=True)
    first_root = roots[first][which]
    other = first_root != roots
    return list(zip(first_root[other].tolist(), roots[other].tolist()))


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
    starts = np.cumsum([0] + [len(a) for a in atoms[:-1]])
    per_atom = np.add.reduceat(seen[:, np.concatenate(atoms)], starts, axis=1)  # each atom's columns summed
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
        at = local[np.asarray(mem.root_idxs, dtype=np.int64)]
        mine_here = at >= 0
        if mine_here.any():
            if per is not None:
                blocks[len(cmembers)] = per
            cmembers.append(GroupMember(mem.module, mem.dim, mem.type, np.asarray(mem.idxs)[mine_here].tolist(),
                                        at[mine_here].tolist()))
    mine = {c for a in atoms for c in a}
    csections = [(rec, [i for i, r in zip(idxs, roots) if r in mine], [chan[r] for r in roots if r in mine])
                 for rec, idxs, roots in sections if rec.owner is not None]
    n = len(atoms)
    whole = n == size and chan == list(range(size))
    units = None if whole else [[chan[c] for c in a] for a in atoms]
    if blocks:  # atoms are single channels here (channel_groups)
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


def _group_members(grp: Any, dg: Any, names: dict[nn.Module, str], pos: dict[int, int], traced: Traced
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
