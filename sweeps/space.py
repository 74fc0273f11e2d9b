"""Sweep config (YAML) → validated plain data → Ray Tune search space.

A sweep YAML holds a base trial config (``base:``, the keys of ``kpid_core.config``, nested or dotted,
aliases allowed), a ``space:`` of swept keys and a ``search:`` section::

    base:   {dataset: digits, model: digits_resnet, epochs: 3}
    space:
      budget: [0.3, 0.5, 0.7]                 # list -> categorical (grid: every value)
      metric: [taylor, l1]
      kd_weight: {low: 0.0, high: 2.0}        # range -> uniform (log: true -> log-uniform)
      lr: {low: 1.0e-3, high: 0.1, log: true}
    search: {mode: optuna, num_samples: 12, early_stopping: {grace_period: 1, reduction_factor: 2}}

Keys are canonicalised to dotted config keys (``budget`` → ``prune.budget``) and that dotted key is
the Tune parameter name. The budget is always a categorical (also when given as a range with a step)
so that early stopping can keep one ASHA state per budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kpid_core.cli import YamlFileError, read_yaml
from kpid_core.errors import ConfigError
from kpid_core.results_schema import flatten  # re-exported: the one dotted-key flattener

__all__ = [
    "BUDGET_KEY",
    "DEFAULT_CONFIG",
    "METRIC_KEY",
    "SweepSpec",
    "apply_params",
    "canonical_key",
    "describe_space",
    "flatten",
    "is_folder_name",
    "load_sweep",
    "parse_sweep",
    "tune_param_space",
    "unflatten",
]

BUDGET_KEY = "prune.budget"
METRIC_KEY = "prune.metric"
#: The bundled default sweep (digits, ~2-3 minutes on 2 CPU cores).
DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "digits_demo.yaml"

_TOP_KEYS = {"name", "base", "gpu", "space", "search", "resources", "baselines"}
_BASELINE_KEYS = {"model", "width", "budgets", "epochs"}
_SEARCH_KEYS = {
    "mode", "num_samples", "seed", "early_stopping", "max_failures", "max_concurrent",
    "objectives",
}
_RESOURCE_KEYS = {"cpus_per_trial", "gpus_per_trial", "workers_per_trial"}
_RANGE_KEYS = {"low", "high", "log", "step"}

def _aliases() -> dict[str, str]:
    from kpid_core.config import ALIASES

    return dict(ALIASES)


def _defaults() -> dict[str, Any]:
    """Flat dotted defaults of a trial config (its keys are the valid keys)."""
    from kpid_core.config import TrialConfig

    return TrialConfig().flat()


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b": v}`` → nested dict."""
    out: dict[str, Any] = {}
    for key, v in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return out


def canonical_key(key: str, valid: set[str], where: str) -> str:
    """Alias or dotted key → dotted config key; ConfigError naming the allowed keys otherwise."""
    key = _aliases().get(key, key)
    if key not in valid:
        shown = ", ".join(sorted(set(_aliases()) | valid))
        raise ConfigError(f"{where}: unknown config key {key!r}; allowed: {shown}")
    return key


