"""Channel importance metrics behind one small contract.

Style after torch-pruning's ``pruner/importance.py``: an :class:`Importance` is a callable
``(ctx, group) -> 1-D tensor`` with one score per channel of the group; adding a metric is one
subclass + ``@register_metric("name")``. A channel's score sums the contributions of every member
of its group (the conv producing it, its BN, the convs/linears consuming it, ...).

Metrics: ``taylor`` — the paper's |Σ_batches Σ_params w·∂L/∂w| (gradients accumulated over the
batches, absolute value taken once); ``taylor_abs`` — Σ_batches |Σ_params w·∂L/∂w| (Molchanov et
al.); ``taylor_sq`` — Σ_batches (Σ_params w·∂L/∂w)² (Molchanov et al. 2019's squared score, a
loss-increase estimate on one scale for every group); ``l1`` — Σ|w|; ``l2`` — the L2 norm of all
of the channel's parameters; ``bn_gamma`` — Σ|γ| of the group's batch norms (0 for groups without
one); ``random`` — seeded uniform noise.
``sensitivity`` (:mod:`kpid_core.engine.sensitivity`) — each group's measured loss curve, Taylor-ranked
within the group, as per-channel values with diminishing returns.
"""

from __future__ import annotations

import abc
import copy
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kpid_core.engine.groups import ChannelGroup, ChannelGroups, GroupMember, find_groups, is_depthwise
from kpid_core.errors import ConfigError, DataError, SpecError, UnknownNameError
from kpid_core.files import atomic_save

__all__ = [
    "DATA_METRICS",
    "METRICS",
    "Importance",
    "ImportanceContext",
    "ImportanceScores",
    "batches",
    "compute_importance",
    "get_metric",
    "logits",
    "member_params",
    "register_metric",
]

_REGISTRY: dict[str, type[Importance]] = {}
_FORMAT = "kpid-importance"
_VERSION = 1


@dataclass
class ImportanceContext:
    """What a metric may look at: the (copied) model, its groups, and data for data-driven metrics."""

    model: nn.Module
    groups: ChannelGroups
    loader: Iterable | None = None
    loss_fn: Callable | None = None
    n_batches: int = 8
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    state: dict = field(default_factory=dict)  # per-metric scratch (e.g. accumulated gradients)

    @property
    def modules(self) -> dict[str, nn.Module]:
        if "modules" not in self.state:
            self.state["modules"] = dict(self.model.named_modules())
        return self.state["modules"]


class Importance(abc.ABC):
    """A channel-importance metric: ``metric(ctx, group) -> Tensor[group.size]`` (higher = keep)."""

    name: str = ""
    needs_data: bool = False

    def prepare(self, ctx: ImportanceContext) -> None:
        """One-off pass before scoring the groups (data-driven metrics run their batches here)."""

    @abc.abstractmethod
    def __call__(self, ctx: ImportanceContext, group: ChannelGroup) -> torch.Tensor: ...


def register_metric(name: str):
    """Class decorator: make an :class:`Importance` available under ``name``."""

    def deco(cls):
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def get_metric(name: str) -> Importance:
    """Instantiate a metric by name; unknown names raise :class:`UnknownNameError`."""
    if name not in _REGISTRY:
        raise UnknownNameError(f"unknown importance metric {name!r}; valid metrics: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]()


# ---- which parameter slices belong to a member's channels -----------------------------------------
def member_params(module: nn.Module, member: GroupMember) -> list[tuple[str, torch.Tensor, int]]:
    """``(param name, param, dim)`` for every parameter of ``module`` indexed by the member's channels."""
    out: list[tuple[str, torch.Tensor, int]] = []
    if isinstance(module, nn.modules.conv._ConvNd):
        depthwise = is_depthwise(module)
        if member.dim == "out":
            out.append(("weight", module.weight, 1 if module.transposed else 0))
            if module.bias is not None:
                out.append(("bias", module.bias, 0))
        elif not depthwise:  # a depthwise conv's inputs are its outputs: counted once, on "out"
            out.append(("weight", module.weight, 0 if module.transposed else 1))
    elif isinstance(module, nn.Linear):
        if member.dim == "out":
            out.append(("weight", module.weight, 0))
            if module.bias is not None:
                out.append(("bias", module.bias, 0))
        else:
            out.append(("weight", module.weight, 1))
    elif isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.PReLU)):
        for pname in ("weight", "bias"):
            p = getattr(module, pname, None)
            if isinstance(p, torch.Tensor) and p.dim() == 1 and p.numel() > 1:
                out.append((pname, p, 0))
    return out


