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
from typing import Any

import numpy as np
import pandas as pd

from analysis.baselines import load_baselines, published_applies, same_data_baselines
from analysis.errors import AnalysisError
from analysis.load import FINISHED, STATUSES, load_results
from analysis.pareto import ParetoInfo, hypervolume, pareto_front
from analysis.plots import FORMATS, axis_spec, plot_kd_grid, plot_metric_vs_budget, plot_pareto, save_figure
from analysis.tables import best_per_budget, gains_over_baselines, kd_grid, metric_vs_budget, teacher_point
from kpid_core.errors import KPIDError

__all__ = ["ALLOWED_FORMATS", "PUBLISHED_MODES", "build_parser", "main", "make_report"]

ALLOWED_FORMATS = ("png", "svg", "pdf")
PUBLISHED_MODES = ("auto", "always", "never")
_FRONT_COLUMNS = ("trial_id", "arch", "metric", "budget", "kd_weight", "inner_weight", "temperature", "match",
                  "lr", "epochs", "macs", "macs_ratio", "params", "accuracy", "val_accuracy", "latency_ms",
                  "checkpoint_path")


def make_report(
    results_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    x: str = "macs",
    y: str = "accuracy",
    formats: Sequence[str] = FORMATS,
    published: str = "auto",
) -> dict[str, Path]:
    """Write the report of the sweep in ``results_dir`` into ``out_dir`` (default
    ``RESULTS_DIR/report``); returns ``{file name: path}`` of everything written.

    ``x``/``y``: the two columns of the front (``x`` minimised, ``y`` maximised). ``published``:
    ``auto`` draws the published ImageNet points only for ImageNet-like results at 224 px,
    ``always``/``never`` force it. Raises :class:`AnalysisError` (one line) for bad input.
    """
    formats = _check_formats(formats)
    if published not in PUBLISHED_MODES:
        raise AnalysisError(f"published must be one of {', '.join(PUBLISHED_MODES)}, got {published!r}")
    results_path = Path(results_dir)
    df = load_results(results_path)
    base_dir = results_path if results_path.is_dir() else results_path.parent
    out = Path(out_dir) if out_dir is not None else base_dir / "report"
    finished = (df["status"].astype("string") == FINISHED) & (df["kind"].astype("string") == "pruned")
    if not finished.any():
        raise AnalysisError(
            f"no finished pruning trial in {df.attrs.get('source', results_path)} ({_status_counts(df)}): "
            "nothing to put on a Pareto front"
        )
    for col, flag in ((x, "--x"), (y, "--y")):
        _check_numeric_column(df, col, flag)

    pruned = df[df["kind"].astype("string") == "pruned"]
    info = pareto_front(pruned, x=x, y=y)
    if info.front.empty:
        counts = _status_counts(df)
        raise AnalysisError(
            f"no finished pruning trial with {x} and {y} in {df.attrs.get('source', results_path)} "
            f"({counts}): nothing to put on a Pareto front"
        )
    teacher = teacher_point(df)
    same = same_data_baselines(df)
    applies, why = published_applies(df)
    draw_published = published == "always" or (published == "auto" and applies)
    if published == "always" and not applies:
        why = "published ImageNet points drawn on request (--published always); " + why.split(":")[0] + \
            ": compare with care"
    elif published == "never":
        why = "published ImageNet points not drawn (--published never)"
    pub = load_baselines()
    if draw_published and (x != "macs" or y not in ("accuracy", "val_accuracy")):
        draw_published, why = False, f"published points have MACs and top-1 only: not drawn on a {x}/{y} plot"

    figures = {
        "pareto": plot_pareto(info, same_data=same if _has_xy(same, x, y) else None,
                              published=pub[pub["plot"]] if draw_published else None, teacher=teacher,
                              title=_title(df, x, y), note=why),
    }
    mvb = metric_vs_budget(df, y=y)
    if len(mvb):
        figures["metric_vs_budget"] = plot_metric_vs_budget(mvb, y=y, teacher=teacher)
    grids = kd_grid(df, y=y)
    if grids:
        figures["kd_weights"] = plot_kd_grid(grids, y=y)
    front_table = info.front[[c for c in _FRONT_COLUMNS if c in info.front.columns]]
    summary = _summary(df, info, teacher, same, pub if draw_published else None, why, mvb, x, y)

    # Only now write: nothing above touched the output directory.
    written: dict[str, Path] = {}
    for stem, fig in figures.items():
        for path in save_figure(fig, out, stem, formats):
            written[path.name] = path
    front_table.to_csv(out / "pareto.csv", index=False)
    written["pareto.csv"] = out / "pareto.csv"
    (out / "summary.md").write_text(summary)
    written["summary.md"] = out / "summary.md"
    return written


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