@dataclass
class SweepSpec:
    """A validated sweep: flat base config, canonical space, search and resource settings."""

    name: str | None
    base: dict[str, Any]  # flat dotted keys → values (full config: defaults + base overrides)
    space: dict[str, Any]  # dotted key → list (categorical) or {"low","high","log","step"}
    mode: str = "optuna"
    num_samples: int = 8
    seed: int = 0
    early_stopping: dict[str, Any] | None = field(default_factory=lambda: {"grace_period": 1,
                                                                           "reduction_factor": 2})
    max_failures: int = 2
    max_concurrent: int | None = None
    objectives: tuple[tuple[str, str], ...] = (("val_accuracy", "max"), ("macs", "min"))
    resources: dict[str, Any] = field(default_factory=dict)
    baselines: list[dict[str, Any]] = field(default_factory=list)  # validated ``baselines:`` entries
    raw: dict[str, Any] = field(default_factory=dict)
    gpu: dict[str, Any] = field(default_factory=dict)  # flat base overrides for runs with GPUs (``gpu:``)

    def use_gpu_settings(self) -> dict[str, Any]:
        """Apply the ``gpu:`` section to the base config (a run that has GPUs: full-size data and
        schedules from the same file). Returns the overrides applied."""
        self.base.update(self.gpu)
        return dict(self.gpu)

    def baseline_runs(self) -> list[dict[str, Any]]:
        """One run per (entry, budget) for ``width: match`` (``budgets`` of the entry, default the
        space's), one per entry otherwise: ``{"label", "model", "width", "budget", "epochs"}``."""
        runs = []
        for b in self.baselines:
            epochs = b.get("epochs")
            if b["width"] == "match":
                for budget in b.get("budgets") or self.budgets:
                    runs.append({"label": f"{b['model']}-b{float(budget):g}", "model": b["model"], "width": None,
                                 "budget": float(budget), "epochs": epochs})
            else:
                runs.append({"label": f"{b['model']}-w{float(b['width']):g}", "model": b["model"],
                             "width": float(b["width"]), "budget": None, "epochs": epochs})
        return runs

    @property
    def budgets(self) -> list[float]:
        b = self.space.get(BUDGET_KEY)
        return list(b) if isinstance(b, list) else [float(self.base[BUDGET_KEY])]

    @property
    def metrics(self) -> list[str]:
        """Every importance metric a trial of this sweep may use (prepared once, shared)."""
        m = self.space.get(METRIC_KEY)
        return list(m) if isinstance(m, list) else [str(self.base[METRIC_KEY])]

    def num_trials(self) -> int:
        """Trials the sweep will run (grid: product of the lists × num_samples)."""
        if self.mode == "grid":
            return math.prod(len(v) for v in self.space.values()) * self.num_samples
        return self.num_samples

    def to_dict(self) -> dict[str, Any]:
        """The resolved sweep (written to ``sweep.yaml``; reloadable with :func:`parse_sweep`)."""
        return {
            "name": self.name,
            "base": unflatten(self.base),
            "space": self.space,
            "search": {
                "mode": self.mode, "num_samples": self.num_samples, "seed": self.seed,
                "early_stopping": self.early_stopping, "max_failures": self.max_failures,
                "max_concurrent": self.max_concurrent,
                "objectives": [list(o) for o in self.objectives],
            },
            **({"gpu": unflatten(self.gpu)} if self.gpu else {}),
            "resources": self.resources,
            **({"baselines": self.baselines} if self.baselines else {}),
        }


def load_sweep(path: str | Path | None = None) -> SweepSpec:
    """Read and validate a sweep YAML (default: the bundled digits demo)."""
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        raw = read_yaml(path)
    except YamlFileError as why:
        raise ConfigError(f"--config: {path} {why}") from None
    return parse_sweep(raw or {}, where=str(path))


def _range(key: str, spec: dict[str, Any], where: str) -> dict[str, Any]:
    bad = set(spec) - _RANGE_KEYS
    if bad or "low" not in spec or "high" not in spec:
        raise ConfigError(
            f"{where}: space.{key}: a range needs low and high (optional log, step); got {sorted(spec)}"
        )
    lo, hi = spec["low"], spec["high"]
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (lo, hi)) or lo > hi:
        raise ConfigError(f"{where}: space.{key}: low/high must be numbers with low <= high")
    if spec.get("log") and lo <= 0:
        raise ConfigError(f"{where}: space.{key}: log ranges need low > 0")
    return {k: spec[k] for k in ("low", "high", "log", "step") if k in spec}


def _expand(key: str, rng: dict[str, Any], where: str) -> list[float]:
    step = rng.get("step")
    if not step or step <= 0:
        raise ConfigError(f"{where}: space.{key}: needs a list or a range with step > 0 here")
    n = math.floor((rng["high"] - rng["low"]) / step + 1e-9) + 1
    return [round(rng["low"] + i * step, 10) for i in range(n)]


