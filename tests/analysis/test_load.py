"""Loading sweep results: typed table from parquet/csv, from Ray's own files, and bad input."""

from __future__ import annotations

import shutil
import tempfile

import pandas as pd
import pytest

from analysis.errors import AnalysisError
from analysis.load import FLOAT_COLUMNS, INT_COLUMNS, STATUSES, load_results
from kpid_core.errors import KPIDError


def test_parquet_typed_columns(results_dir, trials_df):
    df = load_results(results_dir)
    assert df.attrs["source"].endswith("trials.parquet")
    assert len(df) == len(trials_df)
    assert isinstance(df["status"].dtype, pd.CategoricalDtype)
    assert list(df["status"].cat.categories) == list(STATUSES)
    for col in FLOAT_COLUMNS:
        assert df[col].dtype == "float64", col
    for col in INT_COLUMNS:  # counts: the writer's Int64 (the fixture wrote them as floats)
        assert str(df[col].dtype) == "Int64", col
    assert pd.api.types.is_string_dtype(df["metric"]) and pd.api.types.is_string_dtype(df["trial_id"])
    assert (df.loc[df["status"] == "finished", "error"] == "").all()
    assert df.loc[df["status"] == "error", "accuracy"].isna().all()
    assert set(df["kind"].astype(str)) == {"pruned", "baseline"}
    assert "config/data.name" in df.columns  # config columns pass through untouched


def test_csv_fallback_matches_parquet(results_dir):
    from_parquet = load_results(results_dir)
    (results_dir / "trials.parquet").unlink()
    from_csv = load_results(results_dir)
    assert from_csv.attrs["source"].endswith("trials.csv")
    cols = ["trial_id", "status", "metric", "budget", "accuracy", "macs", "epochs_done", "error"]
    pd.testing.assert_frame_equal(from_csv[cols], from_parquet[cols], check_dtype=True)
    assert load_results(results_dir / "trials.csv")["accuracy"].equals(from_parquet["accuracy"])


def test_reads_the_writers_table_with_its_dtypes(tmp_path):
    """What the sweep writes (rows from results_schema.trial_row, typed by typed_table) reads back
    with the same values and dtypes; only status and kind become categoricals."""
    from kpid_core.results_schema import FINAL_KEY, trial_row, typed_table

    cfg = {"model": {"name": "digits_resnet"}, "prune": {"budget": 0.5, "metric": "l1"}, "train": {"epochs": 2}}
    rows = [
        trial_row("a", cfg, {"accuracy": 0.9, "val_accuracy": 0.91, "macs": 2_100_000, "params": 9_000,
                             "epoch": 2, FINAL_KEY: True}, checkpoint_path="/x/checkpoint_000001"),
        trial_row("b", cfg, {"val_accuracy": 0.5, "macs": 2_000_000, "epoch": 1}),  # stopped early
        trial_row("c", cfg, {"trial_error": "NonFiniteLossError: nan", "epoch": 1, FINAL_KEY: True}),
        trial_row("d", cfg, None),
    ]
    written = typed_table(rows)
    written.to_parquet(tmp_path / "trials.parquet", index=False)
    written.to_csv(tmp_path / "trials.csv", index=False)
    for name in ("trials.parquet", "trials.csv"):
        df = load_results(tmp_path / name)
        assert df["status"].tolist() == ["finished", "early_stopped", "error", "pending"]
        assert df["macs"].tolist()[:2] == [2_100_000, 2_000_000] and str(df["macs"].dtype) == "Int64"
        assert df["accuracy"].isna().tolist() == [False, True, True, True]  # test accuracy: finished only
        assert df["error"].tolist() == ["", "", "NonFiniteLossError: nan", ""]
        for col in written.columns.drop(["status", "kind"]):
            assert df[col].dtype == written[col].dtype, (name, col)
        assert list(df.columns) == list(written.columns)


