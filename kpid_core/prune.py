"""Prune a model to a budget (MACs, parameters or measured latency): the public entry point.

:func:`prune_to_budget` traces the channel groups, asks :mod:`kpid_core.engine.allocation` which channels
to keep, removes the rest with :mod:`kpid_core.engine.surgery` and describes the result in the plain-JSON
spec of :mod:`kpid_core.engine.spec`. The names of those modules (and of :mod:`kpid_core.engine.export`) that
users import from here are re-exported, so ``from kpid_core.prune import load_pruned`` keeps working.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from kpid_core.engine.allocation import (
    ALLOCATIONS,
    LINEARIZE_AT,
    NORMALIZERS,
    SOLVERS,
    allocate,
    check_fraction,
    score_vectors,
)
from kpid_core.engine.cost import (
    COSTS,
    ROUND_TO,
    CostModel,
    check_cost,
    check_round_to,
    mac_cost,
    params_cost,
)
from kpid_core.engine.export import export_onnx
from kpid_core.engine.groups import find_groups
from kpid_core.engine.landing import land, measured_ratio
from kpid_core.engine.latency_table import LatencySettings, latency_cost, latency_table
from kpid_core.engine.macs import count_macs, count_params
from kpid_core.engine.spec import (
    SPEC_FORMAT,
    SPEC_VERSION,
    load_pruned,
    make_spec,
    output_channels,
    save_pruned,
)
from kpid_core.engine.surgery import remove_channels
from kpid_core.errors import (
    ConfigError,
    InfeasibleBudgetError,
    SpecError,
    UnknownNameError,
    UnsupportedModelError,
)

__all__ = [
    "ALLOCATIONS",
    "COSTS",
    "ROUND_TO",
    "SOLVERS",
    "SPEC_FORMAT",
    "SPEC_VERSION",
    "PruneResult",
    "allocate",
    "export_onnx",
    "load_pruned",
    "output_channels",
    "prune_to_budget",
    "prune_to_kept",
    "save_pruned",
]


@dataclass
class PruneResult:
    """A pruned model and how it was obtained.

    ``macs_*`` are MACs for one image at the example input's size; ``kept[group_key]`` the sorted
    teacher channel indices a group keeps (unit indices for a group of tied units, e.g. through a
    grouped conv: :attr:`~kpid_core.engine.groups.ChannelGroup.units`); ``channel_map[module] = {"out": [...], "in": [...]}``
    the teacher indices kept on each dim of every module that lost channels.
    """

    model: nn.Module
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    budget: float
    spec: dict
    kept: dict[str, list[int]]
    channel_map: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    cost: str = "macs"
    cost_before: float = 0.0
    cost_after: float = 0.0

    @property
    def macs_ratio(self) -> float:
        return self.macs_after / self.macs_before if self.macs_before else 1.0

    @property
    def cost_ratio(self) -> float:
        """Pruned ÷ dense cost under the cost model the budget counted (``cost``)."""
        return self.cost_after / self.cost_before if self.cost_before else 1.0


def prune_to_budget(model: nn.Module, example_input: Any, budget: float, scores: Any = None, *,
                    min_keep: float = 0.1, allocation: str = "knapsack", solver: str = "dp",
                    normalize: str = "none", linearize: str = "current", spread: float = 1.5,
                    model_name: str | None = None, model_kwargs: dict | None = None, cost: str = "macs",
                    round_to: int = 1, latency: LatencySettings | dict | None = None,
                    log: Callable[[str], None] | None = None) -> PruneResult:
    """Prune a copy of ``model`` so that its cost (MACs by default) is ≤ ``budget`` × the dense
    model's cost (and within 0.5 % of it in practice). ``model`` itself is never modified.

    Args:
        model: the dense model.
        example_input: a (1, C, H, W) tensor or a (C, H, W) shape; MACs are counted at that size.
        budget: fraction of the dense model's cost to keep, in (0, 1], under the ``cost`` model.
        scores: :class:`~kpid_core.engine.importance.ImportanceScores` or ``{group_key: tensor}``; None
            uses the data-free ``l1`` metric.
        min_keep: every group keeps at least this fraction (and at least one channel).
        allocation: ``knapsack`` (the paper) or ``uniform`` (same fraction in every group; a baseline).
        solver: the knapsack method (see :data:`SOLVERS`).
        normalize: how group scores are put on one scale before the knapsack (see
            :data:`~kpid_core.engine.allocation.NORMALIZERS`).
        linearize: where the knapsack linearises the coupled MAC model (see
            :data:`~kpid_core.engine.allocation.LINEARIZE_AT`).
        spread: s >= 1 keeps each group within 1/s and s times its uniform count (the default,
            1.5, was chosen on Fashion-MNIST; 1 = the uniform counts, ranked by ``scores``); 0 =
            unbounded, the paper's allocation (see
            :func:`~kpid_core.engine.allocation.allocate`).
        model_name: the registry name that rebuilds the dense model, stored in the spec for
            :func:`load_pruned`.
        model_kwargs: that registry builder's keyword arguments.
        cost: what the budget counts (:data:`~kpid_core.engine.cost.COSTS`): ``macs`` (one image),
            ``params``, or ``latency`` — a per-layer table measured (or read from its cache) on
            ``latency``'s device, batch and threads (:mod:`kpid_core.engine.latency_table`), the
            result then landed on the pruned network's measured latency (up to
            ``latency.land_rounds`` re-prunes, :mod:`kpid_core.engine.landing`).
        round_to: 1, 8, 16 or 32: kept channel counts are multiples of it in every group whose
            size allows (vector units and tensor cores favour them).
        latency: :class:`~kpid_core.engine.latency_table.LatencySettings` (or a dict of its fields) for
            ``cost="latency"``; default CPU, batch 8, 1 thread.
        log: optional progress callback (latency table measurement).

    Returns:
        A :class:`PruneResult` holding the pruned copy, its MACs/params before and after, the kept
        channels and the spec.

    Raises:
        ConfigError: a bad ``budget``, ``min_keep``, ``model_kwargs``, ``round_to`` or ``latency``.
        UnknownNameError: an unknown ``allocation``, ``solver`` or ``cost``.
        InfeasibleBudgetError: the ``min_keep`` floors alone exceed the budget.
        UnsupportedModelError: a structure the engine cannot prune (the message names the operation).
        SpecError: ``scores`` do not match the model.
    """
    budget, min_keep, round_to = _check_args(budget, min_keep, allocation, solver, normalize, linearize, spread,
                                             model_kwargs, cost, round_to)
    settings = _latency_settings(latency) if cost == "latency" else None

    # the same result inside torch.no_grad() / torch.inference_mode() as outside
    with torch.inference_mode(False), torch.enable_grad():
        return _prune(model, example_input, budget, scores, min_keep, allocation, solver, normalize, linearize,
                      spread, model_name, model_kwargs, cost=cost, round_to=round_to, settings=settings, log=log)


def _check_args(budget: Any, min_keep: Any, allocation: str, solver: str, normalize: str, linearize: str,
                spread: Any, model_kwargs: Any, cost: str, round_to: Any) -> tuple[float, float, int]:
    """prune_to_budget's argument checks; returns the checked (budget, min_keep, round_to)."""
    budget = check_fraction("budget", budget)
    min_keep = check_fraction("min_keep", min_keep)
    if allocation not in ALLOCATIONS:
        raise UnknownNameError(f"unknown allocation {allocation!r}; valid allocations: {', '.join(ALLOCATIONS)}")
    if solver not in SOLVERS:
        raise UnknownNameError(f"unknown knapsack solver {solver!r}; valid solvers: {', '.join(SOLVERS)}")
    if normalize not in NORMALIZERS:
        raise UnknownNameError(f"unknown normalize {normalize!r}; valid values: {', '.join(NORMALIZERS)}")
    if linearize not in LINEARIZE_AT:
        raise UnknownNameError(f"unknown linearize {linearize!r}; valid values: {', '.join(LINEARIZE_AT)}")
    if isinstance(spread, bool) or not isinstance(spread, (int, float)) or not (spread == 0 or spread >= 1):
        raise ConfigError(f"spread must be 0 (unbounded) or a number >= 1, got {spread!r}")
    if model_kwargs is not None and not isinstance(model_kwargs, dict):
        raise ConfigError("model_kwargs must be a dict")
    check_cost(cost)
    round_to = check_round_to(round_to)
    return budget, min_keep, round_to


