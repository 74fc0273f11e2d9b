"""The published-baselines table: parses, sourced, MACs agree with the project's MAC counter."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.baselines import (
    BASELINES_CSV,
    count_arch_macs,
    load_baselines,
    published_applies,
    same_data_baselines,
)
from analysis.errors import AnalysisError
from analysis.load import load_results
from kpid_core._tv import torchvision


def test_csv_parses_and_every_row_is_sourced():
    df = load_baselines()
    assert len(df) >= 15
    assert df["source"].str.strip().str.len().gt(0).all()
    assert df["source_url"].str.startswith("https://").all()
    assert df["top1"].between(50, 90).all() and (df["gmacs"] > 0).all()
    assert (df["accuracy"] == df["top1"] / 100).all() and (df["macs"] == df["gmacs"] * 1e9).all()
    families = set(df["family"])
    assert {"efficientnet", "mobilenet_v3", "resnet"} <= families
    assert (df["kind"] == "kpid").sum() >= 3  # the KPID paper's own reported points
    assert df.loc[df["plot"], "model"].is_unique


def test_row_without_source_is_rejected(tmp_path):
    bad = pd.read_csv(BASELINES_CSV, keep_default_na=False)
    bad.loc[2, "source"] = ""
    bad.to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(AnalysisError, match="has no source"):
        load_baselines(tmp_path / "b.csv")


@pytest.mark.parametrize("row", [r for _, r in load_baselines().iterrows() if pd.notna(r["torchvision_name"])],
                         ids=lambda r: str(r["model"]))
def test_torchvision_rows_agree_with_mac_counter_and_metadata(row):
    counted = count_arch_macs(str(row["torchvision_name"]), int(row["resolution"]))
    assert counted == pytest.approx(row["macs"], rel=0.01)
    # The accuracy and size columns are torchvision's own weights metadata (offline).
    weights = torchvision.models.get_model_weights(str(row["torchvision_name"]))[str(row["weights"])]
    assert row["top1"] == pytest.approx(weights.meta["_metrics"]["ImageNet-1K"]["acc@1"])
    assert row["gmacs"] == pytest.approx(weights.meta["_ops"])
    assert row["params_m"] == pytest.approx(weights.meta["num_params"] / 1e6, abs=5e-4)


def test_published_points_apply_only_to_imagenet_at_224(results_dir, imagenet_results_dir):
    ok, why = published_applies(load_results(results_dir))
    assert not ok and "digits" in why and "not drawn" in why
    ok, why = published_applies(load_results(imagenet_results_dir))
    assert ok and "imagenet" in why


def test_same_data_baselines_are_finished_baseline_rows(results_dir):
    df = load_results(results_dir)
    same = same_data_baselines(df)
    assert len(same) == 2 and (same["kind"] == "baseline").all() and (same["status"] == "finished").all()
    assert set(same["label"]) == {"digits_resnet ×0.5", "digits_resnet ×0.25"}


def test_gain_of_a_budget_matched_baseline_is_taken_at_its_budget():
    from analysis.tables import gains_over_baselines

    front = pd.DataFrame({"trial_id": ["a", "b"], "macs": [760.0, 1520.0], "accuracy": [0.986, 0.992]})
    base = pd.DataFrame({"label": ["matched", "fixed", "tiny"], "macs": [714.0, 714.0, 100.0],
                         "accuracy": [0.978, 0.978, 0.5], "budget": [0.25, np.nan, np.nan],
                         "macs_dense": [3050.0, 3050.0, 3050.0]})
    g = gains_over_baselines(front, base).set_index("baseline")
    # matched to budget 0.25 (cap 762.5 MACs): compared with the pruned trial of that budget
    assert g.loc["matched", "trial_id"] == "a" and g.loc["matched", "gain"] == pytest.approx(0.008)
    # no budget: strictly at <= its own MACs, where no front point is
    assert pd.isna(g.loc["fixed", "gain"]) and pd.isna(g.loc["tiny", "trial_id"])
