"""Load a finished (or interrupted) sweep into one typed pandas table, one row per trial.

Sources, in order of preference, inside a results directory:

1. ``trials.parquet`` — what ``sweeps`` writes (columns pinned in docs/CONTRACTS.md);
2. ``trials.csv`` — the same table as text;
3. Ray Tune's own experiment directory (``experiment_state-*.json``), read with
   :class:`ray.tune.ExperimentAnalysis` (a file reader: no Ray cluster is started).

Every source ends as the same table: :mod:`kpid_core.results_schema` owns its columns, dtypes and
status rule, for the writer (``sweeps``) and for this reader alike. Units follow the contract:
``accuracy`` columns are fractions in [0, 1], ``macs`` are multiply-accumulates per image (``Int64``),
``latency_ms`` milliseconds.
"""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.errors import AnalysisError
from kpid_core.results_schema import (
    FINISHED,
    FLOAT_COLUMNS,
    INT_COLUMNS,
    KINDS,
    REQUIRED_COLUMNS,
    STATUSES,
    STR_COLUMNS,
    TableError,
    trial_row,
    typed_table,
)

# The schema's names are re-exported: analysis code and notebooks import them from here.
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

_RAY_RUNNING = ("RUNNING", "PAUSED")


def load_results(path: str | Path) -> pd.DataFrame:
    """Read a sweep's results into a typed table (the columns of ``kpid_core.results_schema``).

    Args:
        path: a sweep directory, or its ``trials.parquet`` or ``trials.csv``.

    Returns:
        One row per trial (and same-data baseline); ``df.attrs["source"]`` names what was read.

    Raises:
        AnalysisError: one line naming the problem for a missing path, a directory that is not a
            sweep result, an unreadable file, an empty sweep or missing required columns.
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
    """Check a table read from a file and give it the schema's columns and dtypes (returns a copy).

    :func:`kpid_core.results_schema.typed_table` does the typing (floats, ``Int64`` counts, strings,
    ``error`` "" when none; older files with float counts or no ``kind`` column read as well); here
    ``status`` and ``kind`` become categoricals (categories :data:`STATUSES`, :data:`KINDS`).
    Raises :class:`AnalysisError` naming ``source`` for missing required columns or bad values.
    """
    try:
        df = typed_table(df, strict=True)
    except TableError as exc:
        raise AnalysisError(f"{source}: {exc}") from exc
    df["status"] = pd.Categorical(df["status"].astype(str), categories=STATUSES)
    df["kind"] = pd.Categorical(df["kind"].astype(str), categories=KINDS)
    return df


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
    """The schema's row of one Ray trial, plus the other scalars of its last result (as reported)."""
    last = {k: v for k, v in dict(trial.last_result or {}).items() if k != "config"}
    state = str(trial.status)
    checkpoint = getattr(trial, "checkpoint", None)
    row = trial_row(str(trial.trial_id), trial.config or {}, last,
                    error=_ray_error(trial) if state == "ERROR" else None,
                    checkpoint_path=getattr(checkpoint, "path", None), running=state in _RAY_RUNNING)
    row.update({k: v for k, v in last.items() if k not in row and _is_scalar(v)})
    return row


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


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, bool, numbers.Number))  # Number: numpy scalars too
