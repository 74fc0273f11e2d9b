"""Figures for a sweep: the Pareto plot, metric-vs-budget comparison and the KD-weights grid.

The functions draw only what ``analysis.pareto`` and ``analysis.tables`` return; they compute
nothing about dominance. They build ``matplotlib.figure.Figure`` objects directly (no pyplot state,
no GUI backend needed) that save to PNG and SVG and display in Jupyter.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from analysis.pareto import ParetoInfo
from kpid_core.files import atomic_write

__all__ = [
    "FORMATS",
    "STYLE",
    "axis_spec",
    "kd_grid_is_dense",
    "plot_kd_grid",
    "plot_metric_vs_budget",
    "plot_pareto",
    "save_figure",
]

FORMATS = ("png", "svg")
STYLE: dict[str, object] = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#d9d9d9",
    "grid.linewidth": 0.5,
    "axes.axisbelow": True,
    "savefig.dpi": 200,
    "svg.fonttype": "none",  # text stays text in SVG (editable, searchable)
}
_METRIC_COLORS = ("#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377", "#BBBBBB")
_PUBLISHED_MARKERS = {"efficientnet": "s", "mobilenet_v3": "^", "resnet": "D"}


@contextmanager
def _style() -> Iterator[None]:
    with rc_context(STYLE):
        yield


def axis_spec(column: str, values: pd.Series | np.ndarray | None = None) -> tuple[str, float]:
    """Axis label (with unit) and the factor that converts a results column into it.

    ``macs`` → "MACs (M)" (or "MACs (G)" from 10⁹ up), ``accuracy``-like fractions → percent,
    ``latency_ms`` → ms, ``params`` → millions.
    """
    vmax = float(np.nanmax(np.asarray(values, dtype=float))) if values is not None and len(values) else 0.0
    if column in ("macs", "macs_dense"):
        return ("MACs (G)", 1e-9) if vmax >= 1e9 else ("MACs (M)", 1e-6)
    if column in ("params", "params_dense"):
        return "parameters (M)", 1e-6
    if column in ("accuracy", "val_accuracy", "teacher_accuracy"):
        prefix = "validation " if column == "val_accuracy" else ""
        return f"{prefix}top-1 accuracy (%)", 100.0
    if column in ("latency_ms", "latency_dense_ms"):
        return "latency (ms)", 1.0
    if column == "latency_ratio":
        return "latency kept (% of dense)", 100.0
    if column in ("macs_ratio", "budget"):
        return f"{'MAC budget' if column == 'budget' else 'MACs kept'} (% of dense)", 100.0
    return column, 1.0


def _use_log(values: np.ndarray) -> bool:
    v = values[np.isfinite(values) & (values > 0)]
    return len(v) > 1 and v.max() / v.min() > 10 ** 1.0


def _number(v: float, _pos: object = None) -> str:
    return f"{v:g}"


def _metric_colors(names: Sequence[object]) -> dict[object, str]:
    return {name: _METRIC_COLORS[i % len(_METRIC_COLORS)] for i, name in enumerate(sorted(map(str, names)))}


def plot_pareto(
    info: ParetoInfo,
    *,
    same_data: pd.DataFrame | None = None,
    published: pd.DataFrame | None = None,
    teacher: Mapping[str, float] | None = None,
    color_by: str | None = "metric",
    title: str | None = None,
    note: str | None = None,
) -> Figure:
    """The Pareto plot: every considered trial faint (coloured by ``color_by``), early-stopped trials
    as faint crosses, the front bold as a step line, baselines as labelled markers, the dense teacher
    as a horizontal (accuracy) and a vertical (MACs) reference line.

    ``same_data`` / ``published``: tables with ``label`` and the ``info.x``/``info.y`` columns (same
    units as the trials). ``teacher``: ``{"macs": ..., "accuracy": ...}``. ``note`` is printed under
    the axes (e.g. why published points are or are not drawn).
    """
    x, y = info.x, info.y
    frames = [info.front[x], info.dominated[x]]
    for extra in (same_data, published):
        if extra is not None and len(extra):
            frames.append(extra[x])
    if teacher and "macs" in teacher and x == "macs":
        frames.append(pd.Series([teacher["macs"]]))
    all_x = pd.concat(frames).to_numpy(dtype=float)
    xlabel, xs = axis_spec(x, all_x)
    ylabel, ys = axis_spec(y)

    with _style():
        fig = Figure(figsize=(7.2, 4.4), layout="constrained")
        ax = fig.add_subplot()
        _draw_trials(ax, info, color_by, xs, ys)
        front = info.front
        if teacher:
            _draw_teacher(ax, teacher, x, y, xs, ys, xlabel)
        labels = _draw_baselines(ax, same_data, published, x, y, xs, ys)
        ax.margins(x=0.04, y=0.07)  # headroom for labels of the highest and lowest points
        if _use_log(all_x * xs):
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(_number))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(xlabel + (" — log scale" if ax.get_xscale() == "log" else ""))
        ax.set_ylabel(ylabel)
        if title:
            ax.set_title(title, loc="left")
        legend = ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, borderaxespad=0.0)
        _place_labels(fig, ax, labels, avoid=_staircase(front[x] * xs, front[y] * ys))
        for handle in legend.legend_handles:
            handle.set_alpha(1.0)  # faint in the plot, legible in the legend
        if note:
            fig.text(0.0, -0.01, note, ha="left", va="top", fontsize=7, color="#555555", wrap=True)
    return fig


def _draw_trials(ax, info: ParetoInfo, color_by: str | None, xs: float, ys: float) -> None:
    """Every considered trial faint (coloured by ``color_by``), early-stopped ones as crosses, the
    front as a bold step line."""
    x, y = info.x, info.y
    considered = info.considered
    if color_by and color_by in considered.columns and considered[color_by].notna().any():
        colors = _metric_colors(considered[color_by].dropna().unique())
        for name, group in considered.groupby(considered[color_by].astype("string"), observed=True):
            ax.scatter(group[x] * xs, group[y] * ys, s=14, color=colors[str(name)], alpha=0.35,
                       linewidths=0, label=f"{color_by}: {name}", zorder=2)
        rest = considered[considered[color_by].isna()]
    else:
        rest = considered
    if len(rest):
        ax.scatter(rest[x] * xs, rest[y] * ys, s=14, color="#777777", alpha=0.35, linewidths=0,
                   label="trials", zorder=2)
    stopped = info.excluded
    if "status" in stopped.columns:
        stopped = stopped[stopped["status"].astype("string") == "early_stopped"]
    stopped = stopped.dropna(subset=[x, y])
    if len(stopped):
        ax.scatter(stopped[x] * xs, stopped[y] * ys, s=14, marker="x", color="#999999", alpha=0.5,
                   linewidths=0.8, label="early-stopped (partial, not on front)", zorder=2)
    front = info.front
    if len(front):
        ax.step(front[x] * xs, front[y] * ys, where="post", color="black", linewidth=1.4, zorder=4)
        ax.scatter(front[x] * xs, front[y] * ys, s=14, color="black", zorder=5,
                   label=f"Pareto front ({len(front)} trial{'' if len(front) == 1 else 's'})")


def _draw_teacher(ax, teacher: Mapping[str, float], x: str, y: str, xs: float, ys: float, xlabel: str) -> None:
    """The dense teacher as a horizontal (accuracy) and a vertical (MACs) reference line."""
    if "accuracy" in teacher and y in ("accuracy", "val_accuracy"):
        ax.axhline(teacher["accuracy"] * ys, color="#555555", linestyle="--", linewidth=0.9, zorder=1,
                   label=f"dense teacher ({teacher['accuracy'] * ys:.1f} %)")
    if "macs" in teacher and x == "macs":
        ax.axvline(teacher["macs"] * xs, color="#555555", linestyle=":", linewidth=0.9, zorder=1,
                   label=f"dense teacher MACs ({teacher['macs'] * xs:.3g} {xlabel.split('(')[1].rstrip(')')})")


def _draw_baselines(ax, same_data: pd.DataFrame | None, published: pd.DataFrame | None, x: str, y: str,
                    xs: float, ys: float) -> list[tuple[float, float, str, str]]:
    """Same-data and published baselines as markers; returns their labels (x, y, text, colour)."""
    labels: list[tuple[float, float, str, str]] = []
    if same_data is not None and len(same_data):
        ax.scatter(same_data[x] * xs, same_data[y] * ys, s=46, marker="o", facecolors="white",
                   edgecolors="#CC3311", linewidths=1.4, zorder=6, label="baselines (same data)")
        labels += [(p[x] * xs, p[y] * ys, str(p["label"]), "#CC3311") for _, p in same_data.iterrows()]
    if published is not None and len(published):
        for family, group in published.groupby(published["family"].astype("string")):
            kpid = group["kind"].astype("string") == "kpid"
            marker = _PUBLISHED_MARKERS.get(str(family), "P")
            ax.scatter(group.loc[~kpid, x] * xs, group.loc[~kpid, y] * ys, s=34, marker=marker,
                       facecolors="white", edgecolors="#0077BB", linewidths=1.2, zorder=6,
                       label=f"published: {family}" if (~kpid).any() else None)
            if kpid.any():
                ax.scatter(group.loc[kpid, x] * xs, group.loc[kpid, y] * ys, s=40, marker=marker,
                           color="#EE7733", zorder=6, label=f"KPID paper: {family}")
        labels += [(p[x] * xs, p[y] * ys, str(p["label"]), "#0077BB") for _, p in published.iterrows()]
    return labels


# Candidate label offsets (points) around a marker, tried in order until one overlaps nothing.
_OFFSETS = tuple(
    (dx, dy, "left" if dx > 0 else "right" if dx < 0 else "center", r > 1)
    for r in (1.0, 2.0, 3.2)
    for dx, dy in ((5, -3), (-5, -3), (5, 3), (5, -9), (-5, 3), (-5, -9), (0, 8), (0, -15))
    for dx, dy in [(dx * r, dy * r if abs(dy) > 3 else dy)]
)


def _staircase(xv: pd.Series, yv: pd.Series) -> list[tuple[float, float]]:
    """Vertices of the ``where="post"`` step line through the points (what ``ax.step`` draws)."""
    out: list[tuple[float, float]] = []
    xs, ys = list(xv), list(yv)
    for i, (a, b) in enumerate(zip(xs, ys)):
        out.append((a, b))
        if i + 1 < len(xs):
            out.append((xs[i + 1], b))
    return out


def _place_labels(fig: Figure, ax, labels: list[tuple[float, float, str, str]],
                  avoid: list[tuple[float, float]] = ()) -> None:
    """Annotate points (data coords, text, colour) so that labels overlap neither each other, nor the
    labelled markers, nor the ``avoid`` points (e.g. the front): greedy choice among
    :data:`_OFFSETS`, measured with the Agg renderer; when all overlap, the least-overlapping one."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.transforms import Bbox

    if not labels:
        return
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()  # settle the layout so that data → pixel transforms are final
    renderer = canvas.get_renderer()
    pad = 4.0 * fig.dpi / 72.0
    occupied = []
    for px, py in [(p[0], p[1]) for p in labels]:
        cx, cy = ax.transData.transform((px, py))
        occupied.append(Bbox.from_extents(cx - pad, cy - pad, cx + pad, cy + pad))
    # `avoid` is a polyline (the front's staircase): sample it densely in pixels.
    if len(avoid):
        pts = ax.transData.transform(np.asarray(avoid, dtype=float))
        for (x0, y0), (x1, y1) in itertools.pairwise(pts):
            for t in np.linspace(0.0, 1.0, max(2, int(np.hypot(x1 - x0, y1 - y0) / pad) + 1)):
                cx, cy = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
                occupied.append(Bbox.from_extents(cx - pad / 2, cy - pad / 2, cx + pad / 2, cy + pad / 2))
    axes_box = ax.get_window_extent(renderer)

    def cost(box) -> float:
        area = sum(max(0.0, min(box.x1, o.x1) - max(box.x0, o.x0)) * max(0.0, min(box.y1, o.y1) - max(box.y0, o.y0))
                   for o in occupied)
        outside = box.width * box.height - max(0.0, min(box.x1, axes_box.x1) - max(box.x0, axes_box.x0)) * max(
            0.0, min(box.y1, axes_box.y1) - max(box.y0, axes_box.y0))
        return area + 4.0 * outside

    for px, py, text, color in sorted(labels, key=lambda t: (t[0], t[1])):
        best = None
        for dx, dy, ha, far in _OFFSETS:
            # A label pushed away from its marker gets a thin leader line back to it.
            arrow = {"arrowstyle": "-", "color": color, "lw": 0.5, "shrinkA": 0, "shrinkB": 3} if far else None
            ann = ax.annotate(text, (px, py), xytext=(dx, dy), textcoords="offset points", ha=ha,
                              fontsize=6.5, color=color, zorder=7, arrowprops=arrow)
            ann.set_in_layout(False)  # labels must not move the axes after they were measured
            ann.update_positions(renderer)
            box = Text.get_window_extent(ann, renderer)  # the text alone, not its leader line
            c = cost(box)
            if best is None or c < best[0]:
                if best is not None:
                    best[1].remove()
                best = (c, ann, box)
            else:
                ann.remove()
            if c == 0.0:
                break
        occupied.append(best[2])