def parse_sweep(raw: dict[str, Any], where: str = "sweep config") -> SweepSpec:
    """Validate a sweep dict; every problem is a one-line ConfigError naming the field.

    Args:
        raw: the sweep mapping (``name``, ``base``, ``gpu``, ``space``, ``search``, ``resources``,
            ``baselines``), as read from YAML.
        where: what to name in error messages (the file's path).

    Returns:
        The validated :class:`SweepSpec`.
    """
    _check_top_keys(raw, where)
    defaults = _defaults()
    valid = set(defaults)
    base = dict(defaults)
    for k, v in flatten(raw.get("base") or {}).items():
        base[canonical_key(k, valid, f"{where}: base")] = v
    gpu = {canonical_key(k, valid, f"{where}: gpu"): v for k, v in flatten(raw.get("gpu") or {}).items()}
    space = _split_space(raw.get("space") or {}, base, valid, where)
    search = dict(raw.get("search") or {})
    mode = _search_mode(search, where)
    _resolve_budgets(space, base, mode, where)
    _validate_trial(base, space, where)
    if gpu:
        _validate_trial({**base, **gpu}, space, f"{where}: gpu")
    if not space:
        raise ConfigError(
            f"{where}: space: empty search space; list at least one key with two or more values "
            "(e.g. budget: [0.3, 0.5])"
        )
    es = _early_stopping(search, where)
    num_samples = _whole(search, "num_samples", 1 if mode == "grid" else 8, 1, where)
    resources = _resources(raw, where)
    objectives = tuple(tuple(o) for o in search.get("objectives", (("val_accuracy", "max"), ("macs", "min"))))
    name = raw.get("name")
    if name is not None and not is_folder_name(name):
        raise ConfigError(f"{where}: name must be a folder name (no '/', not '.' or '..'), got {name!r}")
    spec = SweepSpec(
        name=name,
        base=base,
        gpu=gpu,
        space=space,
        mode=mode,
        num_samples=num_samples,
        seed=_whole(search, "seed", 0, 0, where),
        early_stopping=es,
        max_failures=_whole(search, "max_failures", 2, 0, where),
        max_concurrent=_whole(search, "max_concurrent", None, 1, where),
        objectives=objectives,  # type: ignore[arg-type]
        resources=resources,
        baselines=_baselines(raw.get("baselines"), where),
        raw=raw,
    )
    _check_baseline_labels(spec, where)
    return spec


def _check_top_keys(raw: Any, where: str) -> None:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping with keys {sorted(_TOP_KEYS)}")
    bad = set(raw) - _TOP_KEYS
    if bad:
        raise ConfigError(f"{where}: unknown top-level key(s) {sorted(bad)}; allowed: {sorted(_TOP_KEYS)}")
    for section in ("base", "gpu", "space", "search", "resources"):
        if raw.get(section) is not None and not isinstance(raw[section], dict):
            raise ConfigError(f"{where}: {section} must be a mapping of keys to values (key: value lines), "
                              f"got {type(raw[section]).__name__}")


def _split_space(raw_space: dict[str, Any], base: dict[str, Any], valid: set[str], where: str) -> dict[str, Any]:
    """The swept dimensions (dotted key → list or range). A single value, a one-item list or a range
    with low == high is not a dimension: it goes into ``base`` (updated in place)."""
    space: dict[str, Any] = {}
    for k, v in raw_space.items():
        key = canonical_key(k, valid, f"{where}: space")
        if isinstance(v, dict):
            v = _range(k, v, where)
            if v["low"] == v["high"]:
                base[key] = v["low"]
                continue
        elif isinstance(v, (list, tuple)):
            if not v:
                raise ConfigError(f"{where}: space.{k}: empty list")
            if len(v) == 1:  # one value is not a dimension: it goes into the base config
                base[key] = v[0]
                continue
            v = list(v)
        else:
            base[key] = v
            continue
        space[key] = v
    return space


def _search_mode(search: dict[str, Any], where: str) -> str:
    bad = set(search) - _SEARCH_KEYS
    if bad:
        raise ConfigError(f"{where}: search: unknown key(s) {sorted(bad)}; allowed: {sorted(_SEARCH_KEYS)}")
    mode = search.get("mode", "optuna")
    if mode not in ("optuna", "grid"):
        raise ConfigError(f"{where}: search.mode: {mode!r}; allowed: optuna, grid")
    return mode


