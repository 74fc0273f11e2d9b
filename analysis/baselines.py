"""Baselines to beat: published ImageNet reference points (``baselines.csv``) and same-data baselines
(architectures the sweep trained itself, rows with ``kind == "baseline"``).

``baselines.csv`` is a versioned table, one row per published point, every row with its source:
``top1`` in percent, ``gmacs`` in 10⁹ multiply-accumulates per image at ``resolution`` pixels (the
torchvision ``_ops`` convention, see docs/engine.md), ``params_m`` in millions; ``plot`` = 1
for the rows drawn by default (the summary lists all rows). Rows with a ``torchvision_name`` can be
checked against a MAC count of the torchvision model (:func:`count_arch_macs`; tests/analysis does).

Published ImageNet points only make sense next to ImageNet-like results: :func:`published_applies`
says when (dataset ``imagenet``/``imagefolder`` at 224 px).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd

from analysis.errors import AnalysisError
from analysis.load import FINISHED

__all__ = [
    "BASELINES_CSV",
    "BASELINE_COLUMNS",
    "IMAGENET_LIKE",
    "count_arch_macs",
    "load_baselines",
    "published_applies",
    "same_data_baselines",
]

BASELINES_CSV = Path(__file__).with_name("baselines.csv")
BASELINE_COLUMNS = (
    "model", "family", "kind", "top1", "gmacs", "params_m", "resolution", "weights", "source",
    "source_url", "torchvision_name", "plot", "notes",
)
IMAGENET_LIKE = ("imagenet", "imagefolder")
_DATASET_COLUMNS = ("config/data.name", "dataset", "config/dataset")
_SIZE_COLUMNS = ("config/data.image_size", "image_size", "config/image_size")


def load_baselines(path: str | Path | None = None) -> pd.DataFrame:
    """Read the published reference points (default: the bundled ``baselines.csv``).

    Adds ``macs`` (``gmacs`` × 10⁹) and ``accuracy`` (``top1`` / 100) so that the rows sit on the same
    axes as the sweep's trials. Raises :class:`AnalysisError` for missing columns or a row without a
    source.
    """
    path = Path(path) if path is not None else BASELINES_CSV
    try:
        df = pd.read_csv(path, keep_default_na=False, na_values=[""])
    except (OSError, pd.errors.ParserError) as exc:
        raise AnalysisError(f"cannot read baselines table {path}: {exc}") from exc
    missing = [c for c in BASELINE_COLUMNS if c not in df.columns]
    if missing:
        raise AnalysisError(f"baselines table {path} lacks column(s) {', '.join(missing)}")
    for col in ("source", "source_url"):
        unsourced = df[df[col].isna() | (df[col].astype("string").str.strip() == "")]
        if len(unsourced):
            raise AnalysisError(f"baselines table {path}: row {unsourced['model'].iloc[0]!r} has no {col}")
    for col in ("top1", "gmacs", "params_m", "resolution"):
        df[col] = pd.to_numeric(df[col], errors="raise").astype("float64")
    for col in ("model", "family", "kind", "weights", "source", "source_url", "torchvision_name", "notes"):
        df[col] = df[col].astype("string")
    # `plot` marks the rows drawn by default: one point per model (torchvision V1 where it exists,
    # else the paper), so that near-identical paper/torchvision pairs do not clutter the figure.
    df["plot"] = pd.to_numeric(df["plot"], errors="raise").fillna(0).astype(bool)
    df["macs"] = df["gmacs"] * 1e9
    df["accuracy"] = df["top1"] / 100.0
    df["label"] = df["model"]
    return df


def _first_value(results: pd.DataFrame, columns: tuple[str, ...]) -> object:
    for col in columns:
        if col in results.columns:
            values = results[col].dropna()
            if len(values):
                return values.iloc[0]
    return None


def published_applies(results: pd.DataFrame) -> tuple[bool, str]:
    """Whether published ImageNet points are comparable with ``results``, and a one-line reason.

    True when the dataset is ``imagenet`` or ``imagefolder`` and the input size is 224 px (taken from
    ``config/data.name`` and ``config/data.image_size``).
    """
    name = _first_value(results, _DATASET_COLUMNS)
    size = _first_value(results, _SIZE_COLUMNS)
    if name is None:
        return False, "dataset unknown (no config/data.name column): published ImageNet points not drawn"
    name = str(name).lower()
    if name in IMAGENET_LIKE and size is not None and int(float(size)) == 224:
        return True, f"dataset {name} at 224 px: published ImageNet points drawn for reference"
    size_txt = f" at {int(float(size))} px" if size is not None else ""
    return False, (
        f"dataset {name}{size_txt} is not ImageNet-like at 224 px: published ImageNet points not drawn "
        "(--published always forces them)"
    )


def same_data_baselines(results: pd.DataFrame) -> pd.DataFrame:
    """Finished baseline-architecture trials of this sweep (``kind == "baseline"``), with a ``label``.

    The label is the ``arch`` plus its width multiplier when the config has one different from 1.
    """
    rows = results[(results["kind"].astype("string") == "baseline") & (results["status"].astype("string") == FINISHED)]
    rows = rows.copy()
    labels = rows["arch"].astype("string").fillna("baseline")
    if "config/model.width" in rows.columns:
        width = pd.to_numeric(rows["config/model.width"], errors="coerce")
        suffix = width.map(lambda w: f" ×{w:.3g}" if pd.notna(w) and w != 1 else "")
        labels = labels + suffix.astype("string")
    rows["label"] = labels
    return rows


@functools.lru_cache(maxsize=64)  # V1/V2 weight rows share one architecture
def count_arch_macs(name: str, resolution: int = 224) -> int:
    """MACs (conv + linear multiply-accumulates, one image) of a registered architecture at
    ``resolution`` px.

    Counted by ``kpid_core.engine.macs.count_macs``, the project's counter.
    """
    from kpid_core.engine.macs import count_macs
    from kpid_core.models import build_model

    model = build_model(name).eval()
    return int(count_macs(model, input_shape=(3, int(resolution), int(resolution))))
