"""Prune a model to a MAC budget: knapsack allocation over channel groups, physical removal with
torch-pruning, and a plain-JSON spec so that the pruned model can be rebuilt without tracing.

Allocation ("knapsack"): within a group channels are ranked by score (a group keeps its top-k).
The exact MAC model of :mod:`kpid_core.groups` is quadratic in the kept counts (a channel's cost
depends on how many channels its neighbours keep), so the knapsack is solved on its linearisation
at the current counts (item weight = marginal MACs, capacity = B − M(k) + Σ c_g k_g) for a few
rounds; an exact repair step then drops the cheapest-value channels while over budget and an
exact fill step adds the best channels that still fit. The result lands at or just under the
budget, counting the input-channel MACs that neighbouring layers save.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kpid_core.errors import ConfigError, InfeasibleBudgetError, KPIDError, SpecError, UnknownNameError
from kpid_core.groups import ChannelGroups, find_groups
from kpid_core.macs import count_macs, count_params

__all__ = [
    "ALLOCATIONS",
    "SOLVERS",
    "SPEC_FORMAT",
    "SPEC_VERSION",
    "PruneResult",
    "allocate",
    "export_onnx",
    "load_pruned",
    "output_channels",
    "prune_to_budget",
    "save_pruned",
]

ALLOCATIONS = ("knapsack", "uniform")
SOLVERS = ("dp", "greedy")
SPEC_FORMAT = "kpid-pruned-model"
SPEC_VERSION = 1
_KNAPSACK_ROUNDS = 6


@dataclass
class PruneResult:
    """A pruned model and how it was obtained.

    ``macs_*`` are MACs for one image at the example input's size; ``kept[group_key]`` the sorted
    teacher channel indices a group keeps; ``channel_map[module] = {"out": [...], "in": [...]}``
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

    @property
    def macs_ratio(self) -> float:
        return self.macs_after / self.macs_before if self.macs_before else 1.0


# ---- validation ---------------------------------------------------------------------------------
def _check_fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ConfigError(f"{name} must be a number in (0, 1], got {value!r}")
    v = float(value)
    if not (0.0 < v <= 1.0) or math.isnan(v):
        raise ConfigError(f"{name} must be in (0, 1], got {value!r}")
    return v


def _score_vectors(groups: ChannelGroups, scores: Any, model: nn.Module) -> list[np.ndarray]:
    """One float array per group (channel scores); computes ``l1`` when ``scores`` is None."""
    if scores is None:
        from kpid_core.importance import ImportanceContext, get_metric

        ctx = ImportanceContext(model, groups)
        metric = get_metric("l1")
        return [metric(ctx, g).numpy().astype(np.float64) for g in groups]
    table = scores.scores if hasattr(scores, "scores") else scores
    if not isinstance(table, Mapping):
        raise ConfigError("scores must be ImportanceScores or a mapping group_key -> 1-D tensor")
    out = []
    for g in groups:
        if g.key not in table:
            raise SpecError(f"scores do not match the model: no scores for channel group {g.key!r}")
        v = np.asarray(torch.as_tensor(table[g.key]).detach().cpu().to(torch.float64).reshape(-1))
        if v.shape[0] != g.size:
            raise SpecError(f"scores do not match the model: group {g.key!r} has {g.size} channels, "
                            f"scores have {v.shape[0]}")
        if not np.all(np.isfinite(v)):
            raise SpecError(f"scores for group {g.key!r} contain NaN/Inf")
        out.append(v)
    return out


# ---- allocation ---------------------------------------------------------------------------------
def _floors(groups: ChannelGroups, min_keep: float) -> np.ndarray:
    return np.array([min(g.size, max(1, math.ceil(min_keep * g.size - 1e-9))) for g in groups], dtype=np.int64)


def _knapsack_counts(groups: ChannelGroups, ranked: list[np.ndarray], floors: np.ndarray, budget_macs: int,
                     solver: str) -> np.ndarray:
    from kpid_core.knapsack import solve

    sizes = groups.sizes
    gid = np.concatenate([np.full(s, i, dtype=np.int64) for i, s in enumerate(sizes)])
    rank = np.concatenate([np.arange(s, dtype=np.int64) for s in sizes])
    values = np.concatenate(ranked)
    values = np.maximum(values, 0.0)
    required = rank < floors[gid]
    k = sizes.copy()
    best = None
    for _ in range(_KNAPSACK_ROUNDS):
        c = np.maximum(groups.marginal_costs(k), 0.0)
        capacity = budget_macs - groups.macs(k) + float(np.dot(c, k))
        weights = c[gid]
        mask = np.asarray(solve(values, weights, max(capacity, 0.0), method=solver, required=required), dtype=bool)
        new_k = np.maximum(np.bincount(gid, weights=mask, minlength=len(sizes)).astype(np.int64), floors)
        m = groups.macs(new_k)
        if m <= budget_macs and (best is None or m > best[0]):
            best = (m, new_k.copy())
        if np.array_equal(new_k, k):
            break
        k = new_k
    return best[1] if best is not None else k