def _resolve_budgets(space: dict[str, Any], base: dict[str, Any], mode: str, where: str) -> None:
    """Expand ranges to lists where they must be lists (the budget always, every key in grid mode)
    and check every budget is in (0, 1]; ``space`` is updated in place."""
    if BUDGET_KEY in space and isinstance(space[BUDGET_KEY], dict):
        space[BUDGET_KEY] = _expand("budget", space[BUDGET_KEY], where)
    if mode == "grid":
        for k, v in list(space.items()):
            if isinstance(v, dict):
                space[k] = _expand(k, v, where)
    budgets = space.get(BUDGET_KEY, [base[BUDGET_KEY]])
    for b in budgets:
        if not isinstance(b, (int, float)) or isinstance(b, bool) or not 0 < float(b) <= 1:
            raise ConfigError(f"{where}: budget {b!r} is outside (0, 1] (fraction of the dense MACs kept)")
    if BUDGET_KEY in space:
        space[BUDGET_KEY] = [float(b) for b in space[BUDGET_KEY]]


def is_folder_name(name: Any) -> bool:
    """Whether ``name`` can name an experiment: one folder under the storage root (a non-empty
    string without path separators or NUL, not '.' or '..').

    Args:
        name: the sweep file's ``name`` or ``--name``.

    Returns:
        True when it is one folder name.
    """
    return isinstance(name, str) and name not in ("", ".", "..") and not any(c in name for c in "/\\\0")


def _whole(search: dict[str, Any], key: str, default: int | None, low: int, where: str) -> int | None:
    """``search[key]`` as a whole number >= ``low`` (``default`` when absent; None stays None)."""
    v = search.get(key, default)
    if v is None and default is None:
        return None
    if not _is_whole(v, low):
        raise ConfigError(f"{where}: search.{key} must be a whole number >= {low}, got {v!r}")
    return int(v)


def _is_whole(v: Any, low: int) -> bool:
    """A YAML number that is a whole number >= ``low`` (not a bool, nan or inf)."""
    try:
        return not isinstance(v, bool) and isinstance(v, (int, float)) and v == int(v) and v >= low
    except (ValueError, OverflowError):  # nan, inf
        return False


def _early_stopping(search: dict[str, Any], where: str) -> dict[str, Any] | None:
    """``search.early_stopping`` → ``{grace_period, reduction_factor}``, or None when switched off."""
    es = search.get("early_stopping", {"grace_period": 1, "reduction_factor": 2})
    if es is None or es is False:
        return None
    if not isinstance(es, dict) or set(es) - {"grace_period", "reduction_factor"}:
        raise ConfigError(f"{where}: search.early_stopping: expected {{grace_period, reduction_factor}} "
                          "or null")
    grace, factor = es.get("grace_period", 1), es.get("reduction_factor", 2)
    try:
        factor = float(factor)
    except (TypeError, ValueError):
        factor = math.nan  # refused below with the allowed ranges
    if not (_is_whole(grace, 1) and 1 < factor < math.inf):
        raise ConfigError(f"{where}: search.early_stopping: grace_period must be an integer >= 1 and "
                          f"reduction_factor a number > 1, got {search.get('early_stopping')!r}")
    return {"grace_period": int(grace), "reduction_factor": factor}


def _resources(raw: dict[str, Any], where: str) -> dict[str, Any]:
    resources = dict(raw.get("resources") or {})
    bad = set(resources) - _RESOURCE_KEYS
    if bad:
        raise ConfigError(f"{where}: resources: unknown key(s) {sorted(bad)}; allowed: {sorted(_RESOURCE_KEYS)}")
    return resources


def _check_baseline_labels(spec: SweepSpec, where: str) -> None:
    labels = [r["label"] for r in spec.baseline_runs()]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:  # two runs with one label would share one result directory
        raise ConfigError(f"{where}: baselines: the same baseline run is listed twice: {', '.join(twice)}")


