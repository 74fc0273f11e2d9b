"""Load a finished (or interrupted) sweep into one typed pandas table, one row per trial.

Sources, in order of preference, inside a results directory:

1. ``trials.parquet`` — what ``sweeps`` writes (columns pinned in docs/CONTRACTS.md);
2. ``trials.csv`` — the same table as text;
3. Ray Tune's own experiment directory (``experiment_state-*.json``), read with
   :class:`ray.tune.ExperimentAnalysis` (a file reader: no Ray cluster is started).

Units follow the contract: ``accuracy`` columns are fractions in [0, 1], ``macs`` are
multiply-accumulates per image, ``latency_ms`` milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError

__all__ = [
    "FINISHED",
    "FLOAT_COLUMNS",
    "INT_COLUMNS",
    "KINDS",
    "REQUIRED_COLUMNS",
    "STATUSES",
    "STR_COLUMNS",
    "load_results",
    "normalize_results",
]

FINISHED = "finished"
STATUSES = ("finished", "early_stopped", "error", "running", "pending")
KINDS = ("pruned", "baseline")
FLOAT_COLUMNS = (
    "budget", "kd_weight", "inner_weight", "temperature", "lr", "accuracy", "val_accuracy",
    "teacher_accuracy", "macs", "macs_dense", "macs_ratio", "params", "latency_ms",
)
INT_COLUMNS = ("epochs", "epochs_done")
STR_COLUMNS = ("trial_id", "arch", "metric", "match", "error", "checkpoint_path")
# Without these nothing can be analysed; every other contract column is optional (filled with NA).
REQUIRED_COLUMNS = ("trial_id", "status", "accuracy", "macs")

# Where a contract column lives in a trial config when Ray's own files are the only source.
_CONFIG_KEYS: dict[str, tuple[str, ...]] = {
    "arch": ("model.name", "model", "arch"),
    "budget": ("prune.budget", "budget"),
    "metric": ("prune.metric", "metric"),
    "kd_weight": ("distill.kd_weight", "kd_weight"),
    "inner_weight": ("distill.inner_weight", "inner_weight", "gamma"),
    "temperature": ("distill.temperature", "temperature"),
    "match": ("distill.match", "match"),
    "lr": ("train.lr", "lr"),
    "epochs": ("train.epochs", "epochs"),
    "kind": ("kind",),
}
_RAY_STATUS = {"TERMINATED": FINISHED, "ERROR": "error", "RUNNING": "running", "PAUSED": "running",
               "PENDING": "pending"}


def load_results(path: str | Path) -> pd.DataFrame:
    """Read a sweep's results (directory, ``trials.parquet`` or ``trials.csv``) into a typed table.

    ``df.attrs["source"]`` names the file or directory read. Raises :class:`AnalysisError` with one
    line naming the problem for a missing path, a directory that is not a sweep result, an
    unreadable file, an empty sweep or missing required columns.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise AnalysisError(f"results path {path} does not exist")
    if path.is_file():
        df, source = _read_table(path), path
    elif (path / "trials.parquet").is_file():
        source = path / "trials.parquet"
        df = _read_table(source)
    elif (path / "trials.csv").is_file():
        source = path / "trials.csv"
        df = _read_table(source)
    elif any(path.glob("experiment_state-*.json")):
        df, source = _from_ray(path), path
    else:
        raise AnalysisError(
            f"{path} is not a sweep result: no trials.parquet, trials.csv or Ray experiment state "
            "(experiment_state-*.json) in it"
        )
    if len(df) == 0:
        raise AnalysisError(f"empty sweep: {source} holds no trials")
    df = normalize_results(df, source=str(source))
    df.attrs["source"] = str(source)
    return df


