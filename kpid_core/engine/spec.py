"""The pruned-model spec: a plain-JSON description of a pruned model (module attributes, tensor
shapes, which teacher channels every module keeps) that rebuilds it from the dense registry model
without tracing or torch-pruning, plus its validation, saving and loading."""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from kpid_core.errors import ConfigError, KPIDError, SpecError
from kpid_core.files import atomic_save, atomic_write_text

if TYPE_CHECKING:
    from kpid_core.prune import PruneResult

__all__ = ["SPEC_FORMAT", "SPEC_VERSION", "cpu_state_dict", "load_pruned", "make_spec", "output_channels", "save_pruned"]

SPEC_FORMAT = "kpid-pruned-model"
SPEC_VERSION = 1


def _module_attrs(m: nn.Module) -> dict | None:
    if isinstance(m, nn.modules.conv._ConvNd):
        return {"type": type(m).__name__, "in_channels": m.in_channels, "out_channels": m.out_channels,
                "groups": m.groups}
    if isinstance(m, nn.Linear):
        return {"type": type(m).__name__, "in_features": m.in_features, "out_features": m.out_features}
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return {"type": type(m).__name__, "num_features": m.num_features}
    if isinstance(m, nn.LayerNorm):
        return {"type": type(m).__name__, "normalized_shape": [int(s) for s in m.normalized_shape]}
    if isinstance(m, nn.GroupNorm):
        return {"type": type(m).__name__, "num_channels": m.num_channels, "num_groups": m.num_groups}
    if isinstance(m, nn.PReLU):
        return {"type": type(m).__name__, "num_parameters": m.num_parameters}
    return None


def make_spec(result: PruneResult, input_shape: tuple[int, ...], model_name: str | None,
              model_kwargs: dict | None, order: list[str], dense_sizes: dict[str, tuple[int, int]],
              allocation: str, min_keep: float) -> dict:
    """The JSON-able spec of a freshly pruned model.

    Args:
        result: the pruning result (its ``model``, counts, ``kept`` and ``channel_map`` are read).
        input_shape: (C, H, W) at which the MACs were counted.
        model_name: registry name that rebuilds the dense model (None for a custom model).
        model_kwargs: keyword arguments for that registry builder.
        order: module names in execution order (from the traced groups).
        dense_sizes: ``module -> (out, in)`` channel counts before pruning.
        allocation: the allocation that chose the channels.
        min_keep: the per-group floor fraction that was used.

    Returns:
        The spec dict (format :data:`SPEC_FORMAT`, version :data:`SPEC_VERSION`).
    """
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

    Args:
        result_or_spec: a :class:`~kpid_core.prune.PruneResult` or its ``spec`` (e.g. a loaded
            ``spec.json``).
        module_name: a module (or container) name of the model.

    Returns:
        The teacher channel index of each output channel, or None when the output lost no channels.

    Raises:
        ConfigError: no module of that name.
    """
    # a PruneResult is not a Mapping; testing for it by type would make this module import prune
    spec = result_or_spec if isinstance(result_or_spec, Mapping) else result_or_spec.spec
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

    Args:
        result: the result of :func:`~kpid_core.prune.prune_to_budget`.
        dir: the directory (created if missing).
        overwrite: replace a pruned model already in ``dir``.

    Returns:
        ``dir`` as a Path.

    Raises:
        ConfigError: ``dir`` already holds a pruned model and ``overwrite`` is False.
    """
    out = Path(dir)
    if not overwrite and ((out / "spec.json").exists() or (out / "weights.pt").exists()):
        raise ConfigError(f"save_pruned: {str(out)!r} already holds a pruned model; pass overwrite=True")
    out.mkdir(parents=True, exist_ok=True)
    atomic_save(cpu_state_dict(result.model), out / "weights.pt")
    atomic_write_text(out / "spec.json", json.dumps(result.spec, indent=1))
    return out


def cpu_state_dict(model: nn.Module) -> OrderedDict:
    """``model.state_dict()`` on the CPU, detached, WITH its per-module metadata.

    The metadata (``state_dict._metadata``: each module's ``version``) is what modules such as
    torchvision's MNASNet read in ``_load_from_state_dict``; a plain dict copy loses it and the saved
    file no longer loads (``version should be set to 1 or 2 instead of None``).

    Args:
        model: any module.

    Returns:
        An ``OrderedDict`` of CPU tensors carrying the original ``_metadata``.
    """
    sd = model.state_dict()
    out = OrderedDict((k, v.detach().cpu()) for k, v in sd.items())
    meta = getattr(sd, "_metadata", None)
    if meta is not None:
        out._metadata = meta  # type: ignore[attr-defined]
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
    _set_split_sizes(modules, spec.get("split_sizes", {}), d)
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


def _set_split_sizes(modules: dict[str, nn.Module], sizes: Any, d: Path) -> None:
    """Set the channel-split sizes a pruned model's modules hold (``spec["split_sizes"]``:
    ``module -> {attribute: [int]}``, see :mod:`kpid_core.engine.splits`) on the dense skeleton."""
    if not isinstance(sizes, dict):
        raise _fail(d, "'split_sizes' must map module names to {attribute: [int]}")
    for name, attrs in sizes.items():
        m = modules.get(name)
        if m is None or not isinstance(attrs, dict):
            raise _fail(d, f"split_sizes: module {name!r} does not exist in the dense model")
        for attr, val in attrs.items():
            old = getattr(m, attr, None)
            if not isinstance(old, (list, tuple)) or not _is_int_list(val) or len(val) != len(old):
                raise _fail(d, f"split_sizes: {name}.{attr} must be a list of {len(old or ())} integers "
                               f"like the dense model's, got {val!r}")
            setattr(m, attr, type(old)(val))


def load_pruned(dir: str | os.PathLike, map_location: Any = "cpu",
                model_factory: Callable[..., nn.Module] | None = None) -> nn.Module:
    """Rebuild a model written by :func:`save_pruned` (no tracing, no torch-pruning).

    The dense skeleton comes from ``kpid_core.models.build_model(model_name, **model_kwargs)``, or
    from ``model_factory(**model_kwargs)`` (needed when the model has no registry name).

    Args:
        dir: a directory written by :func:`save_pruned`.
        map_location: passed to :func:`torch.load`; a device string or ``torch.device`` also moves
            the model there.
        model_factory: builds the dense skeleton from the spec's ``model_kwargs``.

    Returns:
        The pruned model with its weights loaded.

    Raises:
        SpecError: any problem with the files (missing, corrupt, or not matching the dense model).
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
