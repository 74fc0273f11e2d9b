"""The dense teacher of a trial: trained from scratch (cached), a local state dict, or torchvision
pretrained weights from the local torch hub cache. Nothing is ever downloaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kpid_core.errors import ConfigError, SpecError
from kpid_core.files import atomic_save, atomic_write_text, output_dir, storage_errors
from kpid_core.models import build_model

__all__ = [
    "Teacher",
    "get_teacher",
    "load_state_dict_file",
    "model_kwargs",
    "pretrained_weights_path",
    "state_dict_mismatch",
    "teacher_cache_dir",
    "teacher_key",
    "timm_weights_path",
]

log = logging.getLogger("kpid_core.training.teacher")


class Teacher:
    """A dense teacher model with its test accuracy (0-1; None if not measured) and weights file."""

    def __init__(self, model: nn.Module, accuracy: float | None, path: Path | None, source: str):
        self.model, self.accuracy, self.path, self.source = model, accuracy, path, source


def _plain(x: Any) -> Any:
    return asdict(x) if is_dataclass(x) else dict(x)


def model_kwargs(cfg: Any, in_channels: int | None) -> dict:
    """kwargs for ``build_model`` from the model section (+ the data's channel count when the model
    adapts to it). Pruned-model specs store exactly these."""
    from kpid_core.models import model_in_channels

    kw: dict[str, Any] = {}
    if float(cfg.model.width) != 1.0:
        kw["width"] = float(cfg.model.width)
    if model_in_channels(cfg.model.name) is None and in_channels is not None:
        kw["in_channels"] = int(in_channels)
    return kw


def teacher_cache_dir(cfg: Any) -> Path:
    """``teacher.cache_dir``, else ``$KPID_CACHE_DIR/teachers``, else ``~/.cache/kpid/teachers``."""
    if cfg.teacher.cache_dir:
        return Path(os.path.expanduser(cfg.teacher.cache_dir))
    env = os.environ.get("KPID_CACHE_DIR")
    return Path(env) / "teachers" if env else Path.home() / ".cache" / "kpid" / "teachers"


def teacher_key(cfg: Any) -> str:
    """Hash of everything a trained teacher depends on: data, model, teacher settings, training
    recipe and seed (not the cache location, not prune/distill settings)."""
    teacher = {k: v for k, v in _plain(cfg.teacher).items() if k != "cache_dir"}
    recipe = {k: v for k, v in _plain(cfg.train).items() if k not in ("epochs", "lr", "device")}
    if not recipe.get("warmup_epochs"):  # added later: at 0 (no warm-up) keys of existing caches hold
        recipe.pop("warmup_epochs", None)
    data = {k: v for k, v in _plain(cfg.data).items() if k != "num_workers"}
    blob = json.dumps({"data": data, "model": _plain(cfg.model), "teacher": teacher, "recipe": recipe,
                       "seed": cfg.seed, "v": 1}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_state_dict_file(path: str | os.PathLike, model: nn.Module, what: str = "teacher.checkpoint") -> None:
    """Load a state dict (``torch.load(weights_only=True)``; a ``{"model"|"state_dict": ...}``
    wrapper also works) into ``model``; missing/corrupt/mismatched → SpecError."""
    path = Path(os.path.expanduser(str(path)))
    if path.is_dir():
        raise SpecError(f"{what}: {str(path)!r} is a directory; expected a state-dict file (torch.save)")
    if not path.is_file():
        raise SpecError(f"{what}: file {str(path)!r} does not exist")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zip, pickle error, tampered file...
        why = (str(exc).strip().splitlines() or [""])[0][:160]  # torch's weights_only message runs to pages
        if "Weights only load failed" in why:
            why = "it holds Python objects, not only tensors; save model.state_dict() instead"
        raise SpecError(f"{what}: {str(path)!r} is not a readable state dict ({type(exc).__name__}: {why})") from None
    if isinstance(sd, dict):
        for k in ("model", "state_dict"):
            if k in sd and isinstance(sd[k], dict):
                sd = sd[k]
    if not isinstance(sd, dict):
        raise SpecError(f"{what}: {str(path)!r} holds a {type(sd).__name__}, not a state dict")
    why = state_dict_mismatch(model, sd)
    if why:
        raise SpecError(f"{what}: {str(path)!r} does not fit the model: {why}")
    try:
        model.load_state_dict(sd)
    except RuntimeError as exc:  # what the key/shape check does not cover
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise SpecError(f"{what}: {str(path)!r} does not fit the model: {first}") from None


def state_dict_mismatch(model: nn.Module, state: dict) -> str:
    """Why ``state`` does not load into ``model`` (strictly), in one short line; "" when it does.

    Args:
        model: the module to load into.
        state: a state dict (parameter/buffer name -> tensor).

    Returns:
        Counts of missing and unexpected keys and of shape mismatches, each with its first examples
        (torch's own message lists every key, which for a wrong architecture runs to kilobytes).
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(getattr(state[k], "shape", ())) != tuple(own[k].shape)]

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    parts = [f"{len(missing)} missing key(s) ({few(missing)})"] if missing else []
    parts += [f"{len(unexpected)} unexpected key(s) ({few(unexpected)})"] if unexpected else []
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} shape mismatch(es), e.g. {k}: {tuple(getattr(state[k], 'shape', ()))} in "
                     f"the file, {tuple(own[k].shape)} in the model")
    return "; ".join(parts)


