"""Model registry: every architecture the project can build, by name.

A dense model must be rebuildable from ``(name, kwargs)`` alone: pruned-model specs store exactly
that, and ``load_pruned`` rebuilds the dense skeleton before resizing it. Names are

- the models registered here (CIFAR ResNets, the digits ResNet, and :func:`register` calls);
- every convolutional classifier in torchvision's registry (its vision transformers, ``vit_*``,
  ``swin_*``, ``maxvit_t``, are refused: the engine prunes convolution channels, not attention heads);
- ``timm:NAME`` for timm's models (timm is the optional extra ``kpid-sweep[timm]``);
- ``package.module:function``, a user's factory ``function(num_classes=..., **kwargs) -> nn.Module``.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from kpid_core.errors import ConfigError, UnknownNameError, UnsupportedModelError

if TYPE_CHECKING:
    from torch import nn

# Importing this module imports no torch: the questions asked of a name (is it a model, its input
# size, does it take a width) are answered without it, so a config is checked in a process that never
# builds a model (the sweep driver). Building imports torch (and torchvision for its names).

__all__ = [
    "MODEL_NAMES",
    "TIMM_PREFIX",
    "TORCHVISION_MODELS",
    "TORCHVISION_REFUSED",
    "TORCHVISION_TRANSFORMERS",
    "BasicBlock",  # noqa: F822 - kpid_core.cifar_resnet's, through the module __getattr__
    "CifarResNet",  # noqa: F822
    "build_model",
    "check_model_name",
    "default_taps",
    "model_has_width",
    "model_in_channels",
    "model_input_size",
    "models_with_width",
    "register",
    "timm_models",
]

MODEL_NAMES: list[str]  # computed on access (module __getattr__), so late registrations show up
#: Every torchvision classifier offered by name: all of its classification registry but the transformers
#: (and the structures in ``_TV_UNSUPPORTED``, refused by name with the reason). Computed on access.
TORCHVISION_MODELS: list[str]
#: torchvision classifiers refused by name (transformers and unsupported structures).
TORCHVISION_REFUSED: list[str]
#: torchvision's vision transformers (refused by name).
TORCHVISION_TRANSFORMERS: list[str]
_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_INPUT_SIZE: dict[str, int] = {}
_TAPS: dict[str, list[str]] = {}

#: Prefix of timm model names: ``timm:resnet50d``.
TIMM_PREFIX = "timm:"
_TIMM_HINT = "pip install 'kpid-sweep[timm]' (or pip install timm)"

# torchvision's vision transformers: their cost is in attention, which channel pruning cannot reach
_TV_TRANSFORMER_PREFIXES = ("vit_", "swin_", "maxvit")
# Convolutional torchvision classifiers the engine refuses, and why (tests/core prove each refusal)
_TV_UNSUPPORTED: dict[str, str] = {}  # name prefix -> reason (none today: ShuffleNetV2 prunes, see engine/groups.py)
# timm families of transformers (attention blocks), refused like torchvision's
_TIMM_TRANSFORMER_PREFIXES = (
    "vit_", "deit", "swin", "beit", "cait", "coat", "convit", "crossvit", "eva", "levit", "maxvit", "maxxvit",
    "mvitv2", "pit_", "pvt_", "tnt_", "twins_", "volo", "xcit", "flexivit", "samvit", "hiera", "davit",
    "gcvit", "nest_", "sequencer", "tiny_vit", "fastvit", "efficientformer", "edgenext", "mobilevit",
    "vitamin", "aimv2", "naflex", "next_vit", "poolformer", "caformer", "convformer", "focalnet", "rdnet",
)


def register(name: str, input_size: int, taps: list[str] | None = None):
    """Decorator: register a model factory ``f(num_classes=..., **kw) -> nn.Module``.

    Args:
        name: the name configs and the CLI use (a later registration under the same name wins).
        input_size: the model's default square input resolution, in pixels.
        taps: module names whose outputs inner distillation compares by default.

    Returns:
        The decorator; it returns the factory unchanged.
    """

    def deco(fn):
        _REGISTRY[name] = fn
        _INPUT_SIZE[name] = input_size
        _TAPS[name] = list(taps or [])
        return fn

    return deco


def _torchvision():
    """torchvision, through the project's one import guard (:mod:`kpid_core._tv`)."""
    from kpid_core._tv import torchvision

    return torchvision