def _baselines(entries: Any, where: str) -> list[dict[str, Any]]:
    """Validate ``baselines:``: a list of ``{model, width: NUMBER | match, budgets?, epochs?}``."""
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: baselines: expected a list of {{model: NAME, width: NUMBER|match}}")
    # no torch (only a torchvision model's name imports it)
    from kpid_core.models import check_model_name, model_has_width, models_with_width

    out = []
    for i, e in enumerate(entries):
        at = f"{where}: baselines[{i}]"
        if not isinstance(e, dict) or "model" not in e:
            raise ConfigError(f"{at}: expected a mapping with 'model' (and width, budgets, epochs)")
        bad = set(e) - _BASELINE_KEYS
        if bad:
            raise ConfigError(f"{at}: unknown key(s) {sorted(bad)}; allowed: {sorted(_BASELINE_KEYS)}")
        model = e["model"]
        try:
            check_model_name(model)
        except ConfigError as exc:
            raise type(exc)(f"{at}.model: {exc}") from None
        width = e.get("width", "match" if model_has_width(model) else 1.0)
        if width != "match" and (isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0):
            raise ConfigError(f"{at}.width: {width!r}; allowed: a number > 0 or 'match'")
        if (width == "match" or width != 1.0) and not model_has_width(model):
            raise ConfigError(f"{at}.width: {model!r} has no width multiplier (these do: "
                              f"{', '.join(models_with_width())}); use width: 1.0")
        entry: dict[str, Any] = {"model": model, "width": width if width == "match" else float(width)}
        if "budgets" in e:
            bl = e["budgets"] if isinstance(e["budgets"], list) else [e["budgets"]]
            if width != "match" or not bl or not all(_is_fraction(x) for x in bl):
                raise ConfigError(f"{at}.budgets: a list of budgets in (0, 1], only with width: match")
            entry["budgets"] = [float(x) for x in bl]
        if "epochs" in e:
            if isinstance(e["epochs"], bool) or not isinstance(e["epochs"], int) or e["epochs"] < 1:
                raise ConfigError(f"{at}.epochs: {e['epochs']!r}; allowed: an integer >= 1")
            entry["epochs"] = int(e["epochs"])
        out.append(entry)
    return out


def _is_fraction(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x <= 1


def _validate_trial(base: dict[str, Any], space: dict[str, Any], where: str) -> None:
    """Every value of the space must make a valid trial config (checked once, up front)."""
    from kpid_core.config import TrialConfig

    try:
        TrialConfig.from_dict(unflatten(base))
        for k, v in space.items():
            for value in (v if isinstance(v, list) else [v["low"], v["high"]]):
                TrialConfig.from_dict(unflatten({**base, k: value}))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def apply_params(base: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Nested trial config = flat base with the trial's sampled dotted params applied."""
    flat = dict(base)
    for k, v in params.items():
        if k in flat or "." in k:
            flat[k] = v.item() if hasattr(v, "item") else v
    return unflatten(flat)


def tune_param_space(spec: SweepSpec) -> dict[str, Any]:
    """Ray Tune ``param_space``: grid_search lists in grid mode, Tune domains for Optuna."""
    from ray import tune

    out: dict[str, Any] = {}
    for k, v in spec.space.items():
        if spec.mode == "grid":
            out[k] = tune.grid_search(list(v))
        elif isinstance(v, list):
            out[k] = tune.choice(v)
        else:
            ints = isinstance(v["low"], int) and isinstance(v["high"], int) and not v.get("log")
            if ints and v.get("step", 1) == 1 and k.endswith("epochs"):
                out[k] = tune.randint(v["low"], v["high"] + 1)
            elif v.get("step"):
                out[k] = tune.quniform(v["low"], v["high"], v["step"])
            elif v.get("log"):
                out[k] = tune.loguniform(v["low"], v["high"])
            else:
                out[k] = tune.uniform(v["low"], v["high"])
    return out


def describe_space(spec: SweepSpec) -> list[str]:
    """Human-readable lines, one per swept key (for ``--dry-run``)."""
    lines = []
    for k, v in spec.space.items():
        if isinstance(v, list):
            kind = "grid" if spec.mode == "grid" else "choice"
            lines.append(f"  {k:<24} {kind} {v}")
        else:
            scale = "log-uniform" if v.get("log") else "uniform"
            step = f" step {v['step']}" if v.get("step") else ""
            lines.append(f"  {k:<24} {scale} [{v['low']}, {v['high']}]{step}")
    for r in spec.baseline_runs():
        size = f"width matched to budget {r['budget']:g}" if r["width"] is None else f"width {r['width']:g}"
        lines.append(f"  baseline {r['model']:<15} {size}, {r['epochs'] or spec.base['train.epochs']} epochs")
    return lines
