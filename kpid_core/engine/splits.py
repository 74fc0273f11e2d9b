"""Channel splits that prune: ``torch.split`` whose sizes live in a module attribute (timm's
``MixedConv2d.splits``) and static channel slices ``x[:, a:b]`` (ReXNet's partial residual, DPN's
dual path, GhostNet's ``[:, :out_chs]``).

During torch-pruning's tracing forward every such call is recorded as a :class:`SplitRecord`, keyed
by the autograd node of its outputs (a slice is traced as a split into its sections, so that
torch-pruning sees one split op whose input keeps every channel's index). torch-pruning 1.6 maps a
split's outputs to its sections in the order its graph walk meets them (the reverse of the order
for MixNet), so :func:`fix_split_mappings` maps each consumer to the section it really reads
(autograd's ``output_nr``). Then:

- a split whose sizes a module attribute holds (one attribute, held by one module) prunes every
  section; after surgery the attribute holds the kept count of each section
  (:func:`updated_split_sizes`);
- a slice's bounds are numbers in the model's code: the channels before the slice, and those of
  the slice itself unless it runs to the last channel, stay whole (so the same bounds still
  select the same channels); the others prune;
- any other split (``chunk``, a split by one size, sizes computed in ``forward``) keeps the
  channels through it whole, as before.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["SplitRecord", "channel_slice", "fix_split_mappings", "split_attributes", "updated_split_sizes"]


@dataclass(eq=False)
class SplitRecord:
    """One traced channel split (identity-hashed: one per call site and trace).

    ``sizes`` are the dense section sizes; ``owner`` = ``(module name, attribute)`` holding them
    (None: sizes fixed in code); ``pos`` the section a slice returns (None: a split that returns
    every section); ``tail`` whether that slice runs to the last channel; ``bad`` that a consumer
    reads several sections at once (then the channels stay whole).
    """

    sizes: list[int]
    owner: tuple[str, str] | None = None
    pos: int | None = None
    tail: bool = False
    bad: bool = False
    offsets: list[int] = field(default_factory=list)
    # the sections' sizes now, as surgery cuts them (torch-pruning maps through them between cuts)
    current: list[int] = field(default_factory=list)
    removed: set[int] = field(default_factory=set)

    def __post_init__(self):
        self.offsets = [0]
        for s in self.sizes:
            self.offsets.append(self.offsets[-1] + int(s))
        self.current = [int(s) for s in self.sizes]

    def cut(self, idxs: Iterable[int]) -> None:
        """Record that surgery removed these (dense) input channels."""
        self.removed.update(idxs)
        self.current = [s - sum(1 for i in self.removed if self.section(i) == k) for k, s in enumerate(self.sizes)]

    def bounds(self, k: int) -> tuple[int, int]:
        """Section ``k``'s channels ``[lo, hi)`` in the input as cut so far."""
        lo = sum(self.current[:k])
        return lo, lo + self.current[k]

    def section(self, idx: int) -> int:
        """The section that input channel ``idx`` falls in."""
        for i in range(len(self.sizes)):
            if idx < self.offsets[i + 1]:
                return i
        return len(self.sizes) - 1

    def pins(self, idx: int) -> bool:
        """Whether input channel ``idx`` must stay (a slice's bounds must keep meaning the same)."""
        if self.pos is None:
            return False
        sec = self.section(idx)
        return sec < self.pos or (sec == self.pos and not self.tail)


def split_attributes(model: nn.Module) -> dict[int, tuple[str, str]]:
    """``id(value) -> (module name, attribute)`` of every list/tuple of ints held by exactly one
    module attribute: the candidates for a split's sizes (matched by identity, so a literal shared
    by several modules, whose change would reach them all, is not one)."""
    seen: dict[int, list[tuple[str, str]]] = {}
    for name, mod in model.named_modules():
        for attr, val in vars(mod).items():
            if (isinstance(val, (list, tuple)) and len(val) > 1
                    and all(isinstance(v, int) and not isinstance(v, bool) for v in val)):
                seen.setdefault(id(val), []).append((name, attr))
    return {k: v[0] for k, v in seen.items() if len(v) == 1}