def _has_xy(rows: pd.DataFrame, x: str, y: str) -> bool:
    return len(rows) > 0 and rows[[x, y]].notna().all(axis=1).any()


def _status_counts(df: pd.DataFrame) -> str:
    counts = df["status"].value_counts()
    return ", ".join(f"{s}: {int(counts.get(s, 0))}" for s in STATUSES if counts.get(s, 0))


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
# summary.md


def _fmt(v: Any, scale: float = 1.0, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)) or v is pd.NA:
        return "–"
    if isinstance(v, (int, float, np.integer, np.floating)):
        return f"{float(v) * scale:.{digits}f}"
    return str(v)


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _normalised_hypervolume(info: ParetoInfo, teacher: dict[str, float] | None, x: str, y: str) -> tuple[float, str]:
    pts = info.front[[x, y]].to_numpy(dtype=float)
    if x == "macs" and teacher and "macs" in teacher and y in ("accuracy", "val_accuracy"):
        pts = pts / np.array([teacher["macs"], 1.0])
        return hypervolume(pts, (1.0, 0.0)), "MACs as a fraction of the dense model, reference (1.0, 0 %)"
    considered = info.considered[[x, y]].to_numpy(dtype=float)
    ref = (float(considered[:, 0].max()), float(considered[:, 1].min()))
    return hypervolume(pts, ref), f"raw units, reference ({x}={ref[0]:.4g}, {y}={ref[1]:.4g})"


