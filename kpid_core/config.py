"""Typed trial configuration: nested dataclasses, YAML + ``key=value`` overrides, one validation.

Layout and aliases are pinned in docs/CONTRACTS.md. Every user mistake raises :class:`ConfigError`
naming the field and what is allowed (unknown keys list the valid keys).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from kpid_core.engine.latency_settings import LatencySettings as _Timing
from kpid_core.errors import ConfigError, UnknownNameError
from kpid_core.results_schema import flatten

__all__ = [
    "ALIASES",
    "DataConfig",
    "DistillConfig",
    "LatencyConfig",
    "ModelConfig",
    "PruneConfig",
    "TeacherConfig",
    "TrainConfig",
    "TrialConfig",
    "as_section",
    "default_config_path",
    "load_config",
    "parse_overrides",
]

_S = TypeVar("_S")

ALIASES: dict[str, str] = {
    "budget": "prune.budget",
    "metric": "prune.metric",
    "epochs": "train.epochs",
    "lr": "train.lr",
    "kd_weight": "distill.kd_weight",
    "inner_weight": "distill.inner_weight",
    "gamma": "distill.inner_weight",
    "temperature": "distill.temperature",
    "match": "distill.match",
    "dataset": "data.name",
    "model": "model.name",
    "allocation": "prune.allocation",
    "cost": "prune.cost",
    "round_to": "prune.round_to",
}


@dataclass
class DataConfig:
    name: str = "digits"
    root: str | None = None
    image_size: int | None = None  # None = the dataset's own (digits 16, fashion_mnist 28, cifar 32, ...)
    batch_size: int = 64
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    num_workers: int = 0
    augment: str | None = None  # imagenet | small | none; None = the dataset's usual one
    channels: int | None = None  # image channels of grey-capable data (1 or 3); None = the data's own
    train_size: int | None = None  # use at most this many training images (stratified); None = all


@dataclass
class ModelConfig:
    name: str = "digits_resnet"
    width: float = 1.0


@dataclass
class TeacherConfig:
    source: str = "train"
    checkpoint: str | None = None
    weights: str | None = None  # source=pretrained: torchvision enum member ("DEFAULT", "IMAGENET1K_V2"); timm: a file
    epochs: int = 15
    lr: float = 0.1
    cache_dir: str | None = None


@dataclass
class PruneConfig:
    budget: float = 0.5
    metric: str = "taylor"
    importance_batches: int = 8
    min_keep: float = 0.1
    allocation: str = "knapsack"
    solver: str = "dp"
    normalize: str = "none"  # none | mean | max: group scores on one scale (kpid_core.engine.allocation)
    linearize: str = "current"  # current | uniform: where the knapsack linearises the MAC model
    spread: float = 1.5  # s >= 1: each group within [1/s, s] x its uniform count (1 = the uniform counts); 0 = unbounded (the paper)
    cost: str = "macs"  # macs | params | latency: what the budget is a fraction of (kpid_core.engine.cost)
    round_to: int = 1  # 1 | 8 | 16 | 32: kept channel counts are multiples of it where the group size allows
    steps: int = 1  # knapsack cuts to reach the budget; > 1 = progressive prune-and-distill (kpid_core.progressive)
    step_epochs: int = 1  # fine-tuning epochs after each intermediate cut, taken from train.epochs
    candidates: int = 6  # knapsack allocations tried, the lowest loss after adaptive BN kept; 1 = the paper's one (kpid_core.engine.selection)
    candidate_batches: int = 8  # training batches that re-estimate batch norm (and as many that score) per candidate


@dataclass
class LatencyConfig:
    """Where latency is measured: the table of ``prune.cost=latency`` and the trial's dense/pruned timing."""

    measure: str = "auto"  # time the dense and pruned model after the trial: auto (= when prune.cost is latency) | on | off
    device: str = "auto"  # auto = the trial's device
    # the table's and the landing's settings default to kpid_core.engine.latency_settings's (one place)
    batch: int = _Timing.batch
    threads: int = _Timing.threads
    repeats: int = 11  # interleaved dense/pruned rounds (median) of the trial's own before/after timing
    table_repeats: int = _Timing.repeats  # rounds per layer when a latency table is measured
    land_rounds: int = _Timing.land_rounds  # prune.cost=latency: re-prunes at corrected table budgets until the measured ratio lands (0 = table only)
    land_tolerance: float = _Timing.land_tolerance  # landing ends within this fraction of the budget
    land_repeats: int = _Timing.land_repeats  # interleaved dense/pruned rounds per landing measurement (up to 3x while too noisy to decide)
    min_sample_s: float = _Timing.min_sample_s  # each timing sample repeats the forward until it lasts this long (seconds)
    cache_dir: str | None = None  # latency tables; None = $KPID_CACHE_DIR/latency or ~/.cache/kpid/latency