def _read_table(file: Path) -> pd.DataFrame:
    try:
        if file.suffix == ".parquet":
            return pd.read_parquet(file)
        if file.suffix == ".csv":
            # keep_default_na=False + explicit NA list: an empty `error` cell is "", not NaN.
            return pd.read_csv(file, keep_default_na=False, na_values=["", "nan", "NaN", "NA", "None"])
    except Exception as exc:  # pyarrow/pandas raise many types for a truncated or foreign file
        raise AnalysisError(f"cannot read {file}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    raise AnalysisError(f"cannot read {file}: expected a .parquet or .csv trials table")


def normalize_results(df: pd.DataFrame, source: str = "results") -> pd.DataFrame:
    """Check the required columns and cast every contract column to its type (returns a copy).

    Floats: metrics and weights (NaN where absent); nullable ints (``Int64``): ``epochs``,
    ``epochs_done``; categoricals: ``status`` (categories :data:`STATUSES`) and ``kind``; strings:
    ids, names, ``error`` ("" when none).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise AnalysisError(
            f"{source} lacks required column(s) {', '.join(missing)}; "
            f"a trials table needs {', '.join(REQUIRED_COLUMNS)}"
        )
    df = df.copy()
    status = df["status"].astype("string").str.strip().str.lower()
    unknown = sorted(set(status.dropna()) - set(STATUSES))
    if unknown or status.isna().any():
        bad = unknown or ["<empty>"]
        raise AnalysisError(
            f"{source}: column status has value(s) {', '.join(map(repr, bad))}; "
            f"allowed: {', '.join(STATUSES)}"
        )
    df["status"] = pd.Categorical(status.astype(str), categories=STATUSES)
    kind = df["kind"].astype("string").fillna("pruned") if "kind" in df.columns else "pruned"
    df["kind"] = pd.Categorical(pd.Series(kind, index=df.index).astype(str), categories=KINDS)
    if df["kind"].isna().any():
        raise AnalysisError(f"{source}: column kind must be one of {', '.join(KINDS)}")
    for col in FLOAT_COLUMNS:
        df[col] = _to_float(df[col], col, source) if col in df.columns else np.nan
    for col in INT_COLUMNS:
        values = _to_float(df[col], col, source) if col in df.columns else pd.Series(np.nan, index=df.index)
        df[col] = values.round().astype("Int64")
    for col in STR_COLUMNS:
        if col not in df.columns:
            df[col] = pd.NA
        df[col] = df[col].astype("string")
    df["error"] = df["error"].fillna("")
    return df.reset_index(drop=True)


def _to_float(values: pd.Series, col: str, source: str) -> pd.Series:
    out = pd.to_numeric(values, errors="coerce").astype("float64")
    bad = values.notna() & out.isna() & (values.astype("string").str.strip() != "")
    if bad.any():
        raise AnalysisError(f"{source}: column {col} must be numeric, got {values[bad].iloc[0]!r}")
    return out


def _from_ray(exp_dir: Path) -> pd.DataFrame:
    """Build the trials table from Ray Tune's experiment files (no running cluster needed)."""
    try:
        from ray.tune import ExperimentAnalysis
    except ImportError as exc:  # pragma: no cover - ray is a project dependency
        raise AnalysisError("reading a Ray experiment directory needs ray[tune]: pip install 'ray[tune]'") from exc
    try:
        ea = ExperimentAnalysis(str(exp_dir.resolve()))
    except Exception as exc:
        raise AnalysisError(f"cannot read Ray experiment {exp_dir}: {type(exc).__name__}: {exc}") from exc
    return pd.DataFrame([_ray_trial_row(t) for t in ea.trials])


def _ray_trial_row(trial: Any) -> dict[str, Any]:
    last = {k: v for k, v in dict(trial.last_result or {}).items() if k != "config"}
    config = dict(_flatten(trial.config or {}))
    row: dict[str, Any] = {f"config/{k}": v for k, v in config.items()}
    row.update({k: v for k, v in last.items() if _is_scalar(v)})
    row["trial_id"] = str(trial.trial_id)
    for col, keys in _CONFIG_KEYS.items():
        if _missing(row.get(col)):
            row[col] = next((config[k] for k in keys if k in config), None)
    row["kind"] = row.get("kind") or "pruned"
    if _missing(row.get("epochs_done")):
        row["epochs_done"] = last.get("training_iteration")
    row["status"] = _ray_status(trial, row, last)
    row["error"] = _ray_error(trial) if row["status"] == "error" else ""
    checkpoint = getattr(trial, "checkpoint", None)
    row["checkpoint_path"] = getattr(checkpoint, "path", None)
    return row


def _ray_status(trial: Any, row: Mapping[str, Any], last: Mapping[str, Any]) -> str:
    status = _RAY_STATUS.get(str(trial.status), "pending")
    if status != FINISHED:
        return status
    # A trial that Tune stopped (ASHA, a stop criterion) is TERMINATED too: it finished only if the
    # trainable said so, or if it ran all the epochs its config asked for.
    reported = last.get("status")
    if isinstance(reported, str) and reported in STATUSES:
        return reported
    done, target = row.get("epochs_done"), row.get("epochs")
    if not _missing(done) and not _missing(target) and float(done) < float(target):
        return "early_stopped"
    return FINISHED


def _ray_error(trial: Any) -> str:
    try:
        text = trial.get_error() if hasattr(trial, "get_error") else None
    except (OSError, ValueError, RuntimeError):  # the error file may be missing on an interrupted sweep
        text = None
    if text is None and getattr(trial, "error_file", None):
        try:
            text = Path(trial.error_file).read_text()
        except OSError:
            text = None
    lines = [ln.strip() for ln in str(text or "error").splitlines() if ln.strip()]
    return lines[-1] if lines else "error"  # a traceback's last line is the exception itself


def _flatten(d: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            yield from _flatten(v, key + ".")
        else:
            yield key, v if _is_scalar(v) else str(v)


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, bool, int, float, np.integer, np.floating))


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))