def reduce_channels(ctx: ImportanceContext, group: ChannelGroup,
                    value_of: Callable[[nn.Module, str, torch.Tensor], torch.Tensor | None],
                    reduce: Callable[[torch.Tensor], torch.Tensor],
                    types: tuple[type, ...] | None = None) -> torch.Tensor:
    """Sum, over the group's members, ``reduce(value[idx along dim])`` into the group's channels.

    ``value_of(module, pname, param)`` gives the tensor to reduce (shape of ``param``; None = skip);
    ``reduce`` maps a ``[n, -1]`` tensor to ``[n]`` row by row (rows are the member's channels).
    """
    total = torch.zeros(group.size, dtype=torch.float64)
    for mem in group.members:
        module = ctx.modules[mem.module]
        if types is not None and not isinstance(module, types):
            continue
        idx = torch.tensor(mem.idxs, dtype=torch.long)
        roots = torch.tensor(mem.root_idxs, dtype=torch.long)
        for pname, p, dim in member_params(module, mem):
            v = value_of(module, pname, p)
            if v is None:
                continue
            v = v.detach().cpu().movedim(dim, 0).contiguous()  # rows gathered below: contiguous is far faster
            if mem.dim == "in" and pname == "weight" and _grouped_input(module):
                v = _per_input_channel(v, module.groups)
            total.index_add_(0, roots, _reduce_rows(v, idx, reduce))
    return total


#: Float64 elements converted at once by :func:`_reduce_rows`: 8 MB, so a classifier's weight (VGG's
#: 25,088 × 4,096) is reduced a block of rows at a time instead of as one 800 MB float64 copy (which
#: took seconds, several times over, for every VGG group the classifier belongs to).
_REDUCE_BLOCK = 1 << 20


