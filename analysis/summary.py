"""``summary.md`` of a sweep report: the front, best trial per budget, metric comparison, gain over
each baseline at matched MACs, the trials not on the front. It writes only what
:class:`analysis.report.ReportInfo` holds (computed and checked by :func:`analysis.report.report_info`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from analysis.load import FINISHED, STATUSES
from analysis.pareto import ParetoInfo, hypervolume, pareto_front
from analysis.tables import best_per_budget, gains_over_baselines

if TYPE_CHECKING:  # report imports this module to write the summary
    from analysis.report import ReportInfo

__all__ = ["has_xy", "latency_note", "status_counts", "summary_markdown"]



def has_xy(rows: pd.DataFrame, x: str, y: str) -> bool:
    """Whether any of ``rows`` has both an ``x`` and a ``y`` value."""
    return len(rows) > 0 and rows[[x, y]].notna().all(axis=1).any()


def status_counts(df: pd.DataFrame) -> str:
    """``"finished: 5, error: 1"``: how many trials have each status, in the table's status order."""
    counts = df["status"].value_counts()
    return ", ".join(f"{s}: {int(counts.get(s, 0))}" for s in STATUSES if counts.get(s, 0))


def latency_note(df: pd.DataFrame) -> str:
    """Where latency was measured (device and batch), from the trials' own columns."""
    devices = sorted(set(df["latency_device"].dropna().astype(str))) if "latency_device" in df.columns else []
    batch = df.get("config/latency.batch")
    b = f", batch {int(batch.dropna().iloc[0])}" if batch is not None and batch.notna().any() else ""
    return f"latency measured on {', '.join(devices) or 'an unnamed device'}{b} (median of interleaved runs)"


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
    if x == "macs" and teacher and teacher.get("macs", 0) > 0 and y in ("accuracy", "val_accuracy"):
        pts = pts / np.array([teacher["macs"], 1.0])
        return hypervolume(pts, (1.0, 0.0)), "MACs as a fraction of the dense model, reference (1.0, 0 %)"
    considered = info.considered[[x, y]].to_numpy(dtype=float)
    ref = (float(considered[:, 0].max()), float(considered[:, 1].min()))
    return hypervolume(pts, ref), f"raw units, reference ({x}={ref[0]:.4g}, {y}={ref[1]:.4g})"


def summary_markdown(r: ReportInfo) -> str:
    """``summary.md``: the head, then one section each.

    Args:
        r: what :func:`analysis.report.report_info` computed.

    Returns:
        The Markdown text.
    """
    parts = [_summary_head(r), _front_section(r), _latency_section(r), _best_section(r), _metric_section(r),
             _gains_section(r), _off_front_section(r)]
    return "".join(parts)


def _summary_head(r: ReportInfo) -> str:
    xlabel, xs, _, _ = r.axes()
    df, teacher, x = r.df, r.teacher, r.x
    out = [f"# Sweep report\n\nSource: `{df.attrs.get('source', '?')}` — {len(df)} trials ({status_counts(df)}).\n"]
    if teacher:
        unit = xlabel.split("(")[1].rstrip(")") if x == "macs" else "M"
        t_m = f"{teacher['macs'] * (xs if x == 'macs' else 1e-6):.4g} {unit}" if "macs" in teacher else "–"
        out.append(f"Dense teacher: {t_m} MACs, {_fmt(teacher.get('accuracy'), 100, 2)} % top-1.\n")
    out.append(f"Baselines: {r.note}.\n")
    out.append("Only finished trials compete: early-stopped trials report partial accuracies and errored "
               "ones none, so they are listed below but never on the front.\n")
    return "".join(out)


def _front_section(r: ReportInfo) -> str:
    xlabel, xs, ylabel, ys = r.axes()
    x, y, info = r.x, r.y, r.front
    hv, hv_desc = _normalised_hypervolume(info, r.teacher, x, y)
    out = [f"\n## Pareto front ({ylabel} vs {xlabel}, {len(info.front)} trial{'' if len(info.front) == 1 else 's'})\n\n"]
    rows = [[t.trial_id, _fmt(t.metric), _fmt(t.budget, 100, 0) + " %", _fmt(t.kd_weight, 1, 2),
             _fmt(t.inner_weight, 1, 2), _fmt(getattr(t, x), xs, 3), _fmt(getattr(t, y), ys, 2)]
            for t in info.front.itertuples()]
    out.append(_md_table(["trial", "metric", "budget", "KD weight", "γ", xlabel, ylabel], rows))
    out.append(f"\nHypervolume of the front: {hv:.4f} ({hv_desc}).\n")
    by_metric = {}
    for metric, group in r.df[r.df["kind"].astype("string") == "pruned"].groupby("metric", observed=True):
        sub = pareto_front(group, x=x, y=y)
        if len(sub.front):
            by_metric[metric] = _normalised_hypervolume(sub, r.teacher, x, y)[0]
    if by_metric:
        out.append("Per importance metric (higher is better): "
                   + ", ".join(f"{m} {v:.4f}" for m, v in sorted(by_metric.items(), key=lambda kv: -kv[1])) + ".\n")
    return "".join(out)


