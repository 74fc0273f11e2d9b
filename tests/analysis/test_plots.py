"""The plots draw exactly what analysis.pareto returns, with units, log axis and an outside legend."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.load import load_results
from analysis.pareto import pareto_front
from analysis.plots import axis_spec, kd_grid_is_dense, plot_kd_grid, plot_metric_vs_budget, plot_pareto
from analysis.tables import kd_grid, metric_vs_budget, teacher_point


def _points(xs, ys) -> set[tuple[float, float]]:
    return set(zip(np.round(np.asarray(xs, dtype=float), 9), np.round(np.asarray(ys, dtype=float), 9)))


def _lines_through(ax, xs, ys) -> list:
    """The lines of ``ax`` drawn through exactly the points ``(xs, ys)``: found by their data, whatever
    their colour or style."""
    want = _points(xs, ys)
    return [line for line in ax.get_lines() if _points(*line.get_data()) == want]


def test_pareto_plot_draws_the_front_and_references(results_dir):
    df = load_results(results_dir)
    info = pareto_front(df[df["kind"] == "pruned"])
    teacher = teacher_point(df)
    from analysis.baselines import same_data_baselines

    fig = plot_pareto(info, teacher=teacher, same_data=same_data_baselines(df))
    ax = fig.axes[0]
    # one step line (where="post") through exactly the front's points, in M MACs and %
    lines = _lines_through(ax, info.front["macs"] / 1e6, info.front["accuracy"] * 100)
    assert len(info.front) >= 3 and len(lines) == 1 and lines[0].get_drawstyle() == "steps-post"
    assert ax.get_xlabel().startswith("MACs (M)") and ax.get_ylabel() == "top-1 accuracy (%)"
    assert ax.get_xscale() == "log"  # 0.26 M (baseline) … 4.2 M (teacher) spans more than a decade
    refs = [ln for ln in ax.get_lines() if ln.get_linestyle() in ("--", ":")]
    assert {tuple(ln.get_ydata()) for ln in refs if ln.get_linestyle() == "--"} == {(teacher["accuracy"] * 100,) * 2}
    assert {tuple(ln.get_xdata()) for ln in refs if ln.get_linestyle() == ":"} == {(teacher["macs"] / 1e6,) * 2}
    fig.canvas.draw()
    legend_box = ax.get_legend().get_window_extent()
    assert legend_box.x0 >= ax.get_window_extent().x1  # legend outside the data


def test_linear_axis_for_a_narrow_range():
    df = pd.DataFrame({"trial_id": ["a", "b", "c"], "status": ["finished"] * 3, "macs": [2e6, 3e6, 4e6],
                       "accuracy": [0.8, 0.85, 0.9]})
    ax = plot_pareto(pareto_front(df)).axes[0]
    assert ax.get_xscale() == "linear"


def test_labelled_baselines_are_drawn(results_dir):
    from analysis.baselines import same_data_baselines

    df = load_results(results_dir)
    same = same_data_baselines(df)
    ax = plot_pareto(pareto_front(df[df["kind"] == "pruned"]), same_data=same).axes[0]
    texts = {t.get_text() for t in ax.texts}
    assert set(same["label"]) <= texts


def test_metric_and_kd_figures(results_dir):
    df = load_results(results_dir)
    table = metric_vs_budget(df)
    ax = plot_metric_vs_budget(table).axes[0]
    assert {t.get_text() for t in ax.get_legend().get_texts()} >= {"taylor", "l1", "random"}
    grids = kd_grid(df)
    fig = plot_kd_grid(grids)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == len(grids) == 4
    assert all(ax.get_title().startswith("budget ") for ax in panels)


def test_kd_figure_form_follows_the_data():
    """A grid sweep is drawn as heatmaps; continuously sampled weights as scatters (not a sparse diagonal
    of cells with one tick per sampled value)."""
    rng = np.random.default_rng(0)
    grid_sweep = {b: pd.DataFrame([[0.9, 0.91], [0.92, 0.93]], index=[0.0, 1.0], columns=[0.5, 1.0])
                  for b in (0.25, 0.5)}
    k, g = rng.uniform(0, 2, 6), rng.uniform(0, 2, 6)
    sampled = {0.5: pd.DataFrame(np.diag(rng.uniform(0.9, 1.0, 6)), index=g, columns=k).replace(0.0, np.nan)}
    assert kd_grid_is_dense(grid_sweep) and not kd_grid_is_dense(sampled)

    heat = plot_kd_grid(grid_sweep).axes[0]
    assert len(heat.images) == 1 and [t.get_text() for t in heat.get_xticklabels()] == ["0.5", "1"]
    assert sorted(t.get_text() for t in heat.texts) == ["90.0", "91.0", "92.0", "93.0"]

    fig = plot_kd_grid(sampled)
    ax = fig.axes[0]
    assert not ax.images and len(ax.collections) == 2  # the trials, and the ring on the best one
    xy = ax.collections[0].get_offsets()
    assert sorted(map(tuple, np.asarray(xy).round(9))) == sorted(zip(k.round(9), g.round(9)))
    best = sampled[0.5].stack().dropna().idxmax()
    np.testing.assert_allclose(ax.collections[1].get_offsets()[0], [best[1], best[0]])
    assert [t.get_text() for t in ax.texts] == [f"{np.nanmax(sampled[0.5].to_numpy()) * 100:.1f}"]
    assert any(a.get_label() == "<colorbar>" for a in fig.axes)
    assert axis_spec("latency_ms") == ("latency (ms)", 1.0)