def pretrained_weights_path(model_name: str, weights: str | None = None):
    """(weights enum member, local file path) of torchvision weights in ``$TORCH_HOME/hub/checkpoints``."""
    from kpid_core._tv import torchvision

    try:
        enum = torchvision.models.get_model_weights(model_name)
    except (ValueError, KeyError):
        raise ConfigError(f"teacher.source=pretrained: torchvision has no weights for model {model_name!r}") from None
    name = (weights or "DEFAULT").split(".")[-1]  # accept "ResNet50_Weights.DEFAULT" or "DEFAULT"
    try:
        member = enum[name] if name != "DEFAULT" else enum.DEFAULT
    except KeyError:
        raise ConfigError(f"teacher.weights={weights!r}; allowed values: DEFAULT, "
                          f"{', '.join(m.name for m in enum)}") from None
    fname = os.path.basename(member.url)
    return member, Path(torch.hub.get_dir()) / "checkpoints" / fname


def timm_weights_path(model_name: str, weights: str | None = None) -> tuple[dict, Path]:
    """(pretrained config, local file) of a timm model's weights: the given file, or the Hugging Face
    hub cache entry timm itself would download (``$HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``).

    Args:
        model_name: ``timm:NAME``, optionally ``timm:NAME.TAG`` (a pretrained tag, e.g. ``resnet50.a1_in1k``).
        weights: a file (``.safetensors``, ``.pth``, ``.bin``) holding the state dict; None or
            ``"DEFAULT"`` = the cache.

    Returns:
        ``({"num_classes", "hf_hub_id", ...}, path)``; the path may not exist (the caller says where
        to put it).

    Raises:
        ConfigError: timm has no pretrained weights for the name.
    """
    from kpid_core.models import TIMM_PREFIX, check_model_name

    check_model_name(model_name)
    import timm

    bare = model_name[len(TIMM_PREFIX):]
    cfg = timm.models.get_pretrained_cfg(bare)
    if cfg is None:
        raise ConfigError(f"teacher.source=pretrained: timm has no pretrained weights for {model_name!r}")
    info = cfg.to_dict()
    if weights and weights != "DEFAULT":
        return info, Path(os.path.expanduser(weights))
    repo = info.get("hf_hub_id")
    if not repo:
        raise ConfigError(f"teacher.source=pretrained: timm's {model_name!r} weights are not on the Hugging Face hub; "
                          f"download them yourself and set teacher.weights to the file")
    from huggingface_hub import constants, try_to_load_from_cache

    for fname in ("model.safetensors", "pytorch_model.bin"):
        hit = try_to_load_from_cache(repo, fname)
        if isinstance(hit, str):
            return info, Path(hit)
    folder = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "snapshots" / "REVISION"
    return info, folder / "model.safetensors"


def _read_weights(path: Path, what: str) -> dict:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise SpecError(f"{what}: {str(path)!r} is not a readable safetensors file ({exc})") from None
    sd = torch.load(path, map_location="cpu", weights_only=True)
    return sd.get("state_dict", sd.get("model", sd)) if isinstance(sd, dict) else sd


def _pretrained_timm(cfg: Any, num_classes: int, kw: dict) -> nn.Module:
    info, path = timm_weights_path(cfg.model.name, cfg.teacher.weights)
    n_cat = int(info.get("num_classes") or 0)
    if n_cat and n_cat != num_classes:
        raise ConfigError(f"teacher.source=pretrained: {cfg.model.name} weights have {n_cat} classes but the data has "
                          f"{num_classes}; use teacher.source=train or a checkpoint for this dataset")
    if not path.is_file():
        raise SpecError(f"pretrained weights for {cfg.model.name} not found at {path}: download "
                        f"{info.get('hf_hub_id') or 'them'} (e.g. huggingface-cli download) into the Hugging Face "
                        f"cache, or set teacher.weights to the file. Nothing is downloaded here.")
    model = build_model(cfg.model.name, num_classes=num_classes, **kw)
    try:
        model.load_state_dict(_read_weights(path, "teacher.weights"))
    except (RuntimeError, OSError, ValueError) as exc:
        raise SpecError(f"pretrained weights {str(path)!r} do not fit {cfg.model.name}: "
                        f"{str(exc).splitlines()[0][:200]}") from None
    return model