def _repair_and_fill(groups: ChannelGroups, ranked: list[np.ndarray], floors: np.ndarray, k: np.ndarray,
                     budget_macs: int) -> np.ndarray:
    """Exact greedy: drop while over budget, then add while something still fits."""
    k = k.copy()
    sizes = groups.sizes
    m = groups.macs(k)
    while m > budget_macs:
        saved = groups.removal_costs(k).astype(np.float64)
        best, best_ratio = -1, math.inf
        for g in range(len(k)):
            if k[g] <= floors[g] or saved[g] <= 0:
                continue
            ratio = max(ranked[g][k[g] - 1], 0.0) / saved[g]
            if ratio < best_ratio:
                best, best_ratio = g, ratio
        if best < 0:
            break  # only reachable when the floors alone exceed the budget (checked before)
        k[best] -= 1
        m = groups.macs(k)
    while True:
        added = groups.addition_costs(k).astype(np.float64)
        room = budget_macs - m
        best, best_ratio = -1, -math.inf
        for g in range(len(k)):
            if k[g] >= sizes[g] or added[g] > room:
                continue
            ratio = math.inf if added[g] <= 0 else max(ranked[g][k[g]], 0.0) / added[g]
            if ratio > best_ratio:
                best, best_ratio = g, ratio
        if best < 0:
            return k
        k[best] += 1
        m = groups.macs(k)


def _uniform_counts(groups: ChannelGroups, floors: np.ndarray, budget_macs: int) -> np.ndarray:
    sizes = groups.sizes

    def counts(f: float) -> np.ndarray:
        return np.clip(np.floor(f * sizes + 0.5).astype(np.int64), floors, sizes)

    lo, hi = 0.0, 1.0
    if groups.macs(counts(hi)) <= budget_macs:
        return counts(hi)
    for _ in range(60):
        mid = (lo + hi) / 2
        if groups.macs(counts(mid)) <= budget_macs:
            lo = mid
        else:
            hi = mid
    return counts(lo)


def allocate(groups: ChannelGroups, score_vectors: list[np.ndarray], budget: float, *, min_keep: float = 0.1,
             allocation: str = "knapsack", solver: str = "dp") -> dict[str, list[int]]:
    """Choose the channels to keep: ``group_key -> sorted kept indices`` with MACs ≤ budget·dense."""
    dense = groups.macs()
    budget_macs = math.floor(budget * dense)
    floors = _floors(groups, min_keep)
    floor_macs = groups.macs(floors)
    if floor_macs > budget_macs:
        min_budget = floor_macs / dense
        raise InfeasibleBudgetError(
            f"budget {budget:g} is infeasible with min_keep={min_keep:g}: keeping the minimum channels "
            f"costs {min_budget:.4f} of the dense MACs; use budget >= {math.ceil(min_budget * 1e4) / 1e4:.4f} "
            f"or a smaller min_keep", min_budget)
    # channels by descending score; ties broken by index so the choice is deterministic
    order = [np.lexsort((np.arange(len(v)), -v)) for v in score_vectors]
    ranked = [v[o] for v, o in zip(score_vectors, order)]
    if allocation == "uniform":
        k = _uniform_counts(groups, floors, budget_macs)
    else:
        k = _knapsack_counts(groups, ranked, floors, budget_macs, solver)
        k = _repair_and_fill(groups, ranked, floors, k, budget_macs)
    return {g.key: sorted(int(i) for i in order[g.index][: k[g.index]]) for g in groups}


# ---- physical pruning ---------------------------------------------------------------------------
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


def _module_attrs(m: nn.Module) -> dict | None:
    if isinstance(m, nn.modules.conv._ConvNd):
        return {"type": type(m).__name__, "in_channels": m.in_channels, "out_channels": m.out_channels,
                "groups": m.groups}
    if isinstance(m, nn.Linear):
        return {"type": "Linear", "in_features": m.in_features, "out_features": m.out_features}
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return {"type": type(m).__name__, "num_features": m.num_features}
    if isinstance(m, nn.LayerNorm):
        return {"type": "LayerNorm", "normalized_shape": [int(s) for s in m.normalized_shape]}
    if isinstance(m, nn.GroupNorm):
        return {"type": "GroupNorm", "num_channels": m.num_channels, "num_groups": m.num_groups}
    if isinstance(m, nn.PReLU):
        return {"type": "PReLU", "num_parameters": m.num_parameters}
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