# torchvision classifiers whose builder takes a width multiplier: ``width`` becomes ``width_mult``.
_TV_WIDTH = {"mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0"}


def _efficientnet_b0(width: float, num_classes: int, **kw) -> nn.Module:
    """EfficientNet-B0 with its channels scaled by ``width`` (depth stays B0's 1.0).

    torchvision has no public way to set EfficientNet's ``width_mult``: ``efficientnet_b0`` fixes it at
    1.0. Its private ``_efficientnet_conf`` is the stage table every public builder uses; calling it
    (rather than copying B0's table here) keeps the stages and the channel rounding (multiples of 8)
    exactly torchvision's. B0's dropout (0.2) and stochastic depth (the class default, 0.2) are kept
    unless ``kw`` overrides them.
    """
    effnet = _torchvision().models.efficientnet
    setting, last_channel = effnet._efficientnet_conf("efficientnet_b0", width_mult=width, depth_mult=1.0)
    return effnet.EfficientNet(setting, kw.pop("dropout", 0.2), num_classes=num_classes, last_channel=last_channel,
                               **kw)


def _tv_factory(name: str):
    def build(num_classes: int = 1000, width: float = 1.0, in_channels: int = 3, **kw) -> nn.Module:
        if in_channels != 3:
            raise ConfigError(f"model {name!r} takes 3 input channels (got in_channels={in_channels})")
        if width != 1.0:
            if name not in _TV_WIDTH:
                raise ConfigError(
                    f"model.width={width}: torchvision model {name!r} has no width multiplier "
                    f"(only {', '.join(sorted(_TV_WIDTH))} do); use width: 1.0"
                )
            if width <= 0:
                raise ConfigError(f"model.width must be > 0 (got {width})")
            if name == "efficientnet_b0":
                return _efficientnet_b0(float(width), num_classes, **kw)
            kw["width_mult"] = float(width)
        if name in ("googlenet", "inception_v3"):
            # no auxiliary heads (training returns plain logits) and torch's default init (their
            # truncated-normal init is slow and deprecated); pretrained files still load, see teacher
            kw.setdefault("aux_logits", False)
            kw.setdefault("init_weights", False)
        return _torchvision().models.get_model(name, weights=None, num_classes=num_classes, **kw)

    return build


def _tv_input_size(name: str) -> int:
    """The crop size of the model's default torchvision weights (224 for most, 299 for Inception)."""
    try:
        transforms = _torchvision().models.get_model_weights(name).DEFAULT.transforms
        return int(getattr(transforms, "keywords", {}).get("crop_size", 224))
    except (ValueError, KeyError, AttributeError):
        return 224


# Inner-KD tap points for torchvision families: block outputs spread over the depth
# (about 1/4, 1/2, 3/4 and the last block before the head conv).
_FAMILY_TAPS = {
    "mobilenet_v2": ["features.3", "features.6", "features.13", "features.17"],
    "mobilenet_v3_small": ["features.1", "features.3", "features.8", "features.11"],
    "mobilenet_v3_large": ["features.3", "features.6", "features.12", "features.15"],
    "efficientnet": ["features.2", "features.3", "features.5", "features.7"],
    "regnet": ["trunk_output.block1", "trunk_output.block2", "trunk_output.block3", "trunk_output.block4"],
    "densenet": ["features.denseblock1", "features.denseblock2", "features.denseblock3", "features.denseblock4"],
    "convnext": ["features.1", "features.3", "features.5", "features.7"],
    "googlenet": ["inception3b", "inception4c", "inception4e", "inception5b"],
    "inception_v3": ["Mixed_5d", "Mixed_6a", "Mixed_6e", "Mixed_7c"],
    "mnasnet": ["layers.9", "layers.10", "layers.12", "layers.13"],
}


def _tv_taps(name: str) -> list[str]:
    if name.startswith(("resnet", "wide_resnet", "resnext")):
        return ["layer1", "layer2", "layer3", "layer4"]
    for prefix, taps in _FAMILY_TAPS.items():
        if name.startswith(prefix):
            return list(taps)
    return []  # e.g. vgg/alexnet: no stage structure; inner KD then has no default taps