def _traced(model: nn.Module, example_input: Any) -> tuple[nn.Module, torch.Tensor, Any]:
    """A deep copy of ``model`` (the one surgery will cut), the (1, C, H, W) input on its device and
    its channel groups."""
    work = copy.deepcopy(model)
    p = next(iter(work.parameters()), None)
    x = example_input.clone() if isinstance(example_input, torch.Tensor) else torch.zeros(1, *example_input[-3:])
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if p is not None:
        x = x.to(p.device)
    return work, x, find_groups(work, x)


def _prune(model: nn.Module, example_input: Any, budget: float, scores: Any, min_keep: float, allocation: str,
           solver: str, normalize: str, linearize: str, spread: float, model_name: str | None,
           model_kwargs: dict | None, *, cost: str, round_to: int, settings: LatencySettings | None,
           log: Callable[[str], None] | None) -> PruneResult:
    def prune_at(b: float) -> PruneResult:
        work, x, groups = _traced(model, example_input)
        if not groups.layers:  # nothing multiplies: no conv or linear layer reached from the input
            raise UnsupportedModelError(f"model {model_name or type(model).__name__} cannot be pruned: it has no "
                                        "conv or linear layer, so there are no channels or MACs to cut")
        vectors = score_vectors(groups, scores, work)
        cm = _cost_model(cost, groups, work, settings, log)
        try:
            kept = allocate(groups, vectors, b, min_keep=min_keep, allocation=allocation, solver=solver,
                            normalize=normalize, linearize=linearize, spread=spread, cost=cm, round_to=round_to)
        except InfeasibleBudgetError as exc:  # name the model, as the other refusals do
            raise InfeasibleBudgetError(f"model {model_name or type(model).__name__}: {exc}", exc.min_budget) from None
        return _cut(model, work, x, groups, kept, b, cm, allocation, min_keep, model_name, model_kwargs,
                    enforce_budget=True)

    if cost != "latency" or settings is None or settings.land_rounds == 0:
        result = prune_at(budget)
    else:  # the table steers, measured latency lands it (kpid_core.engine.landing)
        def measure(r: PruneResult) -> float:
            return measured_ratio(model, r.model, tuple(r.spec["input_shape"]), settings, budget)

        result, history = land(prune_at, measure, budget, rounds=settings.land_rounds,
                               tolerance=settings.land_tolerance, log=log)
        result.budget = budget
        result.spec.update(budget=budget, latency_landing=history,
                           latency_measured=next(h["measured"] for h in history if h["kept"]))
    if cost != "macs" or round_to != 1:  # only then: a MAC-budgeted spec stays as it always was
        result.spec.update(cost=cost, round_to=round_to, cost_before=result.cost_before,
                           cost_after=result.cost_after)
        if settings is not None:
            result.spec["latency_settings"] = {k: v for k, v in dataclasses.asdict(settings).items() if k != "cache_dir"}
    return result