def prune_to_budget(model: nn.Module, example_input: Any, budget: float, scores: Any = None, *,
                    min_keep: float = 0.1, allocation: str = "knapsack", solver: str = "dp",
                    model_name: str | None = None, model_kwargs: dict | None = None) -> PruneResult:
    """Prune a copy of ``model`` so that its MACs are ≤ ``budget`` × the dense MACs (and within
    0.5 % of it in practice). ``model`` itself is never modified.

    ``example_input``: a (1, C, H, W) tensor or a (C, H, W) shape; MACs are counted at that size.
    ``scores``: :class:`~kpid_core.importance.ImportanceScores` or ``{group_key: tensor}``; None
    uses the data-free ``l1`` metric. ``min_keep``: every group keeps at least this fraction (and
    at least one channel). ``allocation``: ``knapsack`` (the paper) or ``uniform`` (same fraction in
    every group; a baseline). ``solver``: the knapsack method. ``model_name``/``model_kwargs``:
    the registry name that rebuilds the dense model, stored in the spec for :func:`load_pruned`.
    """
    budget = _check_fraction("budget", budget)
    min_keep = _check_fraction("min_keep", min_keep)
    if allocation not in ALLOCATIONS:
        raise UnknownNameError(f"unknown allocation {allocation!r}; valid allocations: {', '.join(ALLOCATIONS)}")
    if solver not in SOLVERS:
        raise UnknownNameError(f"unknown knapsack solver {solver!r}; valid solvers: {', '.join(SOLVERS)}")
    if model_kwargs is not None and not isinstance(model_kwargs, dict):
        raise ConfigError("model_kwargs must be a dict")

    work = copy.deepcopy(model)
    was_training = model.training
    p = next(iter(work.parameters()), None)
    x = example_input if isinstance(example_input, torch.Tensor) else torch.zeros(1, *example_input)
    if p is not None:
        x = x.to(p.device)
    input_shape = tuple(int(s) for s in x.shape[1:])
    groups = find_groups(work, x)
    macs_before = groups.macs()  # == count_macs(work): the same traced forward
    params_before = count_params(work)
    vectors = _score_vectors(groups, scores, work)
    kept = allocate(groups, vectors, budget, min_keep=min_keep, allocation=allocation, solver=solver)

    modules = dict(work.named_modules())
    dense_sizes = {n: s for n, m in modules.items() if (s := _dim_sizes(m)) is not None}
    tied = {n for n, m in modules.items() if _dim_sizes(m) is not None and (
        not isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) or (
            isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 and m.groups == m.in_channels))}
    cmap = _channel_map(groups, kept, dense_sizes, tied)

    for g in groups:
        keep = set(kept[g.key])
        drop = [i for i in range(g.size) if i not in keep]
        if drop:
            groups.dg.get_pruning_group(g.root, g.prune_fn, drop).prune(record_history=False)
    work.train(was_training)
    macs_after = count_macs(work, input_shape)
    expected = groups.macs({k: len(v) for k, v in kept.items()})
    if macs_after != expected or macs_after > math.floor(budget * macs_before):
        raise RuntimeError(f"internal: pruned model has {macs_after} MACs, MAC model predicted {expected}, "
                           f"budget {math.floor(budget * macs_before)}")
    result = PruneResult(work, macs_before, macs_after, params_before, count_params(work), budget, {}, kept, cmap)
    result.spec = _make_spec(result, input_shape, model_name, model_kwargs, groups.execution_order,
                             dense_sizes, allocation, min_keep)
    return result


# ---- spec -----------------------------------------------------------------------------------------
def _make_spec(result: PruneResult, input_shape, model_name, model_kwargs, order, dense_sizes, allocation,
               min_keep) -> dict:
    model = result.model
    modules = {n: a for n, m in model.named_modules() if n and (a := _module_attrs(m)) is not None}
    return {
        "format": SPEC_FORMAT,
        "version": SPEC_VERSION,
        "model_name": model_name,
        "model_kwargs": dict(model_kwargs or {}),
        "input_shape": list(input_shape),
        "budget": result.budget,
        "allocation": allocation,
        "min_keep": min_keep,
        "macs_before": result.macs_before,
        "macs_after": result.macs_after,
        "params_before": result.params_before,
        "params_after": result.params_after,
        "modules": modules,
        "shapes": {n: list(t.shape) for n, t in model.state_dict().items()},
        "dense_channels": {n: list(dense_sizes[n]) for n in result.channel_map},
        "channel_map": result.channel_map,
        "kept": result.kept,
        "execution_order": list(order),
    }


