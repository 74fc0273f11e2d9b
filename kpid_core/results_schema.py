"""The trials table: its columns, their dtypes, the status rule and the row every reader gets.

One row per trial. Two packages meet here: ``sweeps`` writes the table (``trials.parquet`` /
``trials.csv``) and ``analysis`` reads it, or rebuilds it from Ray's own files when a sweep was
interrupted before writing it. Both build rows with :func:`trial_row` and type them with
:func:`typed_table`, so the two sides cannot drift apart (the Optuna pattern: one typed record,
built once, consumed by the drawing code). The columns are pinned in docs/CONTRACTS.md.

Status of a trial (:func:`trial_status`), from the last result it reported:

- ``error``: a crash, a NaN loss (the result carries :data:`ERROR_KEY`) or an error from Ray;
- ``finished``: the trial sent its final result (:data:`FINAL_KEY` set). Only these rows carry a
  test ``accuracy``;
- ``running``: still running when the table was read (only Ray's own files can say so);
- ``early_stopped``: it reported results but not the final one (ASHA stopped it: partial,
  validation-only metrics);
- ``pending``: it never reported anything.

The status is never inferred from counting epochs: a trial stopped at its last epoch by the
scheduler has not reported its test accuracy.

This module imports no pandas at import time (kpid_core stays light to import); the table
functions import it when called.

Example:
    >>> row = trial_row("t1", {"prune": {"budget": 0.5}}, {"macs": 2_000_000, FINAL_KEY: True})
    >>> row["status"], row["budget"], row["macs"]
    ('finished', 0.5, 2000000)
    >>> df = typed_table([row])  # doctest: +SKIP
    >>> str(df["macs"].dtype)  # doctest: +SKIP
    'Int64'
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from kpid_core.errors import KPIDError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "COLUMNS",
    "CONFIG_PREFIX",
    "ERROR_KEY",
    "FINAL_KEY",
    "FINISHED",
    "FLOAT_COLUMNS",
    "INT_COLUMNS",
    "KINDS",
    "REQUIRED_COLUMNS",
    "STATUSES",
    "STR_COLUMNS",
    "TableError",
    "flatten",
    "trial_row",
    "trial_status",
    "typed_table",
]

#: Set (True) only in the result a trial reports after it ran to completion.
FINAL_KEY = "final"
#: The error message of a trial that failed (a crash or a NaN loss), in its last result.
ERROR_KEY = "trial_error"

FINISHED = "finished"
STATUSES = (FINISHED, "early_stopped", "error", "running", "pending")
KINDS = ("pruned", "baseline")
#: Config columns are ``config/<dotted.key>``, one for every config field.
CONFIG_PREFIX = "config/"

#: The contract's columns, in the order the table holds them (then the config columns, sorted).
COLUMNS = (
    "trial_id", "status", "kind", "arch", "budget", "metric", "kd_weight", "inner_weight",
    "temperature", "match", "lr", "epochs", "accuracy", "val_accuracy", "teacher_accuracy", "macs",
    "macs_dense", "macs_ratio", "params", "epochs_done", "latency_ms", "error", "checkpoint_path",
    "cost", "latency_dense_ms", "latency_ratio", "latency_device",
)
#: ``float64``, NaN where absent. Accuracies are fractions in [0, 1]; ``latency_ms`` (pruned) and
#: ``latency_dense_ms`` are medians in milliseconds per batch, ``latency_ratio`` the median paired
#: pruned ÷ dense ratio, all measured on ``latency_device`` (a named CPU or GPU).
FLOAT_COLUMNS = (
    "budget", "kd_weight", "inner_weight", "temperature", "lr", "accuracy", "val_accuracy",
    "teacher_accuracy", "macs_ratio", "latency_ms", "latency_dense_ms", "latency_ratio",
)
#: Counts, nullable ``Int64`` (``<NA>`` where absent): MACs per image, parameters, epochs.
INT_COLUMNS = ("macs", "macs_dense", "params", "epochs", "epochs_done")
#: Text, pandas ``string`` dtype; ``error`` and ``checkpoint_path`` are ``""`` when there is none.
STR_COLUMNS = ("trial_id", "status", "kind", "arch", "metric", "match", "error", "checkpoint_path", "cost",
               "latency_device")
#: Without these nothing can be analysed; every other contract column may be absent from a file.
REQUIRED_COLUMNS = ("trial_id", "status", "accuracy", "macs")

# Where a contract column comes from in a trial's (flattened) config.
_FROM_CONFIG = {
    "arch": "model.name", "budget": "prune.budget", "metric": "prune.metric",
    "kd_weight": "distill.kd_weight", "inner_weight": "distill.inner_weight",
    "temperature": "distill.temperature", "match": "distill.match", "lr": "train.lr",
    "epochs": "train.epochs",
}
_EMPTY_IS_BLANK = ("error", "checkpoint_path")


class TableError(KPIDError, ValueError):
    """A trials table lacks a required column or holds a value its column does not allow."""


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping → one level with dotted keys: ``{"train": {"lr": 0.1}}`` → ``{"train.lr": 0.1}``.

    Args:
        d: nested mapping; keys that already hold dots are kept as they are.
        prefix: prepended to every key (``"a."`` gives ``"a.train.lr"``).

    Returns:
        A new dict. Lists and every other non-mapping value are leaves; an empty mapping adds no key.
    """
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def trial_status(result: Mapping[str, Any] | None, *, error: str | None = None, running: bool = False) -> str:
    """The status of a trial (one of :data:`STATUSES`) from the last result it reported.

    Args:
        result: the trial's last reported result (``None`` or empty if it reported none).
        error: an error known from outside the result (Ray's error file, a crashed task).
        running: the trial is still running (Ray's state RUNNING or PAUSED).

    Returns:
        ``"error"`` if ``error`` or the result's :data:`ERROR_KEY` is set, else ``"finished"`` if
        the result carries :data:`FINAL_KEY`, else ``"running"``, ``"early_stopped"`` (some
        result) or ``"pending"`` (none).
    """
    m = result or {}
    if error or m.get(ERROR_KEY):
        return "error"
    if m.get(FINAL_KEY):
        return FINISHED
    if running:
        return "running"
    return "early_stopped" if m else "pending"


