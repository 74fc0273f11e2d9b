"""Same-data baselines: width matched to a MAC budget, small-input stem, trained under the teacher."""

import pytest
import torch

from kpid_core.baseline import build_compact, has_width, match_width, run_baseline
from kpid_core.config import load_config
from kpid_core.errors import ConfigError
from kpid_core.macs import count_macs
from kpid_core.trial import prepare_shared

DIGITS = (1, 16, 16)


def test_width_is_matched_to_the_mac_target():
    target = 400_000
    w, macs = match_width("mobilenet_v3_small", target, DIGITS, 10)
    assert macs <= target and macs == count_macs(build_compact("mobilenet_v3_small", w, DIGITS, 10), DIGITS)
    # the widest such width: a slightly wider network is over the target
    assert count_macs(build_compact("mobilenet_v3_small", w * 1.1, DIGITS, 10), DIGITS) > target * 0.97
    wide, _ = match_width("mobilenet_v3_small", 2 * target, DIGITS, 10)
    assert wide > w


def test_small_inputs_get_a_stride1_stem_with_the_data_channels():
    m = build_compact("mobilenet_v3_small", 1.0, DIGITS, 10)
    stem = m.features[0][0]
    assert stem.in_channels == 1 and stem.stride == (1, 1)
    assert m(torch.zeros(2, *DIGITS)).shape == (2, 10)
    big = build_compact("mobilenet_v3_small", 1.0, (3, 224, 224), 10).features[0][0]
    assert big.in_channels == 3 and big.stride == (2, 2)  # ImageNet-sized input: torchvision's own stem
    digits = build_compact("digits_resnet", 0.5, DIGITS, 10)  # registry models take in_channels themselves
    assert digits(torch.zeros(1, *DIGITS)).shape == (1, 10)


def test_bad_baselines_are_config_errors():
    assert not has_width("efficientnet_b0") and has_width("mobilenet_v2") and has_width("resnet20")
    with pytest.raises(ConfigError, match="no width multiplier"):
        match_width("efficientnet_b0", 10**6, DIGITS, 10)
    with pytest.raises(ConfigError, match="no width multiplier"):
        build_compact("resnet18", 0.5, DIGITS, 10)
    with pytest.raises(ConfigError, match="needs at least"):
        match_width("mobilenet_v3_small", 10, DIGITS, 10)


@pytest.mark.slow
def test_run_baseline_trains_at_the_budget_under_the_shared_teacher(tmp_path):
    cfg = load_config(overrides=["teacher.epochs=3", "epochs=1", "budget=0.25"])
    shared = prepare_shared(cfg, tmp_path / "shared", ["l1"])
    seen = []
    m = run_baseline(cfg, "mobilenet_v3_small", on_epoch=lambda e, x: seen.append(e), shared=shared,
                     out_dir=tmp_path / "b")
    assert m["kind"] == "baseline" and m["arch"] == "mobilenet_v3_small" and m["status"] == "finished"
    assert seen == [1] and m["epochs_done"] == 1 and m["budget"] == 0.25
    assert 0.2 <= m["macs_ratio"] <= 0.25 and m["teacher_accuracy"] == shared.teacher_accuracy
    assert (tmp_path / "b" / "metrics.json").is_file()
    assert m["stem"] == {"in_channels": 1, "stride": 1}  # 1-channel 16-px digits: the adapted stem
    # a fixed width, more epochs: it learns from scratch under the teacher (chance is 0.1)
    fixed = run_baseline(cfg, "digits_resnet", width=0.5, shared=shared, epochs=3)
    assert fixed["width"] == 0.5 and fixed["budget"] is None and fixed["epochs_done"] == 3
    assert fixed["accuracy"] > 0.5 and fixed["macs_ratio"] < 0.35
