"""The report: make_report's files and numbers, and the CLI (success and bad input, as subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.errors import AnalysisError
from analysis.load import load_results
from analysis.pareto import pareto_front
from analysis.report import main, make_report

REPO = Path(__file__).resolve().parents[2]


def test_make_report_writes_files_and_front(results_dir):
    written = make_report(results_dir)
    out = results_dir / "report"
    expected = {"pareto.png", "pareto.svg", "pareto.csv", "summary.md", "metric_vs_budget.png",
                "metric_vs_budget.svg", "kd_weights.png", "kd_weights.svg"}
    assert set(written) == expected
    for name in expected:
        assert (out / name).stat().st_size > 0
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (out / "pareto.svg").read_text()[:500]

    df = load_results(results_dir)
    front = pd.read_csv(out / "pareto.csv")
    expected_front = pareto_front(df[df["kind"] == "pruned"]).front
    assert list(front["trial_id"]) == list(expected_front["trial_id"])
    statuses = df.set_index("trial_id")["status"]
    assert (statuses[front["trial_id"]] == "finished").all()  # no early-stopped/errored trial on the front
    assert front["macs"].is_monotonic_increasing


def test_summary_content_and_gain_at_matched_macs(results_dir):
    make_report(results_dir)
    text = (results_dir / "report" / "summary.md").read_text()
    for section in ("## Pareto front", "## Best trial per budget", "## Importance metric by budget",
                    "## Gain over baselines at matched MACs", "## Trials not on the front"):
        assert section in text
    assert "published ImageNet points not drawn" in text
    assert "NonFiniteLossError" in text
    # The gain over the width-0.5 baseline: best front accuracy at ≤ its MACs, minus its accuracy.
    df = load_results(results_dir)
    base = df[(df["kind"] == "baseline") & (df["config/model.width"] == 0.5)].iloc[0]
    front = pareto_front(df[df["kind"] == "pruned"]).front
    best = front[front["macs"] <= base["macs"]]["accuracy"].max()
    gain_pp = (best - base["accuracy"]) * 100
    row = next(line for line in text.splitlines() if line.startswith("| digits_resnet ×0.5"))
    assert row.rstrip(" |").split("|")[-1].strip() == f"{'+' if gain_pp >= 0 else ''}{gain_pp:.2f}"
    # The width-0.25 baseline is cheaper than any front point: no gain can be claimed.
    row = next(line for line in text.splitlines() if line.startswith("| digits_resnet ×0.25"))
    assert row.rstrip(" |").split("|")[-1].strip() == "–"


def test_published_points_on_imagenet_results(imagenet_results_dir, tmp_path):
    make_report(imagenet_results_dir, tmp_path / "rep", formats=["png"])
    text = (tmp_path / "rep" / "summary.md").read_text()
    assert "published ImageNet points drawn" in text
    assert "| EfficientNet-B0 (published, ImageNet)" in text and "| KPID ResNet-50 @2.0G" in text
    # Forced on a digits sweep, and said so.
    make_report(imagenet_results_dir, tmp_path / "never", formats=["png"], published="never")
    assert "(published, ImageNet)" not in (tmp_path / "never" / "summary.md").read_text()


def test_other_axes_latency(results_dir, tmp_path):
    written = make_report(results_dir, tmp_path / "lat", x="latency_ms", formats=["svg"])
    front = pd.read_csv(written["pareto.csv"])
    assert np.all(np.diff(front["latency_ms"]) >= 0)
    assert "latency (ms)" in written["summary.md"].read_text()


def test_only_errored_trials_is_an_error_and_writes_nothing(tmp_path, trials_df):
    d = tmp_path / "errs"
    d.mkdir()
    trials_df.assign(status="error", accuracy=np.nan).to_parquet(d / "trials.parquet")
    with pytest.raises(AnalysisError, match="no finished pruning trial"):
        make_report(d)
    assert not (d / "report").exists()


def _run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "analysis.report", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
def test_cli_writes_report(results_dir, tmp_path):
    res = _run(str(results_dir), "--out", str(tmp_path / "out"), "--format", "png")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out" / "pareto.png").is_file() and (tmp_path / "out" / "summary.md").is_file()
    assert not (tmp_path / "out" / "pareto.svg").exists()
    assert "summary.md" in res.stdout


def test_cli_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for opt in ("RESULTS_DIR", "--out", "--x", "--y", "--format", "--published", "default: macs"):
        assert opt in text


def _bad_inputs(tmp: Path, trials: pd.DataFrame) -> dict[str, tuple[list[str], str]]:
    cases = {}
    (tmp / "notsweep").mkdir()
    (tmp / "notsweep" / "readme.txt").write_text("x")
    cases["not a sweep"] = ([str(tmp / "notsweep")], "is not a sweep result")
    (tmp / "empty").mkdir()
    trials.iloc[:0].to_parquet(tmp / "empty" / "trials.parquet")
    cases["empty sweep"] = ([str(tmp / "empty")], "empty sweep")
    (tmp / "errs").mkdir()
    trials.assign(status="error", accuracy=np.nan).to_parquet(tmp / "errs" / "trials.parquet")
    cases["only errors"] = ([str(tmp / "errs")], "no finished pruning trial")
    (tmp / "nocol").mkdir()
    trials.drop(columns=["accuracy"]).to_parquet(tmp / "nocol" / "trials.parquet")
    cases["missing column"] = ([str(tmp / "nocol")], "lacks required column(s) accuracy")
    (tmp / "ok").mkdir()
    trials.to_parquet(tmp / "ok" / "trials.parquet")
    cases["bad x column"] = ([str(tmp / "ok"), "--x", "flops"], "--x: column 'flops' is not a numeric results column")
    cases["bad y column"] = ([str(tmp / "ok"), "--y", "top5"], "--y: column 'top5' is not a numeric results column")
    cases["bad format"] = ([str(tmp / "ok"), "--format", "png,jpg"], "allowed: png, svg, pdf")
    cases["same x and y"] = ([str(tmp / "ok"), "--x", "accuracy", "--y", "accuracy"], "--x and --y are both 'accuracy'")
    return cases


def test_main_bad_input_one_line_exit_2(tmp_path, trials_df, capsys):
    cases = _bad_inputs(tmp_path, trials_df)
    cases["unknown option"] = ([str(tmp_path / "ok"), "--published", "sometimes"], "argument --published")
    for name, (args, message) in cases.items():
        try:
            code = main(args)
        except SystemExit as exc:  # argparse's own checks
            code = exc.code
        assert code == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], (name, err)
        assert not (Path(args[0]) / "report").exists(), name  # nothing written on bad input


@pytest.mark.slow
@pytest.mark.parametrize("case", ["not a sweep", "only errors"])  # the rest: in-process above
def test_cli_bad_input_subprocess(tmp_path, trials_df, case, capsys):
    """``not a sweep`` as a program (exit status and stderr of ``python -m analysis.report``); ``only errors``
    through the same ``main`` in-process (one more interpreter start would test nothing more)."""
    args, message = _bad_inputs(tmp_path, trials_df)[case]
    if case == "not a sweep":
        res = _run(*args)
    else:
        code = main(args)
        res = subprocess.CompletedProcess(args, code, *capsys.readouterr())
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], res.stderr
    assert "Traceback" not in res.stderr
    assert not (Path(args[0]) / "report").exists()  # nothing written on bad input


def test_cli_out_that_cannot_be_created(results_dir, tmp_path, capsys):
    """In-process: the program's exit status and stderr are covered by the subprocess tests above."""
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    out = blocker / "report"
    r = subprocess.CompletedProcess([], main([str(results_dir), "--out", str(out)]), *capsys.readouterr())
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == f"error: --out: cannot write {str(out)!r}: Not a directory\n", r.stderr
    assert blocker.read_text() == "mine"