def output_channels(result_or_spec: PruneResult | Mapping, module_name: str) -> list[int] | None:
    """Teacher channel index of each channel of ``module_name``'s output (None = not pruned).

    For a container (a ResNet stage, a MobileNet block) this is the out-map of the last module
    executed inside it that has channels (its last BN / the merged residual group).
    """
    spec = result_or_spec.spec if isinstance(result_or_spec, PruneResult) else result_or_spec
    order, modules = spec.get("execution_order", []), spec.get("modules", {})
    inside = [n for n in order if (n == module_name or n.startswith(module_name + ".")) and n in modules]
    if not inside and module_name not in modules and not any(
            n.startswith(module_name + ".") for n in order):
        raise ConfigError(f"output_channels: no module named {module_name!r} in the pruned model")
    if not inside:
        return None
    last = inside[-1]
    entry = spec.get("channel_map", {}).get(last)
    if entry is None:
        return None
    dense_out = spec.get("dense_channels", {}).get(last, [None])[0]
    out = list(entry["out"])
    return None if dense_out is not None and len(out) == dense_out else out


def save_pruned(result: PruneResult, dir: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``spec.json`` (plain JSON) and ``weights.pt`` (state dict) into ``dir``.

    Refuses (:class:`ConfigError`) to replace an existing spec unless ``overwrite``.
    """
    out = Path(dir)
    if not overwrite and ((out / "spec.json").exists() or (out / "weights.pt").exists()):
        raise ConfigError(f"save_pruned: {str(out)!r} already holds a pruned model; pass overwrite=True")
    out.mkdir(parents=True, exist_ok=True)
    tmp_w, tmp_s = out / "weights.pt.tmp", out / "spec.json.tmp"
    torch.save({k: v.detach().cpu() for k, v in result.model.state_dict().items()}, tmp_w)
    tmp_s.write_text(json.dumps(result.spec, indent=1))
    tmp_w.replace(out / "weights.pt")
    tmp_s.replace(out / "spec.json")
    return out


def _fail(dir_: Path, msg: str) -> SpecError:
    return SpecError(f"pruned model {str(dir_)!r}: {msg}")


def _is_int_list(v) -> bool:
    return isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v)


def _read_spec(d: Path) -> dict:
    if not d.is_dir():
        raise _fail(d, "directory does not exist")
    f = d / "spec.json"
    if not f.is_file():
        raise _fail(d, "spec.json is missing")
    try:
        spec = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail(d, f"spec.json is not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc})") from None
    if not isinstance(spec, dict) or spec.get("format") != SPEC_FORMAT:
        raise _fail(d, f"spec.json is not a {SPEC_FORMAT} spec")
    if spec.get("version") != SPEC_VERSION:
        raise _fail(d, f"spec version {spec.get('version')!r} is not supported (expected {SPEC_VERSION})")
    if not (spec.get("model_name") is None or isinstance(spec["model_name"], str)):
        raise _fail(d, "'model_name' must be a string or null")
    if not isinstance(spec.get("model_kwargs"), dict):
        raise _fail(d, "'model_kwargs' must be an object")
    if not _is_int_list(spec.get("input_shape")):
        raise _fail(d, "'input_shape' must be a list of non-negative integers")
    mods = spec.get("modules")
    if not isinstance(mods, dict) or not all(isinstance(a, dict) and isinstance(a.get("type"), str)
                                             for a in mods.values()):
        raise _fail(d, "'modules' must map module names to attribute objects with a 'type'")
    shapes = spec.get("shapes")
    if not isinstance(shapes, dict) or not all(_is_int_list(s) for s in shapes.values()):
        raise _fail(d, "'shapes' must map tensor names to lists of non-negative integers")
    cmap = spec.get("channel_map", {})
    if not isinstance(cmap, dict) or not all(
            isinstance(e, dict) and _is_int_list(e.get("out")) and _is_int_list(e.get("in")) for e in cmap.values()):
        raise _fail(d, "'channel_map' entries must be {'out': [int], 'in': [int]}")
    return spec


_INT_ATTRS = {"in_channels", "out_channels", "groups", "in_features", "out_features", "num_features",
              "num_channels", "num_groups", "num_parameters"}


def _resize(model: nn.Module, spec: dict, d: Path) -> None:
    modules = dict(model.named_modules())
    for name, attrs in spec["modules"].items():
        m = modules.get(name)
        if m is None:
            raise _fail(d, f"module {name!r} does not exist in the dense model")
        if type(m).__name__ != attrs["type"]:
            raise _fail(d, f"module {name!r} is a {type(m).__name__} in the dense model, spec says {attrs['type']}")
        for key, val in attrs.items():
            if key == "type":
                continue
            if key == "normalized_shape":
                if not _is_int_list(val):
                    raise _fail(d, f"module {name!r}: 'normalized_shape' must be a list of integers")
                m.normalized_shape = tuple(val)
            elif key in _INT_ATTRS:
                if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                    raise _fail(d, f"module {name!r}: {key!r} must be a positive integer, got {val!r}")
                setattr(m, key, val)
            else:
                raise _fail(d, f"module {name!r}: unknown attribute {key!r}")
    own = model.state_dict()
    for tname, shape in spec["shapes"].items():
        if tname not in own:
            raise _fail(d, f"tensor {tname!r} does not exist in the dense model")
        mod_name, _, attr = tname.rpartition(".")
        owner = modules[mod_name] if mod_name else model
        old = getattr(owner, attr)
        if list(old.shape) == shape:
            continue
        new = torch.zeros(shape, dtype=old.dtype, device=old.device)
        if isinstance(old, nn.Parameter):
            setattr(owner, attr, nn.Parameter(new, requires_grad=old.requires_grad))
        else:
            owner._buffers[attr] = new


def load_pruned(dir: str | os.PathLike, map_location: Any = "cpu",
                model_factory: Callable[..., nn.Module] | None = None) -> nn.Module:
    """Rebuild a model written by :func:`save_pruned` (no tracing, no torch-pruning).

    The dense skeleton comes from ``kpid_core.models.build_model(model_name, **model_kwargs)``, or
    from ``model_factory(**model_kwargs)`` (needed when the model has no registry name).
    Any problem with the files raises :class:`SpecError`.
    """
    d = Path(dir)
    spec = _read_spec(d)
    kwargs = spec["model_kwargs"]
    try:
        if model_factory is not None:
            model = model_factory(**kwargs)
        elif spec["model_name"] is None:
            raise _fail(d, "the spec has no model name (a custom model); pass model_factory=")
        else:
            from kpid_core.models import build_model

            model = build_model(spec["model_name"], **kwargs)
    except KPIDError as exc:
        if isinstance(exc, SpecError):
            raise
        raise _fail(d, str(exc)) from None
    except TypeError as exc:
        raise _fail(d, f"cannot build the dense model with model_kwargs {kwargs}: {exc}") from None
    _resize(model, spec, d)
    wf = d / "weights.pt"
    if not wf.is_file():
        raise _fail(d, "weights.pt is missing")
    try:
        state = torch.load(wf, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 (truncated or foreign files raise many types)
        raise _fail(d, f"weights.pt is corrupt or not a state dict ({type(exc).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _fail(d, "weights.pt is not a state dict")
    own = model.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or extra:
        raise _fail(d, f"weights.pt does not match the spec (missing {missing[:3]}, unexpected {extra[:3]})")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise _fail(d, f"weights.pt: {k!r} has shape {tuple(v.shape)}, spec says {tuple(own[k].shape)}")
    model.load_state_dict(state, strict=True)
    return model.to(map_location) if isinstance(map_location, (str, torch.device)) else model


def export_onnx(model: nn.Module, path: str | os.PathLike, input_shape=(3, 224, 224)) -> Path:
    """Export ``model`` (eval mode, batch dim dynamic) to ONNX at ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    p = next(iter(model.parameters()), None)
    x = torch.zeros(1, *input_shape, device=p.device if p is not None else "cpu")
    was_training = model.training
    model.eval()
    try:
        # the dynamo exporter needs onnxscript; the classic exporter needs only onnx
        use_dynamo = importlib.util.find_spec("onnxscript") is not None
        kw = {"dynamo": use_dynamo}
        if not use_dynamo:
            kw["dynamic_axes"] = {"input": {0: "batch"}, "logits": {0: "batch"}}
        with warnings.catch_warnings():  # the classic exporter announces its own deprecation
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["logits"], **kw)
    finally:
        model.train(was_training)
    return path