def _summary(df, info, teacher, same, pub, why, mvb, x, y) -> str:
    xlabel, xs = axis_spec(x, info.considered[x])
    ylabel, ys = axis_spec(y)
    counts = _status_counts(df)
    out = [f"# Sweep report\n\nSource: `{df.attrs.get('source', '?')}` — {len(df)} trials ({counts}).\n"]
    if teacher:
        unit = xlabel.split("(")[1].rstrip(")") if x == "macs" else "M"
        t_m = f"{teacher['macs'] * (xs if x == 'macs' else 1e-6):.4g} {unit}" if "macs" in teacher else "–"
        out.append(f"Dense teacher: {t_m} MACs, {_fmt(teacher.get('accuracy'), 100, 2)} % top-1.\n")
    out.append(f"Baselines: {why}.\n")
    out.append("Only finished trials compete: early-stopped trials report partial accuracies and errored "
               "ones none, so they are listed below but never on the front.\n")

    hv, hv_desc = _normalised_hypervolume(info, teacher, x, y)
    out.append(f"\n## Pareto front ({ylabel} vs {xlabel}, {len(info.front)} trial{'' if len(info.front) == 1 else 's'})\n\n")
    rows = [[r.trial_id, _fmt(r.metric), _fmt(r.budget, 100, 0) + " %", _fmt(r.kd_weight, 1, 2),
             _fmt(r.inner_weight, 1, 2), _fmt(getattr(r, x), xs, 3), _fmt(getattr(r, y), ys, 2)]
            for r in info.front.itertuples()]
    out.append(_md_table(["trial", "metric", "budget", "KD weight", "γ", xlabel, ylabel], rows))
    out.append(f"\nHypervolume of the front: {hv:.4f} ({hv_desc}).\n")
    by_metric = {}
    for metric, group in df[df["kind"].astype("string") == "pruned"].groupby("metric", observed=True):
        sub = pareto_front(group, x=x, y=y)
        if len(sub.front):
            by_metric[metric] = _normalised_hypervolume(sub, teacher, x, y)[0]
    if by_metric:
        out.append("Per importance metric (higher is better): "
                   + ", ".join(f"{m} {v:.4f}" for m, v in sorted(by_metric.items(), key=lambda kv: -kv[1])) + ".\n")

    best = best_per_budget(df, y=y)
    if len(best):
        out.append("\n## Best trial per budget\n\n")
        t_acc = teacher.get("accuracy") if teacher else None
        rows = [[_fmt(r.budget, 100, 0) + " %", r.trial_id, _fmt(r.metric), _fmt(r.kd_weight), _fmt(r.inner_weight),
                 _fmt(getattr(r, x), xs, 3), _fmt(getattr(r, y), ys, 2),
                 _fmt((getattr(r, y) - t_acc) if t_acc is not None and y == "accuracy" else None, 100, 2)]
                for r in best.itertuples()]
        out.append(_md_table(["budget", "trial", "metric", "KD weight", "γ", xlabel, ylabel, "Δ vs teacher (pp)"], rows))

    if len(mvb) and "metric" in mvb.columns:
        out.append("\n## Importance metric by budget (best setting: mean ± std over repeats, n)\n\n")
        metrics = sorted(mvb["metric"].astype(str).unique())
        rows = []
        for b, group in mvb.groupby("budget"):
            cells = {str(r.metric): f"{r.mean * ys:.2f} ± {_fmt(r.std, ys, 2)} ({r.n})" for r in group.itertuples()}
            winner = group.loc[group["mean"].idxmax(), "metric"]
            rows.append([_fmt(b, 100, 0) + " %", *[cells.get(m, "–") for m in metrics], str(winner)])
        out.append(_md_table(["budget", *metrics, "best"], rows))

    out.append("\n## Gain over baselines at matched MACs\n\n")
    out.append(f"For each baseline: the best front {ylabel.split(' (')[0]} at ≤ its {x}, minus its own "
               "(pp = percentage points; – = no front point that cheap). A same-data baseline matched to a "
               "budget is compared with the front at that budget.\n\n")
    tables = []
    if _has_xy(same, x, y):
        tables.append(("same data", same))
    if pub is not None:
        tables.append(("published, ImageNet", pub))
    if not tables:
        out.append("No baseline to compare with.\n")
    for name, rows_df in tables:
        g = gains_over_baselines(info.front, rows_df, x=x, y=y)
        rows = [[f"{r['baseline']} ({name})", _fmt(r[f'baseline_{x}'], xs, 3), _fmt(r[f'baseline_{y}'], ys, 2),
                 _fmt(r['trial_id']), _fmt(r[x], xs, 3), _fmt(r[y], ys, 2),
                 ("+" if np.isfinite(r["gain"]) and r["gain"] >= 0 else "") + _fmt(r["gain"], ys, 2)]
                for _, r in g.iterrows()]
        out.append(_md_table(["baseline", xlabel, ylabel, "front trial", f"its {xlabel}", f"its {ylabel}",
                              "gain (pp)" if y.endswith("accuracy") else "gain"], rows))
        out.append("\n")

    off = df[df["status"].astype("string") != FINISHED]
    if len(off):
        out.append("\n## Trials not on the front\n\n")
        for status, group in off.groupby(off["status"].astype("string")):
            out.append(f"- {status}: {len(group)} ({', '.join(group['trial_id'].astype(str).head(8))}"
                       f"{', …' if len(group) > 8 else ''})\n")
        errors = off[off["error"].astype(str).str.len() > 0]["error"].astype(str).value_counts().head(5)
        for msg, n in errors.items():
            out.append(f"  - error ×{n}: `{msg}`\n")
    return "".join(out)


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
    try:
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