@dataclass
class DistillConfig:
    ce_weight: float = 1.0
    kd_weight: float = 0.0  # logits KD off: it cost 2.5-3 points at budget 0.25 on Fashion-MNIST, converged teacher too (bench/BENCHMARKS.quality.md)
    kd_form: str = "kl"
    temperature: float = 4.0
    inner_weight: float = 10.0  # was 1.0 until 2026-12-02: x10 gained +0.35 / +0.80 points at a quarter / a tenth of the MACs on five held-out Fashion-MNIST seeds (bench/BENCHMARKS.quality.md)
    match: str = "kept"
    taps: list[str] | None = None


@dataclass
class TrainConfig:
    epochs: int = 8
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5.0e-4
    label_smoothing: float = 0.0
    warmup_epochs: float = 0.0  # linear warm-up from ~0 to lr over this many epochs, then cosine to 0
    amp: str = "auto"
    channels_last: str = "auto"
    device: str = "auto"


_SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "teacher": TeacherConfig,
    "prune": PruneConfig,
    "distill": DistillConfig,
    "train": TrainConfig,
    "latency": LatencyConfig,
}


@dataclass
class TrialConfig:
    """One trial's full configuration. ``num_classes`` is not here: it comes from the data."""

    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)

    # -- conversions -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (YAML/JSON-able)."""
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Flat dict with dotted keys (``train.lr``), for result tables."""
        return flatten(self.to_dict())

    @classmethod
    def coerce(cls, cfg: TrialConfig | Mapping[str, Any] | None) -> TrialConfig:
        """A validated config from either a config or a nested dict (what Ray hands a trial).

        Args:
            cfg: a :class:`TrialConfig` (validated and returned as is) or a mapping for :meth:`from_dict`.

        Returns:
            The validated config.
        """
        return cfg.validate() if isinstance(cfg, TrialConfig) else cls.from_dict(cfg)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> TrialConfig:
        """Build and validate from a nested dict; dotted keys and aliases at top level also work
        (``{"budget": 0.3, "train.lr": 0.1}``)."""
        cfg = cls()
        for key, value in _flatten(d or {}):
            cfg.set(key, value)
        cfg.validate()
        return cfg

    def with_overrides(self, overrides: Mapping[str, Any] | Iterable[str]) -> TrialConfig:
        """A validated copy with ``key=value`` strings or a ``{key: value}`` mapping applied, in their
        order: an alias and its dotted key (``kd_weight``, ``distill.kd_weight``) name one field, and
        the later of the two wins."""
        return TrialConfig.from_dict({**self.flat(), **{ALIASES.get(k, k): v for k, v in parse_overrides(overrides)}})

    # -- setting one key -------------------------------------------------------------------------
    def set(self, key: str, value: Any) -> None:
        """Set a dotted key or alias (no validation of the whole config; see :meth:`validate`)."""
        dotted = ALIASES.get(key, key)
        if dotted == "seed":
            self.seed = _coerce("seed", int, value)
            return
        sec, _, name = dotted.partition(".")
        section = getattr(self, sec, None) if sec in _SECTIONS else None
        types = {f.name: f.type for f in fields(_SECTIONS[sec])} if section is not None else {}
        if name not in types:
            raise ConfigError(_unknown_key_message(key))
        setattr(section, name, _coerce(dotted, types[name], value))

    # -- validation ------------------------------------------------------------------------------
    def validate(self) -> TrialConfig:
        """Check every value once; raise ConfigError naming the field and the allowed values.

        Returns:
            This config (for chaining).
        """
        _check_names(self)
        _check_latency(self.latency)
        _check_training_choices(self.distill, self.train)
        _check_ranges(self)
        _check_required(self)
        return self


def _check_names(cfg: TrialConfig) -> None:
    """Names of the data, model, teacher source and pruning choices."""
    # none of these imports torch (kpid_core.choices says why); only a torchvision model's name does
    from kpid_core import choices as c
    from kpid_core.engine.knapsack import METHODS as SOLVERS
    from kpid_core.models import check_model_name

    d, p = cfg.data, cfg.prune
    _choice("data.name", d.name, c.DATASETS, unknown=True)
    if d.augment is not None:
        _choice("data.augment", d.augment, c.AUGMENTS)
    if d.channels is not None:
        _choice("data.channels", d.channels, (1, 3))
    try:
        check_model_name(cfg.model.name)
    except ConfigError as exc:
        raise type(exc)(f"model.name: {exc}") from None
    _choice("teacher.source", cfg.teacher.source, ("train", "checkpoint", "pretrained"))
    _choice("prune.metric", p.metric, c.METRICS, unknown=True)
    _choice("prune.allocation", p.allocation, c.ALLOCATIONS)
    _choice("prune.solver", p.solver, SOLVERS)
    _choice("prune.normalize", p.normalize, c.NORMALIZERS)
    _choice("prune.linearize", p.linearize, c.LINEARIZE_AT)
    if p.spread != 0:
        _range("prune.spread", p.spread, 1.0, None)
    _choice("prune.cost", p.cost, c.COSTS)
    _choice("prune.round_to", p.round_to, c.ROUND_TO)


def _check_latency(lat: LatencyConfig) -> None:
    _choice("latency.measure", lat.measure, ("auto", "on", "off"))
    _check_device("latency.device", lat.device)
    for name in ("batch", "threads", "repeats", "table_repeats", "land_repeats"):
        _range(f"latency.{name}", getattr(lat, name), 1, None)
    _range("latency.land_rounds", lat.land_rounds, 0, None)
    _range("latency.land_tolerance", lat.land_tolerance, 0.0, 1.0, low_open=True, high_open=True)
    _range("latency.min_sample_s", lat.min_sample_s, 0.0, 10.0, low_open=True)


def _check_training_choices(k: DistillConfig, tr: TrainConfig) -> None:
    _choice("distill.kd_form", k.kd_form, ("kl", "mse"))
    _choice("distill.match", k.match, ("kept", "projection"))
    _choice("train.optimizer", tr.optimizer, ("sgd", "adamw"))
    _choice("train.amp", tr.amp, ("auto", "on", "off"))
    _choice("train.channels_last", tr.channels_last, ("auto", "on", "off"))
    _check_device("train.device", tr.device)


def _check_device(name: str, device: str) -> None:
    if not (device in ("auto", "cpu", "cuda") or device.startswith("cuda:")):
        raise ConfigError(f"{name}={device!r}: allowed values are auto, cpu, cuda, cuda:N")


def _check_ranges(cfg: TrialConfig) -> None:
    """Numbers: fractions, weights, rates, counts."""
    d, m, t, p, k, tr = cfg.data, cfg.model, cfg.teacher, cfg.prune, cfg.distill, cfg.train
    _range("seed", cfg.seed, 0, 2**32 - 1)  # numpy's and scikit-learn's seed range
    _range("prune.budget", p.budget, 0.0, 1.0, low_open=True)
    _range("prune.min_keep", p.min_keep, 0.0, 1.0, low_open=True)
    _range("data.val_fraction", d.val_fraction, 0.0, 1.0, low_open=True, high_open=True)
    _range("data.test_fraction", d.test_fraction, 0.0, 1.0, high_open=True)
    if d.val_fraction + d.test_fraction >= 1.0:
        raise ConfigError("data.val_fraction + data.test_fraction must be < 1 (something must be left to train on)")
    _range("model.width", m.width, 0.0, None, low_open=True)
    _range("distill.temperature", k.temperature, 0.0, None, low_open=True)
    for name in ("ce_weight", "kd_weight", "inner_weight"):
        _range(f"distill.{name}", getattr(k, name), 0.0, None)
    if k.ce_weight + k.kd_weight + k.inner_weight <= 0:
        raise ConfigError("distill.ce_weight + kd_weight + inner_weight must be > 0 (nothing to train on)")
    _range("train.lr", tr.lr, 0.0, None, low_open=True)
    _range("teacher.lr", t.lr, 0.0, None, low_open=True)
    _range("train.momentum", tr.momentum, 0.0, 1.0, high_open=True)
    _range("train.weight_decay", tr.weight_decay, 0.0, None)
    _range("train.label_smoothing", tr.label_smoothing, 0.0, 1.0, high_open=True)
    _range("train.warmup_epochs", tr.warmup_epochs, 0.0, None)
    for name, v, lo in (("train.epochs", tr.epochs, 0), ("teacher.epochs", t.epochs, 0),
                        ("data.batch_size", d.batch_size, 1),
                        ("data.num_workers", d.num_workers, 0),
                        ("prune.importance_batches", p.importance_batches, 1),
                        ("prune.steps", p.steps, 1), ("prune.step_epochs", p.step_epochs, 1),
                        ("prune.candidates", p.candidates, 1), ("prune.candidate_batches", p.candidate_batches, 1)):
        _range(name, v, lo, None)
    if p.steps > 1 and (p.steps - 1) * p.step_epochs >= tr.epochs:
        raise ConfigError(f"prune.steps={p.steps} x prune.step_epochs={p.step_epochs}: the intermediate steps "
                          f"need (steps - 1) x step_epochs < train.epochs={tr.epochs} (the last cut is fine-tuned too)")
    if p.steps > 1 and p.cost != "macs":
        raise ConfigError(f"prune.steps={p.steps} needs prune.cost=macs (got {p.cost!r})")
    for name, v in (("data.image_size", d.image_size), ("data.train_size", d.train_size)):
        if v is not None:
            _range(name, v, 1, None)


def _check_required(cfg: TrialConfig) -> None:
    """Fields that one choice makes necessary."""
    d, t, k = cfg.data, cfg.teacher, cfg.distill
    if t.source == "checkpoint" and not t.checkpoint:
        raise ConfigError("teacher.checkpoint is required when teacher.source=checkpoint (path to a state dict)")
    if d.name in ("cifar10", "cifar100", "imagefolder") and not d.root:
        raise ConfigError(f"data.root is required for data.name={d.name!r} (a local directory; nothing is downloaded)")
    if k.taps is not None and not all(isinstance(s, str) for s in k.taps):
        raise ConfigError("distill.taps must be a list of module names (e.g. [layer1, layer2]) or null")


def as_section(kind: type[_S], cfg: _S | Mapping[str, Any] | None) -> _S:
    """A config section from the dataclass itself or a plain dict of its fields (library callers
    pass either), so that a missing field takes the config's default and no call site keeps its own.

    Args:
        kind: the section class, e.g. :class:`TrainConfig` or :class:`DataConfig`.
        cfg: an instance of ``kind`` (returned as is), a mapping (keys that are no field of ``kind``
            are ignored) or None (all defaults).

    Returns:
        An instance of ``kind``.
    """
    if isinstance(cfg, kind):
        return cfg
    names = {f.name for f in fields(kind)}
    return kind(**{k: v for k, v in (cfg or {}).items() if k in names})


def _valid_keys() -> list[str]:
    keys = ["seed"] + [f"{s}.{f.name}" for s, c in _SECTIONS.items() for f in fields(c)]
    return keys


def _unknown_key_message(key: str) -> str:
    valid = _valid_keys()
    hint = difflib.get_close_matches(key, valid + list(ALIASES), n=1)
    did = f" (did you mean {hint[0]!r}?)" if hint else ""
    return (f"unknown config key {key!r}{did}; valid keys: {', '.join(valid)}; "
            f"aliases: {', '.join(f'{a}->{t}' for a, t in ALIASES.items())}")


def _choice(field_name: str, value: Any, allowed: Iterable[str], unknown: bool = False) -> None:
    allowed = list(allowed)
    if value not in allowed:
        err = UnknownNameError if unknown else ConfigError
        raise err(f"{field_name}={value!r} is not allowed; allowed values: {', '.join(map(str, allowed))}")


def _range(name: str, v: float, lo: float | None, hi: float | None, *, low_open: bool = False,
           high_open: bool = False) -> None:
    bad = (lo is not None and (v < lo or (low_open and v == lo))) or (
        hi is not None and (v > hi or (high_open and v == hi)))
    if bad or not math.isfinite(v):
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        interval = f"{'(' if low_open else '['}{lo_s}, {hi_s}{')' if high_open or hi is None else ']'}"
        raise ConfigError(f"{name}={v!r} is out of range; allowed: {interval}")


_ON_OFF_KEYS = ("train.amp", "train.channels_last", "latency.measure")


def _coerce(key: str, typ: Any, value: Any) -> Any:
    """Convert ``value`` to the field type (string annotations: ``from __future__``)."""
    t = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
    optional = "None" in t
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key} must not be null (expects {t})")
    base = t.replace(" | None", "").strip()
    try:
        if base == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if base == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if base == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
                return value.lower() in ("true", "yes", "on")
            raise ValueError
        if base == "str":
            if isinstance(value, bool) and key in _ON_OFF_KEYS:  # YAML 1.1 reads on/off as booleans
                return "on" if value else "off"
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError
            return str(value)
        if base.startswith("list"):
            if isinstance(value, str) and value.strip().startswith("["):  # a YAML list written as text
                try:
                    value = yaml.safe_load(value)
                except yaml.YAMLError:
                    raise ValueError from None
            elif isinstance(value, str):
                value = [s.strip() for s in value.split(",") if s.strip()]
            if not isinstance(value, (list, tuple)):
                raise ValueError
            return [str(v) for v in value]
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r} has the wrong type; expects {t}") from None
    return value


def _flatten(d: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Dotted ``(key, value)`` pairs of a config; a mapping under a name that is no section is an
    unknown key (named as the user wrote it, not as one of its dotted children)."""
    for k, v in d.items():
        if isinstance(v, Mapping) and k not in _SECTIONS:
            raise ConfigError(_unknown_key_message(k))
    return list(flatten(d).items())