# torchvision heads that its pretrained files hold but build_model leaves out (see models)
_AUX_HEADS = {"googlenet": ("aux1", "aux2"), "inception_v3": ("AuxLogits",)}


def _pretrained(cfg: Any, num_classes: int, kw: dict) -> nn.Module:
    from kpid_core.models import TIMM_PREFIX

    if cfg.model.name.startswith(TIMM_PREFIX):
        return _pretrained_timm(cfg, num_classes, kw)
    member, path = pretrained_weights_path(cfg.model.name, cfg.teacher.weights)
    n_cat = len(member.meta.get("categories") or [])
    if n_cat and n_cat != num_classes:
        raise ConfigError(f"teacher.source=pretrained: {member} has {n_cat} classes but the data has {num_classes}; "
                          "use teacher.source=train or a checkpoint for this dataset")
    if not path.is_file():
        raise SpecError(f"pretrained weights for {cfg.model.name} not found: download {member.url} and put it at "
                        f"{path} (torch hub cache; set TORCH_HOME to move it). Nothing is downloaded here.")
    aux = _AUX_HEADS.get(cfg.model.name, ())
    model = build_model(cfg.model.name, num_classes=num_classes, **({"aux_logits": True, **kw} if aux else kw))
    load_state_dict_file(path, model, what=f"pretrained weights {path.name}")
    for head in aux:  # as torchvision's own builders do after loading: the same model as build_model's
        setattr(model, head, None)
    if aux:
        model.aux_logits = False
    return model


def get_teacher(cfg: Any, data: Any, *, device: str | torch.device = "cpu", train_fn=None) -> Teacher:
    """The trial's teacher per ``cfg.teacher.source``, in eval mode, with its test accuracy.

    ``train`` reuses ``<cache>/<teacher_key>.pt`` when present (and writes it otherwise)."""
    from kpid_core.training.distill import DistillLoss
    from kpid_core.training.train import evaluate, fit, resolve_device, seed_everything

    kw = model_kwargs(cfg, data.input_shape[0])
    src = cfg.teacher.source
    dev = resolve_device(device)
    if src == "checkpoint":
        model = build_model(cfg.model.name, num_classes=data.num_classes, **kw)
        load_state_dict_file(cfg.teacher.checkpoint, model)
        model.to(dev).eval()
        return Teacher(model, evaluate(model, data.test, dev), Path(cfg.teacher.checkpoint), src)
    if src == "pretrained":
        model = _pretrained(cfg, data.num_classes, kw).to(dev).eval()
        return Teacher(model, evaluate(model, data.test, dev), None, src)

    cache = teacher_cache_dir(cfg)
    key = teacher_key(cfg)
    path, meta_path = cache / f"{key}.pt", cache / f"{key}.json"
    model = build_model(cfg.model.name, num_classes=data.num_classes, **kw)
    if path.is_file() and meta_path.is_file():
        try:
            load_state_dict_file(path, model, what="cached teacher")
            meta = json.loads(meta_path.read_text())
            log.info("teacher: reusing cached %s (test acc %.4f)", path, meta["accuracy"])
            return Teacher(model.to(dev).eval(), float(meta["accuracy"]), path, "cache")
        except (SpecError, ValueError, KeyError):
            log.warning("teacher: cached %s is unreadable; retraining", path)
    output_dir(cache, "teacher.cache_dir")  # before training: a cache that cannot be made or written fails now
    seed_everything(cfg.seed)
    model = build_model(cfg.model.name, num_classes=data.num_classes, **kw)
    loss = DistillLoss(ce_weight=1.0, kd_weight=0.0, inner_weight=0.0, label_smoothing=cfg.train.label_smoothing)
    (train_fn or fit)(model, None, data, loss, cfg.train, seed=cfg.seed, lr=cfg.teacher.lr,
                      epochs=cfg.teacher.epochs, desc="teacher")
    model.eval()
    acc = evaluate(model, data.test, dev)
    # parallel trials may train the same teacher: last writer wins, whole files
    with storage_errors("teacher.cache_dir", cache):
        atomic_save(model.state_dict(), path)
        atomic_write_text(meta_path, json.dumps({"accuracy": acc, "key": key, "model": cfg.model.name, "kwargs": kw}))
    log.info("teacher: trained, test acc %.4f, cached at %s", acc, path)
    return Teacher(model, acc, path, "train")