def test_report_adds_the_latency_front_when_trials_measured_latency(tmp_path, trials_df):
    """Trials that timed themselves on a named device get a second front on measured latency, which
    differs from the MAC front when latency does not follow MACs."""
    df = trials_df.copy()
    rng = np.random.default_rng(3)
    # latency that MACs do not predict: a per-trial offset, so the two fronts disagree
    df["latency_ms"] = df["latency_ms"] + rng.uniform(0.0, 1.5, len(df))
    df["latency_device"] = np.where(df["latency_ms"].notna(), "cpu: test CPU", None)
    df["cost"] = "latency"
    d = tmp_path / "lat"
    d.mkdir()
    df.to_parquet(d / "trials.parquet", index=False)
    written = make_report(d)
    assert {"pareto_latency.png", "pareto_latency.svg", "pareto_latency.csv"} <= set(written)
    front = pd.read_csv(d / "report" / "pareto_latency.csv")
    expected = pareto_front(load_results(d).query("kind == 'pruned'"), x="latency_ms").front
    assert list(front["trial_id"]) == list(expected["trial_id"])
    assert front["latency_ms"].is_monotonic_increasing and front["accuracy"].is_monotonic_increasing
    mac_front = pd.read_csv(d / "report" / "pareto.csv")
    assert list(front["trial_id"]) != list(mac_front["trial_id"])
    summary = (d / "report" / "summary.md").read_text()
    assert "Pareto front on measured latency" in summary and "cpu: test CPU" in summary


def test_a_dense_model_of_zero_macs_gives_raw_hypervolume_and_no_warning(tmp_path, trials_df):
    import warnings

    d = tmp_path / "zero"
    d.mkdir()
    trials_df.assign(macs_dense=0).to_parquet(d / "trials.parquet")  # no dense MACs known: nothing to normalise by
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's divide-by-zero RuntimeWarning would land on stderr
        make_report(d, tmp_path / "out", formats=("png",))
    line = next(ln for ln in (tmp_path / "out" / "summary.md").read_text().splitlines() if ln.startswith("Hypervolume"))
    assert "raw units" in line and "nan" not in line and "inf" not in line
