"""The plots draw exactly what analysis.pareto returns, with units, log axis and an outside legend."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.load import load_results
from analysis.pareto import pareto_front
from analysis.plots import axis_spec, plot_kd_grid, plot_metric_vs_budget, plot_pareto
from analysis.tables import kd_grid, metric_vs_budget, teacher_point


def _front_line(ax):
    return next(line for line in ax.get_lines() if line.get_color() == "black")


def test_pareto_plot_draws_the_front_and_references(results_dir):
    df = load_results(results_dir)
    info = pareto_front(df[df["kind"] == "pruned"])
    teacher = teacher_point(df)
    from analysis.baselines import same_data_baselines

    fig = plot_pareto(info, teacher=teacher, same_data=same_data_baselines(df))
    ax = fig.axes[0]
    line = _front_line(ax)
    # ax.step(where="post") draws through exactly the front points (in M MACs and %).
    xs, ys = line.get_data()
    np.testing.assert_allclose(np.unique(xs), np.unique(info.front["macs"] / 1e6))
    np.testing.assert_allclose(np.unique(ys), np.unique(info.front["accuracy"] * 100))
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
    assert len(fig.axes) == len(grids) == 4
    assert axis_spec("latency_ms") == ("latency (ms)", 1.0)
