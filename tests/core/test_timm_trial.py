"""A trial on a timm model by name, and timm teachers from local files only (never downloaded)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from kpid_core.__main__ import main
from kpid_core.config import load_config
from kpid_core.errors import ConfigError, SpecError
from kpid_core.models import build_model
from kpid_core.training.teacher import get_teacher, timm_weights_path
from kpid_core.trial import trial_data

MODEL = "timm:lcnet_050"
REPO = "timm/lcnet_050.ra2_in1k"


def _hf_cache(root, repo: str, state: dict) -> None:
    """The Hugging Face hub cache layout timm downloads into: refs/main names the snapshot."""
    folder = root / f"models--{repo.replace('/', '--')}"
    snap = folder / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0123abcd")
    save_file({k: v.contiguous() for k, v in state.items()}, str(snap / "model.safetensors"))


def test_timm_pretrained_teacher_from_hf_cache_or_file(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    cfg = load_config(overrides=[f"model={MODEL}", "teacher.source=pretrained", "dataset=synthetic",
                                 "data.image_size=16"])
    data = trial_data(cfg)
    with pytest.raises(ConfigError, match="1000 classes but the data has 10"):
        get_teacher(cfg, data)
    data.num_classes = 1000
    with pytest.raises(SpecError) as e:  # absent: the error names where the file goes
        get_teacher(cfg, data)
    assert str(tmp_path / "hub" / "models--timm--lcnet_050.ra2_in1k") in str(e.value) and "\n" not in str(e.value)
    torch.manual_seed(1)
    weights = build_model(MODEL, 1000, in_channels=data.input_shape[0]).state_dict()
    _hf_cache(tmp_path / "hub", REPO, weights)
    t = get_teacher(cfg, data)
    assert t.source == "pretrained" and torch.equal(t.model.state_dict()["conv_stem.weight"],
                                                    weights["conv_stem.weight"])
    # a given file wins over the cache
    torch.save({k: v * 2 for k, v in weights.items()}, tmp_path / "mine.pth")
    assert timm_weights_path(MODEL, str(tmp_path / "mine.pth"))[1] == tmp_path / "mine.pth"
    cfg.teacher.weights = str(tmp_path / "mine.pth")
    t = get_teacher(cfg, data)
    assert torch.equal(t.model.state_dict()["conv_stem.weight"], 2 * weights["conv_stem.weight"])


def test_trial_on_a_timm_model_by_name(tmp_path, capsys):
    """A trial config takes timm:NAME (the sweep test runs one); a wrong name fails in one line."""
    cfg = load_config(overrides=[f"model={MODEL}"])
    assert cfg.model.name == MODEL
    assert main(["trial", "--set", "model=timm:lcnet_05", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "close matches: " in err and "timm:lcnet_050" in err
    assert not (tmp_path / "bad").exists()