def _latency_section(r: ReportInfo) -> str:
    if r.latency_front is None:
        return ""
    _, _, ylabel, ys = r.axes()
    info = r.latency_front
    rows = [[t.trial_id, _fmt(t.metric), _fmt(getattr(t, "cost", None)), _fmt(t.budget, 100, 0) + " %",
             _fmt(t.latency_ms, 1, 3), _fmt(t.macs_ratio, 100, 1) + " %", _fmt(getattr(t, r.y), ys, 2)]
            for t in info.front.itertuples()]
    return (f"\n## Pareto front on measured latency ({len(info.front)} trial{'' if len(info.front) == 1 else 's'})\n\n"
            f"{latency_note(r.df)}.\n\n"
            + _md_table(["trial", "metric", "cost", "budget", "latency (ms)", "MACs kept", ylabel], rows))


def _best_section(r: ReportInfo) -> str:
    xlabel, xs, ylabel, ys = r.axes()
    x, y = r.x, r.y
    best = best_per_budget(r.df, y=y)
    if not len(best):
        return ""
    t_acc = r.teacher.get("accuracy") if r.teacher else None
    rows = [[_fmt(t.budget, 100, 0) + " %", t.trial_id, _fmt(t.metric), _fmt(t.kd_weight), _fmt(t.inner_weight),
             _fmt(getattr(t, x), xs, 3), _fmt(getattr(t, y), ys, 2),
             _fmt((getattr(t, y) - t_acc) if t_acc is not None and y == "accuracy" else None, 100, 2)]
            for t in best.itertuples()]
    return "\n## Best trial per budget\n\n" + _md_table(
        ["budget", "trial", "metric", "KD weight", "γ", xlabel, ylabel, "Δ vs teacher (pp)"], rows)


def _metric_section(r: ReportInfo) -> str:
    mvb = r.metric_vs_budget
    if not (len(mvb) and "metric" in mvb.columns):
        return ""
    ys = r.axes()[3]
    metrics = sorted(mvb["metric"].astype(str).unique())
    rows = []
    for b, group in mvb.groupby("budget"):
        cells = {str(t.metric): f"{t.mean * ys:.2f} ± {_fmt(t.std, ys, 2)} ({t.n})" for t in group.itertuples()}
        winner = group.loc[group["mean"].idxmax(), "metric"]
        rows.append([_fmt(b, 100, 0) + " %", *[cells.get(m, "–") for m in metrics], str(winner)])
    return ("\n## Importance metric by budget (best setting: mean ± std over repeats, n)\n\n"
            + _md_table(["budget", *metrics, "best"], rows))


def _gains_section(r: ReportInfo) -> str:
    xlabel, xs, ylabel, ys = r.axes()
    x, y = r.x, r.y
    out = ["\n## Gain over baselines at matched MACs\n\n",
           (f"For each baseline: the best front {ylabel.split(' (')[0]} at ≤ its {x}, minus its own "
           "(pp = percentage points; – = no front point that cheap). A same-data baseline matched to a "
           "budget is compared with the front at that budget.\n\n")]
    tables = []
    if has_xy(r.same_data, x, y):
        tables.append(("same data", r.same_data))
    if r.published is not None:
        tables.append(("published, ImageNet", r.published))
    if not tables:
        out.append("No baseline to compare with.\n")
    for name, rows_df in tables:
        g = gains_over_baselines(r.front.front, rows_df, x=x, y=y)
        rows = [[f"{t['baseline']} ({name})", _fmt(t[f'baseline_{x}'], xs, 3), _fmt(t[f'baseline_{y}'], ys, 2),
                 _fmt(t['trial_id']), _fmt(t[x], xs, 3), _fmt(t[y], ys, 2),
                 ("+" if np.isfinite(t["gain"]) and t["gain"] >= 0 else "") + _fmt(t["gain"], ys, 2)]
                for _, t in g.iterrows()]
        out.append(_md_table(["baseline", xlabel, ylabel, "front trial", f"its {xlabel}", f"its {ylabel}",
                              "gain (pp)" if y.endswith("accuracy") else "gain"], rows))
        out.append("\n")
    return "".join(out)


def _off_front_section(r: ReportInfo) -> str:
    df = r.df
    off = df[df["status"].astype("string") != FINISHED]
    if not len(off):
        return ""
    out = ["\n## Trials not on the front\n\n"]
    for status, group in off.groupby(off["status"].astype("string")):
        out.append(f"- {status}: {len(group)} ({', '.join(group['trial_id'].astype(str).head(8))}"
                   f"{', …' if len(group) > 8 else ''})\n")
    errors = off[off["error"].astype(str).str.len() > 0]["error"].astype(str).value_counts().head(5)
    for msg, n in errors.items():
        out.append(f"  - error ×{n}: `{msg}`\n")
    return "".join(out)