def _reduce_rows(v: torch.Tensor, idx: torch.Tensor, reduce: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``reduce`` (row by row, in float64) over the rows ``idx`` of ``v`` (rows along dim 0), a block
    of rows at a time: each row's value is the one over the whole tensor at once (up to float64
    rounding in the order of a row's sum)."""
    per_row = max(1, v[0].numel()) if v.shape[0] else 1
    step = max(1, _REDUCE_BLOCK // per_row)
    return torch.cat([reduce(v.index_select(0, part).to(torch.float64).reshape(len(part), -1))
                      for part in idx.split(step)]) if len(idx) else torch.zeros(0, dtype=torch.float64)


def _grouped_input(module: nn.Module) -> bool:
    """A non-transposed conv whose weight holds ``in_channels / groups`` inputs per filter."""
    return (isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1 and not module.transposed
            and not is_depthwise(module))


def _per_input_channel(v: torch.Tensor, groups: int) -> torch.Tensor:
    """A grouped conv's weight-shaped values moved to ``[in/groups, out, ...]``, as one row per input
    channel: input ``c`` of block ``b = c // (in/groups)`` meets only block b's filters, at position
    ``c % (in/groups)``."""
    per_in, out = v.shape[0], v.shape[1]
    v = v.reshape(per_in, groups, out // groups, *v.shape[2:]).movedim(1, 0)
    return v.reshape(groups * per_in, -1)


def _weights(module, pname, p):
    return p


@register_metric("l1")
class L1Importance(Importance):
    """Σ|w| over every parameter of the channel in every member."""

    def __call__(self, ctx, group):
        return reduce_channels(ctx, group, _weights, lambda t: t.abs().sum(1))


@register_metric("l2")
class L2Importance(Importance):
    """L2 norm of the concatenation of all of the channel's parameters."""

    def __call__(self, ctx, group):
        return reduce_channels(ctx, group, _weights, lambda t: t.pow(2).sum(1)).sqrt()


@register_metric("bn_gamma")
class BNGammaImportance(Importance):
    """Σ|γ| of the group's batch norms (network slimming); 0 where the group has none."""

    def __call__(self, ctx, group):
        return reduce_channels(
            ctx, group, lambda m, n, p: p if n == "weight" else None, lambda t: t.abs().sum(1),
            types=(nn.modules.batchnorm._BatchNorm,),
        )


@register_metric("random")
class RandomImportance(Importance):
    """Uniform noise in [0, 1), seeded by ``seed`` and the group key (same in every process)."""

    def __call__(self, ctx, group):
        gen = torch.Generator().manual_seed(int(ctx.seed) * 1_000_003 + zlib.crc32(group.key.encode()))
        return torch.rand(group.size, generator=gen, dtype=torch.float64)


def batches(ctx: ImportanceContext):
    """Up to ``ctx.n_batches`` ``(inputs, targets)`` batches of ``ctx.loader``, on ``ctx.device``."""
    n = 0
    for batch in ctx.loader:
        if n >= ctx.n_batches:
            break
        if isinstance(batch, dict):
            x, y = batch.get("input", batch.get("x")), batch.get("target", batch.get("y"))
        else:
            x, y = batch[0], batch[1]
        yield x.to(ctx.device), y.to(ctx.device)
        n += 1
    if n == 0:
        raise DataError("importance: the data loader yielded no batches")


def logits(out: Any) -> torch.Tensor:
    """A model's logits from its output (the first element when it returns a tuple or list)."""
    return out[0] if isinstance(out, (tuple, list)) else out


class _TaylorBase(Importance):
    needs_data = True
    per_batch: Callable[[torch.Tensor], torch.Tensor] | None = None  # None: sum over batches first

    def _loss(self, ctx, x, y):
        return (ctx.loss_fn or nn.functional.cross_entropy)(logits(ctx.model(x)), y)

    def prepare(self, ctx):
        # eval mode: no BN running-stat updates and no dropout noise in the gradient
        ctx.model.eval()
        params = [p for p in ctx.model.parameters()]
        for p in params:
            p.requires_grad_(True)
            p.grad = None
        acc = [torch.zeros(g.size, dtype=torch.float64) for g in ctx.groups]
        for x, y in batches(ctx):
            if self.per_batch is not None:
                for p in params:
                    p.grad = None
            loss = self._loss(ctx, x, y)
            loss.backward()
            if self.per_batch is not None:
                for i, g in enumerate(ctx.groups):
                    acc[i] += self.per_batch(self._signed(ctx, g))
        if self.per_batch is None:
            acc = [self._signed(ctx, g).abs() for g in ctx.groups]
        ctx.state[self.name] = {g.key: a for g, a in zip(ctx.groups, acc)}

    @staticmethod
    def _signed(ctx, group):
        def wg(module, pname, p):
            return None if p.grad is None else p * p.grad
        return reduce_channels(ctx, group, wg, lambda t: t.sum(1))

    def __call__(self, ctx, group):
        return ctx.state[self.name][group.key]


@register_metric("taylor")
class TaylorImportance(_TaylorBase):
    """|Σ_batches Σ_params w·∂L/∂w| — the paper's first-order Taylor score."""


@register_metric("taylor_abs")
class TaylorAbsImportance(_TaylorBase):
    """Σ_batches |Σ_params w·∂L/∂w| — per-batch absolute value (Molchanov et al. 2019)."""

    per_batch = staticmethod(torch.abs)


@register_metric("taylor_sq")
class TaylorSquaredImportance(_TaylorBase):
    """Σ_batches (Σ_params w·∂L/∂w)² — Molchanov et al. 2019's squared first-order Taylor score.

    Σ_params w·∂L/∂w is the first-order change of a batch's loss when the channel is removed from every
    member of its group at once; its mean square over batches is a (Fisher) estimate of the loss
    increase, in the same unit (loss²) for every group whatever its member count, position or weight
    scale. The signed sum over batches (``taylor``) tends to zero at a trained network's minimum, where
    the mean gradient vanishes; the per-batch square does not.
    """

    per_batch = staticmethod(torch.square)


from kpid_core.engine import sensitivity as _sensitivity  # noqa: F401  (registers "sensitivity")

METRICS: list[str] = list(_REGISTRY)
DATA_METRICS: list[str] = [n for n, c in _REGISTRY.items() if c.needs_data]


# ---- results ------------------------------------------------------------------------------------
@dataclass
class ImportanceScores:
    """Scores of one metric: ``scores[group_key]`` is a 1-D float tensor, one value per channel."""

    metric: str
    scores: dict[str, torch.Tensor]
    meta: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        """Write a ``torch.save`` file loadable with ``weights_only=True``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": _FORMAT,
            "version": _VERSION,
            "metric": self.metric,
            "scores": {k: v.detach().cpu().to(torch.float64) for k, v in self.scores.items()},
            "meta": {k: v for k, v in self.meta.items() if isinstance(v, (int, float, str, bool))},
        }
        return atomic_save(payload, path)  # never leave a half-written score file behind

    @classmethod
    def load(cls, path: str | Path) -> ImportanceScores:
        """Read a file written by :meth:`save`; anything else raises :class:`SpecError`."""
        path = Path(path)
        if not path.is_file():
            raise SpecError(f"importance file {str(path)!r} does not exist")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 (truncated/corrupt pickles raise many types)
            raise SpecError(f"importance file {str(path)!r} is corrupt or not an importance file: "
                            f"{type(exc).__name__}") from None
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise SpecError(f"importance file {str(path)!r}: not a {_FORMAT} file")
        scores, metric = payload.get("scores"), payload.get("metric")
        if not isinstance(metric, str) or not isinstance(scores, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) and v.dim() == 1 for k, v in scores.items()
        ):
            raise SpecError(f"importance file {str(path)!r}: malformed 'metric'/'scores' entries")
        return cls(metric, dict(scores), dict(payload.get("meta") or {}))


def compute_importance(model: nn.Module, example_input: Any, metric: str, loader: Iterable | None = None,
                       loss_fn: Callable | None = None, n_batches: int = 8, seed: int = 0,
                       device: str | torch.device | None = None) -> ImportanceScores:
    """Score every channel group of ``model`` with ``metric``. The model itself is not modified.

    Args:
        model: the dense model.
        example_input: a (1, C, H, W) tensor or a (C, H, W) shape to trace the groups with.
        metric: a name from :data:`METRICS`.
        loader: ``(inputs, targets)`` batches; needed by the data-driven metrics (:data:`DATA_METRICS`).
        loss_fn: the loss the Taylor metrics differentiate (default cross-entropy).
        n_batches: at most this many batches are used.
        seed: seeds ``random`` and the torch generator.
        device: where to score (default: the model's device).

    Returns:
        :class:`ImportanceScores` with one float64 score per channel of every group (higher = keep).

    Raises:
        UnknownNameError: an unknown ``metric``.
        ConfigError: a data-driven metric without ``loader``, or ``n_batches`` < 1.
    """
    imp = get_metric(metric)
    if imp.needs_data and loader is None:
        raise ConfigError(f"metric {metric!r} needs data: pass loader= (data-free metrics: "
                          f"{', '.join(m for m in METRICS if m not in DATA_METRICS)})")
    if int(n_batches) < 1:
        raise ConfigError(f"n_batches must be >= 1, got {n_batches}")
    dev = torch.device(device) if device is not None else (
        next(model.parameters()).device if any(True for _ in model.parameters()) else torch.device("cpu"))
    work = copy.deepcopy(model).to(dev)  # gradients/eval mode never touch the caller's model
    x = example_input if isinstance(example_input, torch.Tensor) else torch.zeros(1, *example_input)
    groups = find_groups(work, x.to(dev))
    ctx = ImportanceContext(work, groups, loader, loss_fn, int(n_batches), int(seed), dev)
    torch.manual_seed(seed)
    imp.prepare(ctx)
    scores = {g.key: imp(ctx, g).detach().to(torch.float64).cpu() for g in groups}
    return ImportanceScores(metric, scores, {"n_batches": int(n_batches), "seed": int(seed)})