def plot_metric_vs_budget(
    table: pd.DataFrame,
    by: str = "metric",
    y: str = "accuracy",
    teacher: Mapping[str, float] | None = None,
    title: str | None = None,
) -> Figure:
    """Accuracy vs MAC budget, one line per importance metric (``by``); error bars are the std over
    repeats of the best setting (``analysis.tables.metric_vs_budget``)."""
    ylabel, ys = axis_spec(y)
    with _style():
        fig = Figure(figsize=(6.0, 4.0), layout="constrained")
        ax = fig.add_subplot()
        colors = _metric_colors(table[by].dropna().unique()) if len(table) else {}
        for name, group in table.groupby(table[by].astype("string"), observed=True):
            group = group.sort_values("budget")
            err = group["std"].fillna(0.0).to_numpy() * ys
            ax.errorbar(group["budget"] * 100, group["mean"] * ys, yerr=err, marker="o", markersize=4,
                        capsize=3, linewidth=1.3, color=colors.get(str(name)), label=str(name))
        if teacher and "accuracy" in teacher and y in ("accuracy", "val_accuracy"):
            ax.axhline(teacher["accuracy"] * ys, color="#555555", linestyle="--", linewidth=0.9,
                       label="dense teacher")
        ax.set_xlabel("MAC budget (% of dense model)")
        ax.set_ylabel(ylabel)
        ax.set_title(title or f"{ylabel.split(' (')[0]} by importance {by} (best setting, ±1 std over repeats)",
                     loc="left")
        ax.legend(title=by, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, borderaxespad=0.0)
    return fig