def channel_slice(x: torch.Tensor, index: Any) -> tuple[list[int], int, bool] | None:
    """``x[index]`` as a split of ``x``'s channels: ``(section sizes, returned section, runs to
    the end)`` for a unit-step slice of part of dim 1 of a feature map (``x[:, a:b]``,
    ``x[:, :c, :, :]``), else None."""
    if x.dim() < 4 or not isinstance(index, tuple) or len(index) < 2 or not isinstance(index[1], slice):
        return None
    if index[0] != slice(None) or any(i is not Ellipsis and i != slice(None) for i in index[2:]):
        return None
    n = int(x.shape[1])
    a, b, step = index[1].indices(n)
    if step != 1 or b <= a or (a == 0 and b == n):
        return None
    sizes = [s for s in (a, b - a, n - b) if s > 0]
    return sizes, int(a > 0), b == n


class _Section:
    """torch-pruning index mapping between a split's input (all channels) and its section ``k``."""

    def __init__(self, rec: SplitRecord, k: int, reverse: bool):
        self.rec, self.k, self.reverse = rec, k, reverse

    def __call__(self, idxs: Iterable[Any]) -> list[Any]:
        lo, hi = self.rec.bounds(self.k)
        if self.reverse:  # section -> input
            return [type(i)(idx=i.idx + lo, root_idx=i.root_idx) for i in idxs]
        return [type(i)(idx=i.idx - lo, root_idx=i.root_idx) for i in idxs if lo <= i.idx < hi]


class _CatFirst(list):
    """The index mappings of a dependency from a concatenation back to a split feeding it, applied
    concatenation first (torch-pruning keeps the split's in slot 0 and the concatenation's in slot
    1 and applies them in slot order; back from a concatenation, its offset must go first)."""

    def __iter__(self):
        return iter(reversed(list(super().__iter__())))


def fix_split_mappings(dg: Any, records: dict[Any, SplitRecord]) -> dict[Any, SplitRecord]:
    """Map every consumer of a recorded split to the section it reads (autograd ``output_nr``).

    Args:
        dg: torch-pruning's ``DependencyGraph`` (its index mappings are rewritten).
        records: ``grad_fn -> SplitRecord`` from the tracing forward.

    Returns:
        ``graph op module -> SplitRecord`` for the recorded splits found in the graph.
    """
    found: dict[Any, SplitRecord] = {}
    # torch-pruning's channel inference sums a split's outputs wrongly (it keeps the last one's), so
    # a concatenation feeding a split directly got no index mapping: the split's input width is known
    pruner = dg.REGISTERED_PRUNERS.get(_split_type())
    if pruner is not None:
        pruner.get_in_channels = lambda layer: sum(found[layer].current) if layer in found else None
    for op, node in dg.module2node.items():
        rec = records.get(node.grad_fn)
        if rec is None or type(op).__name__ != "_SplitOp":
            continue
        found[op] = rec
        node.enable_index_mapping = False  # torch-pruning re-derives its own mapping before each group
        widths = []  # each output's width, in torch-pruning's order of outputs (its channel inference)
        for out in node.outputs:
            nrs = {nr for f, nr in getattr(out.grad_fn, "next_functions", ()) if f is node.grad_fn}
            if len(nrs) != 1:
                rec.bad = True
                widths.append(None)
                continue
            i = nrs.pop()
            widths.append(rec.sizes[i])
            if type(out.module).__name__ == "_ConcatOp":
                out.module.concat_sizes = None  # inferred from the wrong widths while building: again
            for dep in node.dependencies:
                if dep.target is out:
                    dep.index_mapping[0] = _Section(rec, i, reverse=False)
            for dep in out.dependencies:
                if dep.target is node:
                    if type(out.module).__name__ == "_ConcatOp":
                        dep.index_mapping = _CatFirst(dep.index_mapping)
                    dep.index_mapping[0] = _Section(rec, i, reverse=True)
        op.split_sizes = widths
    return found


def _split_type() -> Any:
    from torch_pruning import ops

    return ops.OPTYPE.SPLIT


def updated_split_sizes(model: nn.Module, records: Iterable[SplitRecord]) -> None:
    """Set each owned split's attribute to its sections' kept counts after surgery.

    Args:
        model: the model being cut (its split-size attributes are replaced).
        records: the splits whose sizes a module attribute holds (``owner``), cut by surgery.
    """
    modules = dict(model.named_modules())
    for rec in records:
        if rec.owner is None or not rec.removed:
            continue
        name, attr = rec.owner
        old = getattr(modules[name], attr)
        setattr(modules[name], attr, type(old)(rec.current))