def trial_row(
    trial_id: str,
    config: Mapping[str, Any],
    result: Mapping[str, Any] | None,
    *,
    error: str | None = None,
    checkpoint_path: str | None = None,
    running: bool = False,
    kind: str = "pruned",
) -> dict[str, Any]:
    """One row of the trials table: the contract's columns, then ``config/<key>`` for every config key.

    Args:
        trial_id: the trial's id (Ray's, or a label such as ``baseline-...``).
        config: the trial's config, nested or with dotted keys (aliases such as ``budget`` work).
        result: the last result the trial reported (metrics of the final result for a finished one).
        error: an error known from outside the result; it wins over the result's own.
        checkpoint_path: the trial's last checkpoint directory, if any.
        running: the trial is still running (see :func:`trial_status`).
        kind: ``"pruned"`` (a sweep trial) or ``"baseline"`` (a same-data baseline).

    Returns:
        A dict of plain values, not yet typed: pass rows to :func:`typed_table`. ``accuracy`` (test)
        is NaN unless the trial finished; ``error`` is ``""`` unless it failed.
    """
    cfg = flatten(config)
    m = result or {}
    status = trial_status(m, error=error, running=running)
    row: dict[str, Any] = {"trial_id": str(trial_id), "status": status, "kind": kind}
    for col, key in _FROM_CONFIG.items():
        row[col] = _config_value(cfg, key)
    row.update(
        accuracy=_num(m.get("accuracy")) if status == FINISHED else math.nan,
        val_accuracy=_num(m.get("val_accuracy")),
        teacher_accuracy=_num(m.get("teacher_accuracy")),
        macs=m.get("macs"), macs_dense=m.get("macs_dense"), macs_ratio=_num(m.get("macs_ratio")),
        params=m.get("params"),
        # our trainables report "epoch"; Tune counts every report as a training iteration
        epochs_done=m.get("epochs_done", m.get("epoch", m.get("training_iteration", 0))) if m else 0,
        latency_ms=_num(m.get("latency_ms")),
        error=str(error or m.get(ERROR_KEY)) if status == "error" else "",
        checkpoint_path=checkpoint_path or "",
        cost=_config_value(cfg, "prune.cost"),
        latency_dense_ms=_num(m.get("latency_dense_ms")), latency_ratio=_num(m.get("latency_ratio")),
        latency_device=m.get("latency_device"),
    )
    for k, v in cfg.items():
        row[f"{CONFIG_PREFIX}{k}"] = v if _is_scalar(v) else str(v)
    return row