def _cut(model: nn.Module, work: nn.Module, x: torch.Tensor, groups: Any, kept: dict[str, list[int]],
         budget: float, cm: CostModel, allocation: str, min_keep: float, model_name: str | None,
         model_kwargs: dict | None, *, enforce_budget: bool) -> PruneResult:
    """Remove from ``work`` (a traced copy of ``model``) every channel ``kept`` drops; check the
    MACs against the cost model (and, with ``enforce_budget``, against ``budget``) and describe the
    result."""
    was_training = model.training
    input_shape = tuple(int(s) for s in x.shape[1:])
    macs_before = groups.macs()  # == count_macs(work): the same traced forward
    params_before = count_params(work)
    counts = groups.counts({k: len(v) for k, v in kept.items()})
    cost_before, cost_after = cm.total(), cm.total(counts)
    cmap, dense_sizes = remove_channels(work, groups, kept)
    # torch-pruning replaces resized parameters by new ones (requires_grad=True): keep the user's flags
    flags = {n: q.requires_grad for n, q in model.named_parameters()}
    for n, q in work.named_parameters():
        q.requires_grad_(flags.get(n, q.requires_grad))

    work.train(was_training)
    try:
        macs_after = count_macs(work, input_shape)
    except RuntimeError as exc:  # a layer kept channel-sized state that torch-pruning did not resize
        raise UnsupportedModelError(
            f"model {type(model).__name__} cannot be pruned: after its channels were removed its forward fails "
            f"({str(exc).splitlines()[0][:160]}); one of its layers holds channel-sized state that channel "
            f"pruning does not resize (e.g. a channel-sized tensor that is not per output channel on its first dim)") from None
    expected = groups.macs(counts)
    if macs_after != expected or (enforce_budget and cm.name == "macs"
                                  and macs_after > math.floor(budget * macs_before)):
        raise RuntimeError(f"internal: pruned model has {macs_after} MACs, MAC model predicted {expected}, "
                           f"budget {math.floor(budget * macs_before)}")
    params_after = count_params(work)
    if cm.name == "params" and params_after != cost_after:
        raise RuntimeError(f"internal: pruned model has {params_after} params, the params model predicted {cost_after}")
    result = PruneResult(work, macs_before, macs_after, params_before, params_after, budget, {}, kept, cmap,
                         cm.name, float(cost_before), float(cost_after))
    result.spec = make_spec(result, input_shape, model_name, model_kwargs, groups.execution_order,
                            dense_sizes, allocation, min_keep)
    resized = _split_sizes(work, groups)
    if resized:  # only then: other models' specs stay as they always were
        result.spec["split_sizes"] = resized
    return result


