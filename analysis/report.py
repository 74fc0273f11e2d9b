"""Report of a finished sweep: Pareto plot (PNG/SVG), metric-vs-budget and KD-weight figures,
``pareto.csv`` and ``summary.md`` (front, best trial per budget, gain over each baseline at matched
MACs).

    python -m analysis.report RESULTS_DIR [--out DIR] [--x macs] [--y accuracy] [--format png,svg]

Everything is computed and checked before the first file is written: bad input leaves the output
directory untouched and prints one ``error: ...`` line (exit code 2).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from analysis.baselines import load_baselines, published_applies, same_data_baselines
from analysis.errors import AnalysisError
from analysis.load import FINISHED, load_results
from analysis.pareto import ParetoInfo, pareto_front
from analysis.plots import FORMATS, axis_spec, plot_kd_grid, plot_metric_vs_budget, plot_pareto, save_figure
from analysis.summary import has_xy, latency_note, status_counts, summary_markdown
from analysis.tables import kd_grid, metric_vs_budget, teacher_point
from kpid_core.errors import KPIDError
from kpid_core.files import atomic_write, atomic_write_text

__all__ = ["ALLOWED_FORMATS", "PUBLISHED_MODES", "ReportInfo", "build_parser", "main", "make_report", "report_info"]

ALLOWED_FORMATS = ("png", "svg", "pdf")
PUBLISHED_MODES = ("auto", "always", "never")
LATENCY = "latency_ms"
_FRONT_COLUMNS = ("trial_id", "arch", "metric", "budget", "kd_weight", "inner_weight", "temperature", "match",
                  "lr", "epochs", "macs", "macs_ratio", "params", "accuracy", "val_accuracy", "latency_ms",
                  "latency_ratio", "cost", "checkpoint_path")


class ReportInfo(NamedTuple):
    """Everything the report draws and writes, computed and checked before any file is written.

    ``df``: the whole trials table; ``front``: the Pareto front of the pruned trials on ``x``
    (minimised) and ``y`` (maximised); ``teacher``: the dense teacher's point or None;
    ``same_data``: the same-data baseline rows; ``published``: the published reference rows to
    draw and compare with, or None; ``note``: one sentence on which baselines are shown and why;
    ``metric_vs_budget``: the best setting per (metric, budget), mean ± std over repeats;
    ``latency_front``: when ``x`` is not ``latency_ms`` and trials measured their latency, the front
    on measured latency (``latency_ms``, minimised) and ``y`` as well, else None.
    """

    df: pd.DataFrame
    x: str
    y: str
    front: ParetoInfo
    teacher: dict[str, float] | None
    same_data: pd.DataFrame
    published: pd.DataFrame | None
    note: str
    metric_vs_budget: pd.DataFrame
    latency_front: ParetoInfo | None = None

    def axes(self) -> tuple[str, float, str, float]:
        """``(x label, x scale, y label, y scale)`` as the plots print them."""
        xlabel, xs = axis_spec(self.x, self.front.considered[self.x])
        ylabel, ys = axis_spec(self.y)
        return xlabel, xs, ylabel, ys


def make_report(
    results_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    x: str = "macs",
    y: str = "accuracy",
    formats: Sequence[str] = FORMATS,
    published: str = "auto",
) -> dict[str, Path]:
    """Write the report of the sweep in ``results_dir``.

    Args:
        results_dir: the experiment directory, or a ``trials.parquet``/``.csv`` file.
        out_dir: where to write (default ``RESULTS_DIR/report``); created if missing.
        x: the column minimised on the front (e.g. ``macs``, ``params``, ``latency_ms``).
        y: the column maximised on the front (e.g. ``accuracy``).
        formats: figure formats out of :data:`ALLOWED_FORMATS`.
        published: ``auto`` draws the published ImageNet points only for ImageNet-like results
            at 224 px; ``always``/``never`` force it.

    Returns:
        ``{file name: path}`` of everything written. Raises :class:`AnalysisError` (one line) for
        bad input, before anything is written.
    """
    formats = _check_formats(formats)
    if published not in PUBLISHED_MODES:
        raise AnalysisError(f"published must be one of {', '.join(PUBLISHED_MODES)}, got {published!r}")
    results_path = Path(results_dir)
    base_dir = results_path if results_path.is_dir() else results_path.parent
    out = Path(out_dir) if out_dir is not None else base_dir / "report"
    info = report_info(results_path, x=x, y=y, published=published)
    figures = _figures(info)
    front_table = info.front.front[[c for c in _FRONT_COLUMNS if c in info.front.front.columns]]
    summary = summary_markdown(info)

    # Only now write: nothing above touched the output directory.
    written: dict[str, Path] = {}
    for stem, fig in figures.items():
        for path in save_figure(fig, out, stem, formats):
            written[path.name] = path
    atomic_write(out / "pareto.csv", lambda tmp: front_table.to_csv(tmp, index=False))
    written["pareto.csv"] = out / "pareto.csv"
    if info.latency_front is not None:
        lf = info.latency_front.front
        lf = lf[[c for c in _FRONT_COLUMNS if c in lf.columns]]
        atomic_write(out / "pareto_latency.csv", lambda tmp: lf.to_csv(tmp, index=False))
        written["pareto_latency.csv"] = out / "pareto_latency.csv"
    atomic_write_text(out / "summary.md", summary)
    written["summary.md"] = out / "summary.md"
    return written


def report_info(results_path: str | Path, *, x: str = "macs", y: str = "accuracy",
                published: str = "auto") -> ReportInfo:
    """Load the results and compute what the report shows (Optuna's pattern: validate and compute
    here, draw and write elsewhere).

    Args:
        results_path: as ``results_dir`` of :func:`make_report`.
        x: the column minimised on the front.
        y: the column maximised on the front.
        published: as for :func:`make_report`.

    Returns:
        The report's :class:`ReportInfo`. Raises :class:`AnalysisError` when no finished pruning
        trial has both values or a column is not numeric.
    """
    df = load_results(Path(results_path))
    finished = (df["status"].astype("string") == FINISHED) & (df["kind"].astype("string") == "pruned")
    if not finished.any():
        raise AnalysisError(
            f"no finished pruning trial in {df.attrs.get('source', results_path)} ({status_counts(df)}): "
            "nothing to put on a Pareto front"
        )
    for col, flag in ((x, "--x"), (y, "--y")):
        _check_numeric_column(df, col, flag)
    if x == y:
        raise AnalysisError(f"--x and --y are both {x!r}: the front trades one column (minimised) against "
                            "another (maximised), e.g. --x macs --y accuracy")
    front = pareto_front(df[df["kind"].astype("string") == "pruned"], x=x, y=y)
    if front.front.empty:
        raise AnalysisError(
            f"no finished pruning trial with {x} and {y} in {df.attrs.get('source', results_path)} "
            f"({status_counts(df)}): nothing to put on a Pareto front"
        )
    pub, note = _published(df, x, y, published)
    return ReportInfo(df, x, y, front, teacher_point(df), same_data_baselines(df), pub, note,
                      metric_vs_budget(df, y=y), _latency_front(df, x, y))


def _latency_front(df: pd.DataFrame, x: str, y: str) -> ParetoInfo | None:
    """The front on measured latency beside the one on ``x`` (None when ``x`` is latency already or
    no finished pruning trial measured its latency on a named device, as ``run_trial`` does)."""
    if x == LATENCY or LATENCY not in df.columns or not pd.api.types.is_numeric_dtype(df[y]):
        return None
    pruned = df[df["kind"].astype("string") == "pruned"]
    done = pruned[(pruned["status"].astype("string") == FINISHED) & pruned[LATENCY].notna() & pruned[y].notna()
                  & pruned["latency_device"].notna()]
    if done.empty:
        return None
    return pareto_front(pruned, x=LATENCY, y=y)


def _published(df: pd.DataFrame, x: str, y: str, mode: str) -> tuple[pd.DataFrame | None, str]:
    """The published reference rows to draw (or None) and the sentence saying why (not)."""
    applies, why = published_applies(df)
    draw = mode == "always" or (mode == "auto" and applies)
    if mode == "always" and not applies:
        why = "published ImageNet points drawn on request (--published always); " + why.split(":")[0] + \
            ": compare with care"
    elif mode == "never":
        why = "published ImageNet points not drawn (--published never)"
    if draw and (x != "macs" or y not in ("accuracy", "val_accuracy")):
        draw, why = False, f"published points have MACs and top-1 only: not drawn on a {x}/{y} plot"
    return (load_baselines() if draw else None), why


def _figures(r: ReportInfo) -> dict[str, Any]:
    pub = r.published
    figures = {
        "pareto": plot_pareto(r.front, same_data=r.same_data if has_xy(r.same_data, r.x, r.y) else None,
                              published=pub[pub["plot"]] if pub is not None else None, teacher=r.teacher,
                              title=_title(r.df, r.x, r.y), note=r.note),
    }
    if len(r.metric_vs_budget):
        figures["metric_vs_budget"] = plot_metric_vs_budget(r.metric_vs_budget, y=r.y, teacher=r.teacher)
    if r.latency_front is not None:
        figures["pareto_latency"] = plot_pareto(
            r.latency_front, same_data=r.same_data if has_xy(r.same_data, LATENCY, r.y) else None,
            teacher=r.teacher, title=_title(r.df, LATENCY, r.y), note=latency_note(r.df))
    grids = kd_grid(r.df, y=r.y)
    if grids:
        figures["kd_weights"] = plot_kd_grid(grids, y=r.y)
    return figures


def _check_formats(formats: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = [f for f in formats.split(",")]
    formats = tuple(f.strip().lower().lstrip(".") for f in formats if f.strip())
    bad = [f for f in formats if f not in ALLOWED_FORMATS]
    if bad or not formats:
        raise AnalysisError(f"--format: format {bad[0] if bad else '<empty>'!r} not supported; allowed: {', '.join(ALLOWED_FORMATS)}")
    return formats


def _check_numeric_column(df: pd.DataFrame, col: str, flag: str) -> None:
    numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and df[c].notna().any()
               and not str(c).startswith("config/")]
    if col not in df.columns or col not in numeric:
        raise AnalysisError(f"{flag}: column {col!r} is not a numeric results column; choose one of: {', '.join(numeric)}")
    if df[col].isna().all():
        raise AnalysisError(f"{flag}: column {col!r} has no values in these results (e.g. latency was not measured)")


def _title(df: pd.DataFrame, x: str, y: str) -> str:
    parts = []
    arch = df.loc[df["kind"].astype("string") == "pruned", "arch"].dropna().unique()
    if len(arch) == 1:
        parts.append(str(arch[0]))
    for col in ("config/data.name", "dataset"):
        if col in df.columns and df[col].notna().any():
            parts.append(f"on {df[col].dropna().iloc[0]}")
            break
    what = f"{axis_spec(y)[0].split(' (')[0]} vs {axis_spec(x)[0].split(' (')[0]}"
    return f"{what}: {' '.join(parts)}" if parts else what


# ---------------------------------------------------------------------------------------------
# CLI


def build_parser() -> argparse.ArgumentParser:
    from kpid_core.cli import ArgumentParser

    p = ArgumentParser(
        prog="python -m analysis.report",
        description="Write the report of a finished KPID sweep: Pareto plot (front of the finished trials "
        "vs baselines), metric-vs-budget and KD-weight figures, pareto.csv and summary.md.",
    )
    p.add_argument("results_dir", metavar="RESULTS_DIR",
                   help="the sweep's experiment directory (holding trials.parquet, trials.csv or Ray's "
                   "experiment_state-*.json), or a trials.parquet/.csv file")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="output directory (default: RESULTS_DIR/report); created if missing, files of the "
                   "same name replaced")
    p.add_argument("--x", default="macs", metavar="COLUMN",
                   help="column minimised on the front's x axis, e.g. macs, params, latency_ms (default: macs)")
    p.add_argument("--y", default="accuracy", metavar="COLUMN",
                   help="column maximised on the y axis, e.g. accuracy, val_accuracy (default: accuracy)")
    p.add_argument("--format", default=",".join(FORMATS), metavar="LIST",
                   help=f"comma-separated figure formats out of {', '.join(ALLOWED_FORMATS)} (default: png,svg)")
    p.add_argument("--published", default="auto", choices=PUBLISHED_MODES,
                   help="draw the published ImageNet reference points (baselines.csv): auto = only when the "
                   "results are ImageNet/imagefolder at 224 px (default: auto)")
    p.add_argument("-q", "--quiet", action="store_true", help="do not list the files written")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit code (2 for bad input, one ``error:`` line on stderr)."""
    args = build_parser().parse_args(argv)
    from kpid_core.files import storage_errors

    try:
        with storage_errors("--out", args.out or Path(args.results_dir) / "report"):
            written = make_report(args.results_dir, args.out, x=args.x, y=args.y, formats=args.format,
                                  published=args.published)
    except KPIDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        for name, path in written.items():
            print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
