"""Same-data baselines: width matched to a MAC budget, small-input stem, trained under the teacher."""

import pytest
import torch

from kpid_core.baseline import build_compact, has_width, match_width, run_baseline
from kpid_core.config import load_config
from kpid_core.engine.macs import count_macs
from kpid_core.errors import ConfigError
from kpid_core.models import build_model
from kpid_core.trial import prepare_shared

DIGITS = (1, 16, 16)
FASHION = (1, 28, 28)  # Fashion-MNIST: grey 28-px images


@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory):
    """Trial config at budget 0.25 (1 fine-tuning epoch) and the sweep artifacts of its digits teacher."""
    cfg = load_config(overrides=["teacher.epochs=3", "epochs=1", "budget=0.25"])
    return cfg, prepare_shared(cfg, tmp_path_factory.mktemp("shared"), ["l1"])


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


def test_efficientnet_b0_width_is_matched_with_a_small_input_stem():
    target = int(0.1 * count_macs(build_model("resnet20", num_classes=10, in_channels=1), FASHION))
    w, macs = match_width("efficientnet_b0", target, FASHION, 10)
    m = build_compact("efficientnet_b0", w, FASHION, 10)
    assert macs == count_macs(m, FASHION) and 0.95 * target <= macs <= target
    # the widest such width: its channels are multiples of 8, so the next step up is over the target
    assert count_macs(build_compact("efficientnet_b0", w + 1e-4, FASHION, 10), FASHION) > target
    stem = m.features[0][0]
    assert stem.in_channels == 1 and stem.stride == (1, 1)  # grey 28 px: the data's channels, stride 1
    assert m(torch.zeros(2, *FASHION)).shape == (2, 10)
    big = build_compact("efficientnet_b0", w, (3, 64, 64), 10).features[0][0]
    assert big.in_channels == 3 and big.stride == (2, 2)  # 64 px and up: torchvision's own stem


def test_bad_baselines_are_config_errors():
    assert has_width("efficientnet_b0") and has_width("mobilenet_v2") and has_width("resnet20")
    assert not has_width("efficientnet_b1") and not has_width("resnet18")
    with pytest.raises(ConfigError, match="no width multiplier") as err:
        match_width("efficientnet_b1", 10**6, DIGITS, 10)
    assert "these do: digits_resnet, efficientnet_b0, mobilenet_v2" in str(err.value)
    with pytest.raises(ConfigError, match="no width multiplier"):
        build_compact("resnet18", 0.5, DIGITS, 10)
    with pytest.raises(ConfigError, match="needs at least"):
        match_width("mobilenet_v3_small", 10, DIGITS, 10)
    # EfficientNet-B0's narrowest (every layer at torchvision's floor of 8 channels) is over 10^6 MACs at 28 px
    with pytest.raises(ConfigError, match=r"efficientnet_b0 needs at least 1,\d{3},\d{3} MACs at 28 px") as err:
        match_width("efficientnet_b0", 10**6, FASHION, 10)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_run_baseline_trains_at_the_budget_under_the_shared_teacher(tmp_path, digits_teacher):
    cfg, shared = digits_teacher
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


@pytest.mark.slow
def test_run_baseline_trains_a_matched_efficientnet_b0(digits_teacher):
    cfg, shared = digits_teacher
    m = run_baseline(cfg, "efficientnet_b0", shared=shared)
    assert m["arch"] == "efficientnet_b0" and m["status"] == "finished" and m["epochs_done"] == 1
    assert m["budget"] == 0.25 and 0.2 <= m["macs_ratio"] <= 0.25 and 0 < m["width"] < 1
    assert m["stem"] == {"in_channels": 1, "stride": 1} and 0 <= m["accuracy"] <= 1