def kd_grid_is_dense(grids: Mapping[float, pd.DataFrame], max_values: int = 8) -> bool:
    """True when the weights form a grid worth a heatmap: every panel has at least half of its cells
    filled and at most ``max_values`` distinct values per axis (a grid sweep). Continuously sampled
    weights (Optuna) give one value per trial, a sparse diagonal that reads better as a scatter."""
    if not grids:
        return False
    for grid in grids.values():
        if max(grid.shape) > max_values or grid.notna().to_numpy().sum() < 0.5 * grid.size:
            return False
    return True


def plot_kd_grid(
    grids: Mapping[float, pd.DataFrame],
    y: str = "accuracy",
    row_label: str = "inner KD weight γ",
    col_label: str = "logits KD weight",
) -> Figure:
    """Small multiples, one panel per budget, of the best ``y`` at each (logits KD weight, γ).

    A grid sweep (see :func:`kd_grid_is_dense`) is drawn as heatmaps with the values in the cells;
    continuously sampled weights as scatter plots on shared axes, coloured by ``y``. The best
    setting of each budget is outlined. Colours are scaled per panel (accuracies at different
    budgets differ far more than between KD settings at one budget; a shared scale would hide the
    comparison the figure is for)."""
    budgets = sorted(grids)
    with _style():
        n = max(len(budgets), 1)
        dense = kd_grid_is_dense(grids)
        fig = Figure(figsize=(min((2.5 if dense else 3.0) * n + 0.6, 15), 3.0), layout="constrained")
        axes = fig.subplots(1, n, squeeze=False, sharex=not dense, sharey=not dense)[0]
        if not budgets:
            axes[0].text(0.5, 0.5, "KD weights were not swept", ha="center", va="center")
            axes[0].set_axis_off()
            return fig
        ylabel, ys = axis_spec(y)
        for ax, b in zip(axes, budgets):
            (_kd_heatmap if dense else _kd_scatter)(fig, ax, grids[b], ys)
            ax.set_title(f"budget {b * 100:g} %")
            ax.set_xlabel(col_label)
        axes[0].set_ylabel(row_label)
        how = "best cell outlined" if dense else "best trial ringed"
        fig.suptitle(f"{ylabel} by distillation weights ({how}; colours scaled per budget)", x=0.0, ha="left",
                     fontsize=10)
    return fig