def typed_table(rows: Iterable[Mapping[str, Any]] | pd.DataFrame, *, strict: bool = False) -> pd.DataFrame:
    """Rows (or a table read from a file) → the trials table with the contract's columns and dtypes.

    Contract columns come first in :data:`COLUMNS` order, then the ``config/`` columns sorted, then
    any other column as it came. Missing contract columns are added (NA; ``kind`` defaults to
    ``"pruned"``, ``error``/``checkpoint_path`` to ``""``). Counts that an older file stored as
    floats are rounded to ``Int64``.

    Args:
        rows: dicts from :func:`trial_row`, or a DataFrame read from ``trials.parquet``/``.csv``.
        strict: check what a file may hold: raise :class:`TableError` for a missing
            :data:`REQUIRED_COLUMNS` column, a non-numeric value in a numeric column, or a
            ``status``/``kind`` outside :data:`STATUSES`/:data:`KINDS`. Without it, bad numbers
            become NA (the writer's rows come from code, not from users).

    Returns:
        A new DataFrame (index 0..n-1).
    """
    import pandas as pd

    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame([dict(r) for r in rows])
    if strict:
        missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
        if missing:
            raise TableError(f"lacks required column(s) {', '.join(missing)}; "
                             f"a trials table needs {', '.join(REQUIRED_COLUMNS)}")
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = None
    cfg_cols = sorted(c for c in df.columns if str(c).startswith(CONFIG_PREFIX))
    rest = [c for c in df.columns if c not in COLUMNS and c not in cfg_cols]
    df = df[[*COLUMNS, *cfg_cols, *rest]].reset_index(drop=True)
    for c in FLOAT_COLUMNS:
        df[c] = _numeric(df[c], c, strict)
    for c in INT_COLUMNS:
        df[c] = _numeric(df[c], c, strict).round().astype("Int64")
    for c in STR_COLUMNS:
        df[c] = df[c].astype("string")
    df["status"] = df["status"].str.strip().str.lower()
    df["kind"] = df["kind"].fillna("pruned")
    for c in _EMPTY_IS_BLANK:
        df[c] = df[c].fillna("")
    if strict:
        _check_values(df, "status", STATUSES)
        _check_values(df, "kind", KINDS)
    for c in cfg_cols:  # a column of mixed types cannot be written to parquet: strings where mixed
        if df[c].map(type).nunique() > 1:
            df[c] = df[c].map(lambda v: None if v is None or v is pd.NA else str(v))
    return df


def _numeric(values: pd.Series, col: str, strict: bool) -> pd.Series:
    import pandas as pd

    out = pd.to_numeric(values, errors="coerce").astype("float64")
    if strict:
        bad = values.notna() & out.isna() & (values.astype("string").str.strip() != "")
        if bad.any():
            raise TableError(f"column {col} must be numeric, got {values[bad].iloc[0]!r}")
    return out


def _check_values(df: pd.DataFrame, col: str, allowed: tuple[str, ...]) -> None:
    values = df[col]
    unknown = sorted(set(values.dropna()) - set(allowed))
    if unknown or values.isna().any():
        bad = unknown or ["<empty>"]
        raise TableError(f"column {col} has value(s) {', '.join(map(repr, bad))}; allowed: {', '.join(allowed)}")


def _config_value(cfg: Mapping[str, Any], key: str) -> Any:
    """``cfg[key]``, or the value under one of the config's short aliases (``budget`` for ``prune.budget``)."""
    if key in cfg:
        return cfg[key]
    from kpid_core.config import ALIASES  # here, not at the top: kpid_core.config imports this module

    return next((cfg[a] for a, k in ALIASES.items() if k == key and a in cfg), None)


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _is_scalar(v: Any) -> bool:
    # numbers.Number covers numpy scalars, which Ray's configs and results may hold
    return v is None or isinstance(v, (str, bool, numbers.Number))