def test_reads_older_tables(tmp_path):
    """Tables written before the schema was shared: counts stored as (fractional) floats, no ``kind``,
    ``checkpoint_path`` or ``latency_ms`` column, numbers as text in a CSV. They load without error,
    counts rounded to the writer's Int64, the missing columns filled."""
    old = pd.DataFrame({
        "trial_id": ["t1", "t2", "t3"], "status": ["finished", "early_stopped", "error"],
        "budget": [0.5, 0.5, 0.3], "metric": ["taylor", "l1", "l1"], "accuracy": [0.91, float("nan"), float("nan")],
        "macs": [2100000.4, 2099999.6, float("nan")], "macs_dense": [4.2e6] * 3, "params": [1.7e5 * 0.5, 8.5e4, None],
        "epochs_done": [8.0, 2.0, 3.0], "error": ["", "", "NonFiniteLossError: loss is nan"],
    })
    old.to_parquet(tmp_path / "trials.parquet", index=False)
    csv = tmp_path / "csv"
    csv.mkdir()
    old.assign(macs=["2.1e6", "2099999.6", ""]).to_csv(csv / "trials.csv", index=False)
    for source in (tmp_path, csv):
        df = load_results(source)
        assert df["macs"].tolist()[:2] == [2_100_000, 2_100_000] and df["macs"].isna().tolist()[2]
        assert str(df["macs"].dtype) == "Int64" and str(df["params"].dtype) == "Int64"
        assert df["epochs_done"].tolist() == [8, 2, 3]
        assert df["status"].astype(str).tolist() == ["finished", "early_stopped", "error"]
        assert set(df["kind"].astype(str)) == {"pruned"} and (df["checkpoint_path"] == "").all()
        assert df["latency_ms"].isna().all()


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("not_sweep", "is not a sweep result"),
    ("empty", "empty sweep"),
    ("no_macs", "lacks required column(s) macs"),
    ("bad_status", "allowed: finished, early_stopped"),
    ("corrupt", "cannot read"),
])
def test_bad_input_raises_one_line(tmp_path, trials_df, case, message):
    target = tmp_path / "r"
    if case != "missing":
        target.mkdir()
    if case == "not_sweep":
        (target / "notes.txt").write_text("hello")
    elif case == "empty":
        trials_df.iloc[:0].to_parquet(target / "trials.parquet")
    elif case == "no_macs":
        trials_df.drop(columns=["macs"]).to_parquet(target / "trials.parquet")
    elif case == "bad_status":
        trials_df.assign(status="TERMINATED").to_parquet(target / "trials.parquet")
    elif case == "corrupt":
        (target / "trials.parquet").write_bytes(b"PAR1 truncated")
    with pytest.raises(AnalysisError) as info:
        load_results(target)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, KPIDError)  # CLIs turn it into "error: ..." + exit 2


@pytest.mark.slow
@pytest.mark.ray  # its own local cluster: in the Ray lane, never beside the sweep tests' cluster
def test_ray_experiment_directory_without_trials_table(tmp_path, monkeypatch):
    """A real (tiny) Ray Tune experiment: one finished, one stopped early by Tune, one errored.

    As the sweep's trainable does, the trial marks its last result with ``FINAL_KEY``: the status comes
    from that mark (the writer's rule), not from counting epochs."""
    ray = pytest.importorskip("ray")
    from ray import tune

    def trainable(config):  # nested: Ray workers cannot import this test module, cloudpickle ships it
        from ray import tune

        if config["fail"]:
            raise RuntimeError("boom: synthetic failure")
        for epoch in range(1, config["epochs"] + 1):
            tune.report({"accuracy": 0.5 + 0.1 * epoch * config["budget"], "macs": 1e6 * config["budget"],
                         "macs_dense": 1e6, "teacher_accuracy": 0.9, "epochs_done": epoch,
                         "final": epoch == config["epochs"]})  # results_schema.FINAL_KEY

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # this test's own local cluster only
    short_tmp = tempfile.mkdtemp(prefix="kr", dir="/tmp")  # Ray's socket paths must stay < 108 bytes
    ray.init(num_cpus=1, include_dashboard=False, _temp_dir=short_tmp, log_to_driver=False,
             configure_logging=False)
    try:
        storage = (tmp_path / "storage").resolve()

        def stopper(trial_id, result):  # Tune stops the 0.25-budget trial after 1 of its 3 epochs
            return result["macs"] < 3e5 and result["training_iteration"] >= 1

        tuner = tune.Tuner(
            trainable,
            param_space={"budget": tune.grid_search([0.5, 0.25, 0.75]), "epochs": 3,
                         "fail": tune.sample_from(lambda spec: spec.config["budget"] == 0.75)},
            tune_config=tune.TuneConfig(reuse_actors=True),  # one worker start instead of three
            run_config=tune.RunConfig(name="exp", storage_path=str(storage), stop=stopper, verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=0)),
        )
        tuner.fit()
    finally:
        ray.shutdown()
        shutil.rmtree(short_tmp, ignore_errors=True)
    exp = storage / "exp"
    assert not (exp / "trials.parquet").exists()
    df = load_results(exp)
    assert df.attrs["source"] == str(exp)
    by_budget = {float(r.budget): r for r in df.itertuples()}
    assert by_budget[0.5].status == "finished" and by_budget[0.5].accuracy == pytest.approx(0.65)
    assert by_budget[0.5].epochs_done == 3 and by_budget[0.5].epochs == 3
    assert by_budget[0.25].status == "early_stopped" and by_budget[0.25].epochs_done == 1
    assert by_budget[0.75].status == "error" and "boom" in by_budget[0.75].error
    assert df["accuracy"].dtype == "float64" and str(df["epochs_done"].dtype) == "Int64"
    assert str(df["macs"].dtype) == "Int64" and by_budget[0.5].macs == 500_000
    assert "config/budget" in df.columns