class _TorchvisionNames(NamedTuple):
    all: list[str]  # torchvision's classification registry
    transformers: list[str]
    offered: list[str]  # every classifier but the transformers and the _TV_UNSUPPORTED structures
    refused: list[str]


@functools.cache
def _torchvision_names() -> _TorchvisionNames:
    """torchvision's classifiers, read (and registered) on first need, not on import.

    Importing torchvision costs about a second per process (its ops import ``torch._dynamo``), and
    most processes never build one of its models: a trial on the bundled digits or a CIFAR ResNet, a
    Ray worker running it. A name registered before this runs is kept (a registration under the same
    name wins, as it would had it come after torchvision's).
    """
    tv = _torchvision()
    every = tv.models.list_models(module=tv.models)
    transformers = [n for n in every if n.startswith(_TV_TRANSFORMER_PREFIXES)]
    offered = [n for n in every if n not in transformers and not n.startswith(tuple(_TV_UNSUPPORTED))]
    for n in offered:
        if n not in _REGISTRY:
            register(n, _tv_input_size(n), _tv_taps(n))(_tv_factory(n))
    return _TorchvisionNames(every, transformers, offered, [n for n in every if n not in offered])


# --- CIFAR-style ResNets (kpid_core.cifar_resnet) -----------------------------------------------
_CIFAR_TAPS = ["layer1", "layer2", "layer3"]


