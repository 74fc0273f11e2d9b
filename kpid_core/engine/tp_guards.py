"""What KPID changes in torch-pruning's group building while it runs (both undone on exit).

torch-pruning follows every dependency of a root layer's channels through the traced graph and merges
what it reaches into one group. Two things about that walk matter to KPID and are not in its API:
:func:`recording_ties` keeps a fact its group merge drops (two root channels that reach one channel by
different paths), and :func:`bounded_index_maps` stops a walk that would not end (a cycle through views
that mix channels with positions) so that the model is refused in one line instead of hanging.
"""

from __future__ import annotations

import contextlib

__all__ = ["MAX_MAPPED_INDICES", "MAX_MAPPED_TOTAL", "IndexBlowUp", "bounded_index_maps", "recording_ties"]


@contextlib.contextmanager
def recording_ties():
    """While torch-pruning builds groups: record on each group (``_kpid_ties``) the pairs of root
    channels that reach one channel of a layer by different paths. Its group merge keeps the first
    root of such a channel and drops the other, and with it the fact that removing either root
    channel removes that channel (GhostNet's cheap depthwise conv ties the two halves of its
    concatenation); :func:`~kpid_core.engine.channel_group.channel_groups` puts them back together."""
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


#: The most indices one of torch-pruning's reshape mappings may produce, and the most all of them may
#: produce while the groups of one model are built. A flatten into a classifier maps C channels onto
#: C·H·W features (VGG-16: 25,088 at once, 150,528 in all); ResNeSt's split attention maps 3.5 M in
#: all (resnest50d, in small pieces). Beyond these bounds the tracing is in a cycle through views that
#: it would otherwise follow for hours: one that multiplies the indices by the spatial size at each
#: pass (timm's gcresnet33ts: 64 → 4,096 → 262,144 → 16.8 M at once), or one that maps millions of
#: indices again and again (timm's lambda_resnet26t: 2.4 M at once at 64 px; at 32 px only the total
#: stops it, after a minute or two).
MAX_MAPPED_INDICES = 1 << 21
MAX_MAPPED_TOTAL = 1 << 27


class IndexBlowUp(Exception):
    """torch-pruning's reshape mappings would produce more indices than a bound allows (the bound
    is the exception's one argument)."""


@contextlib.contextmanager
def bounded_index_maps():
    """While torch-pruning builds groups: refuse (:class:`IndexBlowUp`) a flatten/reshape index
    mapping that would produce more than :data:`MAX_MAPPED_INDICES` indices, or take all it has
    produced past :data:`MAX_MAPPED_TOTAL`, before it is built."""
    from torch_pruning.dependency.index_mapping import _FlattenIndexMapping  # no public name for it

    call = _FlattenIndexMapping.__call__
    mapped = [0]

    def bounded(self, idxs):
        n = len(idxs) if self.reverse else len(idxs) * int(self._stride)
        mapped[0] += n
        if n > MAX_MAPPED_INDICES:
            raise IndexBlowUp(MAX_MAPPED_INDICES)
        if mapped[0] > MAX_MAPPED_TOTAL:
            raise IndexBlowUp(MAX_MAPPED_TOTAL)
        return call(self, idxs)

    _FlattenIndexMapping.__call__ = bounded
    try:
        yield
    finally:
        _FlattenIndexMapping.__call__ = call