def parse_overrides(overrides: Mapping[str, Any] | Iterable[str] | None) -> list[tuple[str, Any]]:
    """``["train.lr=0.1", "budget=0.3"]`` → ``[("train.lr", 0.1), ("budget", 0.3)]``; values are
    YAML scalars (``null``, ``1e-3``, ``[layer1, layer2]``)."""
    if overrides is None:
        return []
    if isinstance(overrides, Mapping):
        return list(overrides.items())
    out = []
    for item in overrides:
        key, sep, raw = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value (e.g. train.lr=0.1 or budget=0.3)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        out.append((key.strip(), value))
    return out


def default_config_path() -> Path:
    """The bundled default trial config (digits, about a minute on 2 CPU cores)."""
    return Path(__file__).resolve().parent / "configs" / "trial.yaml"


def load_config(path: str | os.PathLike | None = None,
                overrides: Mapping[str, Any] | Iterable[str] | None = ()) -> TrialConfig:
    """Load a YAML trial config, apply overrides, validate once.

    Args:
        path: a YAML file of nested sections, or None for the bundled default.
        overrides: ``["train.lr=0.1", "budget=0.3"]`` or ``{"train.lr": 0.1}`` (dotted keys or aliases).

    Returns:
        The validated config. Raises ConfigError naming the field and what is allowed.
    """
    p = Path(path) if path is not None else default_config_path()
    raw: Any = {}
    if path is not None or p.exists():
        from kpid_core.cli import YamlFileError, read_yaml

        try:
            raw = read_yaml(p) or {}
        except YamlFileError as why:
            raise ConfigError(f"config file {str(p)!r} {why}") from None
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of sections (data:, model:, ...)")
    merged = list(_flatten(raw)) + parse_overrides(overrides)
    cfg = TrialConfig()
    for key, value in merged:
        cfg.set(key, value)
    return cfg.validate()