def _panel_range(data: np.ndarray) -> tuple[float, float]:
    vmin, vmax = float(np.nanmin(data)), float(np.nanmax(data))
    if vmax - vmin < 1e-12:
        vmin, vmax = vmin - 1.0, vmax + 1.0
    return vmin, vmax


def _kd_heatmap(fig: Figure, ax, grid: pd.DataFrame, ys: float) -> None:
    from matplotlib.patches import Rectangle

    data = grid.to_numpy(dtype=float) * ys
    vmin, vmax = _panel_range(data)
    ax.imshow(data, cmap="viridis", vmin=vmin, vmax=vmax, origin="lower", aspect="auto")
    ax.set_xticks(range(grid.shape[1]), [f"{c:.3g}" for c in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [f"{r:.3g}" for r in grid.index])
    ax.grid(False)
    mid = (vmin + vmax) / 2
    for (i, j), v in np.ndenumerate(data):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=8, color="white" if v < mid else "black")
    bi, bj = np.unravel_index(np.nanargmax(data), data.shape)
    ax.add_patch(Rectangle((bj - 0.5, bi - 0.5), 1, 1, fill=False, edgecolor="#EE3377", linewidth=2.0))


def _kd_scatter(fig: Figure, ax, grid: pd.DataFrame, ys: float) -> None:
    long = grid.stack().dropna().rename("v").reset_index()  # rows: (γ, kd weight, value) of filled cells
    gam, kd, v = (long.iloc[:, i].to_numpy(dtype=float) for i in range(3))
    v = v * ys
    vmin, vmax = _panel_range(v)
    sc = ax.scatter(kd, gam, c=v, cmap="viridis", vmin=vmin, vmax=vmax, s=42, edgecolors="white", linewidths=0.5,
                    zorder=3)
    best = int(np.nanargmax(v))
    ax.scatter([kd[best]], [gam[best]], s=140, facecolors="none", edgecolors="#EE3377", linewidths=1.8, zorder=4)
    ax.annotate(f"{v[best]:.1f}", (kd[best], gam[best]), xytext=(6, 6), textcoords="offset points", fontsize=8,
                color="#EE3377", zorder=5)
    fig.colorbar(sc, ax=ax, fraction=0.08, pad=0.02, aspect=25)


def save_figure(fig: Figure, out_dir: str | Path, stem: str, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write ``fig`` as ``out_dir/stem.<format>`` for each format (png at 200 dpi); returns the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    with _style():
        for fmt in formats:
            path = out_dir / f"{stem}.{fmt}"
            # whole or not at all: a sweep stopped by Ctrl-C mid-report leaves no half-drawn figure
            atomic_write(path, lambda tmp, f=fmt: fig.savefig(tmp, format=f, bbox_inches="tight"))
            paths.append(path)
    return paths