def _cifar(blocks: tuple[int, int, int]):
    def build(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
        from kpid_core.cifar_resnet import CifarResNet

        return CifarResNet(blocks, num_classes=num_classes, in_channels=in_channels, width=width)

    return build


def _digits_resnet(num_classes: int = 10, in_channels: int = 1, width: float = 1.0) -> nn.Module:
    from kpid_core.cifar_resnet import digits_resnet

    return digits_resnet(num_classes=num_classes, in_channels=in_channels, width=width)


register("resnet20", 32, _CIFAR_TAPS)(_cifar((3, 3, 3)))
register("resnet56", 32, _CIFAR_TAPS)(_cifar((9, 9, 9)))
register("resnet110", 32, _CIFAR_TAPS)(_cifar((18, 18, 18)))
register("digits_resnet", 16, _CIFAR_TAPS)(_digits_resnet)


# Models built here accept any ``in_channels``; torchvision classifiers take RGB only.
_FLEXIBLE_INPUT = {"resnet20", "resnet56", "resnet110", "digits_resnet"}


# ---- timm (optional) ------------------------------------------------------------------------------
def _timm():
    """The timm module, or a one-line error naming the extra that installs it."""
    _torchvision()  # timm imports torchvision: through the project's guard first (kpid_core._tv says why)
    try:
        import timm
    except ImportError:
        raise ConfigError(f"timm models ({TIMM_PREFIX}NAME) need the optional timm extra: {_TIMM_HINT}") from None
    return timm


def timm_models(pattern: str = "*") -> list[str]:
    """timm's convolutional models as ``timm:NAME``, filtered by a shell-style ``pattern``.

    Args:
        pattern: e.g. ``"resnet*"`` (matched against timm's own name, without the prefix).

    Returns:
        Sorted names; transformer families are left out.

    Raises:
        ConfigError: timm is not installed (the message names the extra).
    """
    names = _timm().list_models(pattern)
    return [TIMM_PREFIX + n for n in names if not n.startswith(_TIMM_TRANSFORMER_PREFIXES)]


def _timm_name(name: str) -> str:
    """Validated timm model name (without the prefix)."""
    bare = name[len(TIMM_PREFIX):]
    timm = _timm()
    if bare.startswith(_TIMM_TRANSFORMER_PREFIXES):
        raise UnsupportedModelError(_transformer_message(name))
    if not timm.is_model(bare):
        close = difflib.get_close_matches(bare, timm.list_models(), n=5, cutoff=0.6)
        hint = f"; close matches: {', '.join(TIMM_PREFIX + c for c in close)}" if close else ""
        raise UnknownNameError(f"unknown timm model {name!r}{hint} (python -m kpid_core models --timm 'PATTERN' "
                               f"lists them)")
    return bare


def _timm_build(name: str, num_classes: int, width: float = 1.0, in_channels: int = 3, **kw) -> nn.Module:
    if float(width) != 1.0:
        raise ConfigError(f"model.width={width}: timm model {name!r} has no width multiplier; use width: 1.0")
    return _timm().create_model(_timm_name(name), pretrained=False, num_classes=num_classes,
                                in_chans=int(in_channels), **kw)


def _timm_taps(name: str) -> list[str]:
    """The last four feature stages timm reports for the model (its ``feature_info``)."""
    model = _timm_build(name, 10)
    modules = dict(model.named_modules())
    info = getattr(model, "feature_info", None) or []
    taps = [f["module"] for f in info if isinstance(f, dict) and f.get("module") in modules]
    return taps[-4:]


# ---- user factories: "package.module:function" --------------------------------------------------
def _is_factory(name: str) -> bool:
    return ":" in name and not name.startswith(TIMM_PREFIX)


def _factory(name: str) -> Callable[..., nn.Module]:
    """The function a ``package.module:function`` name points to."""
    mod_name, _, fn_name = name.partition(":")
    try:
        module = importlib.import_module(mod_name)
    except Exception as exc:  # noqa: BLE001 (a user's module may raise anything on import)
        raise ConfigError(f"model {name!r}: cannot import module {mod_name!r} ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}); expected package.module:function") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ConfigError(f"model {name!r}: module {mod_name!r} has no function {fn_name!r}")
    return fn


def _factory_params(name: str) -> set[str] | None:
    """Keyword names the factory takes (None: it takes ``**kwargs``)."""
    params = inspect.signature(_factory(name)).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


# ---- lookup -------------------------------------------------------------------------------------
def _transformer_message(name: str) -> str:
    return (f"model {name!r} is a vision transformer: KPID prunes convolution channels and has no attention-head "
            f"pruning; use a CNN (python -m kpid_core models lists them)")


def check_model_name(name: str) -> str:
    """Validate a model name without building the model.

    Args:
        name: a registry name, a torchvision classifier, ``timm:NAME`` or ``package.module:function``.

    Returns:
        ``name`` unchanged.

    Raises:
        UnsupportedModelError: a vision transformer.
        UnknownNameError: no such model (the message lists close matches).
        ConfigError: ``timm:`` without timm installed, or a factory that cannot be imported.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"model name must be a non-empty string, got {name!r}")
    if name in _REGISTRY:
        return name
    if name.startswith(TIMM_PREFIX):
        _timm_name(name)
    elif _is_factory(name):
        _factory(name)
    else:
        tv = _torchvision_names()  # registers torchvision's classifiers
        if name in _REGISTRY:
            return name
        if name in tv.transformers:
            raise UnsupportedModelError(_transformer_message(name))
        if name in tv.all:
            why = next(v for k, v in _TV_UNSUPPORTED.items() if name.startswith(k))
            raise UnsupportedModelError(f"model {name!r} cannot be pruned: {why}")
        raise _unknown(name)
    return name


def model_in_channels(name: str) -> int | None:
    """Input channels a model requires (3 for torchvision classifiers), or None if it takes
    ``in_channels=`` and adapts to the data (the models built here, timm's, a factory taking it).

    Args:
        name: a model name (see :func:`check_model_name`).

    Returns:
        3, or None when the model adapts to the data's channels.
    """
    check_model_name(name)
    if name.startswith(TIMM_PREFIX):
        return None
    if _is_factory(name):
        params = _factory_params(name)
        return None if params is None or "in_channels" in params else 3
    return None if name in _FLEXIBLE_INPUT else 3


def model_has_width(name: str) -> bool:
    """Whether ``build_model(name, width=...)`` accepts a channel multiplier other than 1.0.

    Args:
        name: a model name (see :func:`check_model_name`).

    Returns:
        True for the models built here, torchvision's mobilenets and efficientnet_b0, and a factory
        that takes ``width``.
    """
    check_model_name(name)
    if _is_factory(name):
        params = _factory_params(name)
        return params is not None and "width" in params
    return name in _FLEXIBLE_INPUT or name in _TV_WIDTH


def models_with_width() -> list[str]:
    """Registered models that take a channel multiplier ``width``.

    Returns:
        Their names, sorted.
    """
    _torchvision_names()
    return sorted(n for n in _REGISTRY if model_has_width(n))


def _unknown(name: str) -> UnknownNameError:
    _torchvision_names()
    valid = sorted(_REGISTRY)
    close = difflib.get_close_matches(name, valid, n=5, cutoff=0.6)
    hint = f" (close matches: {', '.join(close)})" if close else ""
    return UnknownNameError(f"unknown model {name!r}{hint}; valid models: {', '.join(valid)}; also "
                            f"{TIMM_PREFIX}NAME (timm) and package.module:function (your factory)")


def build_model(name: str, num_classes: int = 1000, **kwargs) -> nn.Module:
    """Build a dense, randomly initialised model by name.

    Args:
        name: a registry name, a torchvision classifier, ``timm:NAME`` or ``package.module:function``
            (called as ``function(num_classes=num_classes, **kwargs)``).
        num_classes: classifier outputs.
        **kwargs: ``width`` (channel multiplier, see :func:`models_with_width`; the mobilenets and
            efficientnet_b0 map it to torchvision's ``width_mult``), ``in_channels`` (only for models
            where :func:`model_in_channels` is None; timm's ``in_chans``), or the builder's own.

    Returns:
        The model.

    Raises:
        UnsupportedModelError, UnknownNameError, ConfigError: see :func:`check_model_name`.
    """
    check_model_name(name)
    if name.startswith(TIMM_PREFIX):
        return _timm_build(name, num_classes, **kwargs)
    if _is_factory(name):
        from torch import nn

        factory = _factory(name)
        _check_factory_call(name, factory, num_classes, kwargs)
        model = factory(num_classes=num_classes, **kwargs)
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model {name!r}: the factory returned a {type(model).__name__}, not an nn.Module")
        return model
    return _REGISTRY[name](num_classes=num_classes, **kwargs)


def _check_factory_call(name: str, factory: Callable[..., Any], num_classes: int, kwargs: dict[str, Any]) -> None:
    """A ``package.module:function`` that cannot be called as ``function(num_classes=..., **kwargs)``
    is refused in one line before the call (so a TypeError raised inside a working factory is not
    mistaken for it)."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):  # no signature to read (some builtins): the call itself decides
        return
    try:
        sig.bind(num_classes=num_classes, **kwargs)
    except TypeError as exc:
        args = ", ".join([f"num_classes={num_classes}", *(f"{k}=..." for k in kwargs)])
        raise ConfigError(f"model {name!r}: the factory cannot be called as {name.split(':')[-1]}({args}): {exc}; "
                          "a model factory takes num_classes as a keyword") from None


def model_input_size(name: str) -> int:
    """Default square input resolution of a model.

    Args:
        name: a model name (see :func:`check_model_name`).

    Returns:
        Pixels per side: its pretrained weights' crop size (timm: its pretrained config), 224 for a
        factory.
    """
    check_model_name(name)
    if name.startswith(TIMM_PREFIX):
        return int(_timm().models.get_pretrained_cfg(_timm_name(name)).input_size[-1])
    return _INPUT_SIZE.get(name, 224)


@functools.lru_cache(maxsize=64)
def _cached_timm_taps(name: str) -> tuple[str, ...]:
    return tuple(_timm_taps(name))


def default_taps(name: str) -> list[str]:
    """Module names whose outputs inner distillation compares by default.

    Args:
        name: a model name (see :func:`check_model_name`).

    Returns:
        Stage outputs (``named_modules`` names); for timm, the last four stages of its
        ``feature_info``; empty for a factory.
    """
    check_model_name(name)
    if name.startswith(TIMM_PREFIX):
        return list(_cached_timm_taps(name))
    return list(_TAPS.get(name, []))


_TV_LISTS = {"TORCHVISION_MODELS": "offered", "TORCHVISION_REFUSED": "refused",
             "TORCHVISION_TRANSFORMERS": "transformers"}


_CIFAR_EXPORTS = ("BasicBlock", "CifarResNet", "digits_resnet")  # kpid_core.cifar_resnet's, re-exported


def __getattr__(attr: str):
    # computed on access: late registrations show up, and torchvision is read only when asked for
    if attr in _CIFAR_EXPORTS:
        from kpid_core import cifar_resnet

        return getattr(cifar_resnet, attr)
    if attr == "MODEL_NAMES":
        _torchvision_names()
        return sorted(_REGISTRY)
    if attr in _TV_LISTS:
        return list(getattr(_torchvision_names(), _TV_LISTS[attr]))
    raise AttributeError(attr)