def _split_sizes(work: nn.Module, groups: Any) -> dict[str, dict[str, list[int]]]:
    """``module -> {attribute: sizes}`` of every channel split whose sizes surgery changed (see
    :mod:`kpid_core.engine.splits`), for the spec to set them again on the rebuilt dense model."""
    modules = dict(work.named_modules())
    out: dict[str, dict[str, list[int]]] = {}
    for rec in groups.splits:
        name, attr = rec.owner
        now = [int(v) for v in getattr(modules[name], attr)]
        if now != rec.sizes:
            out.setdefault(name, {})[attr] = now
    return out


def prune_to_kept(model: nn.Module, example_input: Any, kept: dict[str, list[int]], *, allocation: str = "given",
                  min_keep: float = 0.0, model_name: str | None = None, model_kwargs: dict | None = None
                  ) -> PruneResult:
    """Prune a copy of ``model`` to exactly the channels ``kept`` names (no allocation).

    For allocations decided elsewhere: a progressive prune composes the kept channels of several
    steps and rebuilds the result from the dense model, so that its spec and channel map refer to
    the dense model's channels. ``model`` itself is never modified.

    Args:
        model: the dense model.
        example_input: a (1, C, H, W) tensor or a (C, H, W) shape; MACs are counted at that size.
        kept: ``group_key -> kept channel indices`` for every channel group of ``model`` (as
            :attr:`PruneResult.kept`).
        allocation: recorded in the spec as the allocation that chose the channels.
        min_keep: recorded in the spec.
        model_name: the registry name that rebuilds the dense model, stored in the spec.
        model_kwargs: that registry builder's keyword arguments.

    Returns:
        A :class:`PruneResult` (MAC cost model; ``budget`` = the MAC ratio reached).

    Raises:
        SpecError: ``kept`` misses a group, names an unknown one or holds an index out of range.
    """
    with torch.inference_mode(False), torch.enable_grad():
        work, x, groups = _traced(model, example_input)
        sizes = {g.key: g.size for g in groups}
        if set(kept) != set(sizes):
            raise SpecError(f"kept names groups {sorted(set(kept) ^ set(sizes))[:4]} that differ from the model's")
        clean = {}
        for key, idx in kept.items():
            idx = sorted(int(i) for i in idx)
            if not idx or idx[0] < 0 or idx[-1] >= sizes[key] or len(set(idx)) != len(idx):
                raise SpecError(f"kept[{key!r}] must hold distinct indices in [0, {sizes[key]}), at least one")
            clean[key] = idx
        cm = mac_cost(groups)
        ratio = cm.total(groups.counts({k: len(v) for k, v in clean.items()})) / max(cm.total(), 1)
        # no budget to enforce: the ratio is derived from these counts (and, in floating point, ratio x
        # dense MACs can land a hair under them)
        return _cut(model, work, x, groups, clean, min(1.0, ratio), cm, allocation, min_keep, model_name,
                    model_kwargs, enforce_budget=False)


def _latency_settings(latency: Any) -> LatencySettings:
    if latency is None:
        return LatencySettings().check()
    if isinstance(latency, LatencySettings):
        return latency.check()
    if not isinstance(latency, dict):
        raise ConfigError("latency must be LatencySettings or a dict of its fields")
    names = {f.name for f in dataclasses.fields(LatencySettings)}
    bad = sorted(set(latency) - names)
    if bad:
        raise ConfigError(f"latency: unknown field {bad[0]!r}; valid fields: {', '.join(sorted(names))}")
    return LatencySettings(**latency).check()


def _cost_model(cost: str, groups: Any, model: nn.Module, settings: LatencySettings | None,
                log: Callable[[str], None] | None) -> CostModel:
    if cost == "params":
        return params_cost(groups)
    if cost == "latency":
        return latency_cost(groups, latency_table(model, groups, settings, log))
    return mac_cost(groups)
