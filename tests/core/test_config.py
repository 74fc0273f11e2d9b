"""Typed trial config: the layout and aliases of docs/CONTRACTS.md, overrides, one validation."""

import re
from pathlib import Path

import pytest
import yaml

from kpid_core.config import ALIASES, TrialConfig, default_config_path, load_config, parse_overrides
from kpid_core.errors import ConfigError, UnknownNameError

CONTRACTS = Path(__file__).resolve().parents[2] / "docs" / "CONTRACTS.md"


def _contract_yaml() -> dict:
    text = CONTRACTS.read_text()
    block = text.split("### Trial config", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    return yaml.safe_load(block)


def test_defaults_match_the_contract_and_the_bundled_yaml():
    contract = _contract_yaml()
    default = TrialConfig().to_dict()
    for section, values in contract.items():
        if isinstance(values, dict):
            for k, v in values.items():
                assert default[section][k] == v, f"{section}.{k}"
        else:
            assert default[section] == values
    assert load_config() == TrialConfig()  # the packaged YAML says the same as the dataclasses
    assert default_config_path().is_file()


def test_aliases_are_the_contract_ones():
    text = CONTRACTS.read_text()
    line = text.split("Aliases:", 1)[1].split("\n\n", 1)[0]
    pairs = re.findall(r"`([a-z_]+)`(?:/`([a-z_]+)`)?→`([a-z_.]+)`", line)
    expected = {}
    for a, b, target in pairs:
        expected[a] = target
        if b:
            expected[b] = target
    assert expected and ALIASES == expected


def test_overrides_dotted_and_alias_with_yaml_scalars():
    cfg = load_config(overrides=["budget=0.3", "train.lr=1e-2", "gamma=2", "distill.taps=[layer1, layer2]",
                                 "teacher.checkpoint=null", "dataset=synthetic", "epochs=3"])
    assert cfg.prune.budget == 0.3 and cfg.train.lr == 0.01 and cfg.distill.inner_weight == 2.0
    assert cfg.distill.taps == ["layer1", "layer2"] and cfg.teacher.checkpoint is None
    assert cfg.data.name == "synthetic" and cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert parse_overrides({"lr": 0.5}) == [("lr", 0.5)]


def test_a_list_written_as_text_is_read_as_a_list():
    # the bench passes a variant's values as text: "[layer1,layer1.0.bn1]" became "[layer1" and "layer1.0.bn1]"
    base = load_config()
    assert base.with_overrides({"distill.taps": "[layer1,layer1.0.bn1]"}).distill.taps == ["layer1", "layer1.0.bn1"]
    assert base.with_overrides({"distill.taps": "layer1, layer2"}).distill.taps == ["layer1", "layer2"]
    with pytest.raises(ConfigError, match="distill.taps"):
        base.with_overrides({"distill.taps": "[layer1, [x"})


def test_with_overrides_applies_an_alias_and_its_dotted_key_in_order():
    # a bench variant's "distill.kd_weight=0.25" over a method's {"kd_weight": 1.0} was ignored: the
    # alias was applied after every dotted key whatever the order
    base = load_config()
    assert base.with_overrides({"kd_weight": 1.0, "distill.kd_weight": 0.25}).distill.kd_weight == 0.25
    assert base.with_overrides({"distill.kd_weight": 0.25, "kd_weight": 1.0}).distill.kd_weight == 1.0
    assert base.with_overrides(["lr=0.5", "train.lr=0.02"]).train.lr == 0.02
    assert base.with_overrides(["train.lr=0.02", "lr=0.5"]).train.lr == 0.5
    assert base.with_overrides({"budget": 0.3}).with_overrides({"prune.budget": 0.2}).prune.budget == 0.2


def test_yaml_file_and_overrides_win(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("seed: 3\nprune: {budget: 0.4, metric: l1}\ntrain: {epochs: 2}\n")
    cfg = load_config(p, ["budget=0.2"])
    assert (cfg.seed, cfg.prune.budget, cfg.prune.metric, cfg.train.epochs) == (3, 0.2, "l1", 2)
    assert cfg.model.name == "digits_resnet"  # untouched sections keep their defaults


def test_round_trips():
    cfg = load_config(overrides=["budget=0.25", "match=projection", "seed=7"])
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg
    flat = cfg.flat()
    assert flat["prune.budget"] == 0.25 and flat["distill.match"] == "projection" and flat["seed"] == 7
    assert TrialConfig.from_dict(flat) == cfg  # dotted keys work in from_dict too
    assert cfg.with_overrides({"lr": 0.2}).train.lr == 0.2 and cfg.train.lr == 0.05


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        load_config(overrides=["train.lrr=0.1"])
    msg = str(e.value)
    assert "train.lrr" in msg and "train.lr" in msg and "prune.budget" in msg and "gamma" in msg
    with pytest.raises(ConfigError, match="unknown config key 'bogus'"):
        TrialConfig.from_dict({"bogus": {"x": 1}})
    with pytest.raises(ConfigError, match="not key=value"):
        load_config(overrides=["budget"])


@pytest.mark.parametrize("override, field, allowed", [
    ("budget=0", "prune.budget", "(0.0, 1.0]"),
    ("budget=1.5", "prune.budget", "(0.0, 1.0]"),
    ("budget=.nan", "prune.budget", "(0.0, 1.0]"),
    ("metric=hessian2", "prune.metric", "taylor"),
    ("match=nearest", "distill.match", "kept, projection"),
    ("dataset=mnist", "data.name", "cifar10"),
    ("model=resnet9000", "model.name", "digits_resnet"),
    ("allocation=greedy", "prune.allocation", "knapsack, uniform"),
    ("train.optimizer=adam", "train.optimizer", "sgd, adamw"),
    ("teacher.source=web", "teacher.source", "pretrained"),
    ("lr=-1", "train.lr", "inf"),
    ("lr=abc", "train.lr", "float"),
    ("epochs=2.5", "train.epochs", "int"),
    ("seed=-1", "seed", "[0, 4294967295]"),
    ("train.device=gpu", "train.device", "auto, cpu, cuda, cuda:N"),
    ("latency.device=tpu", "latency.device", "auto, cpu, cuda, cuda:N"),
    ("lr=1e400", "train.lr", "(0.0, inf)"),  # parses to inf: not a learning rate
    ("prune.min_keep=0", "prune.min_keep", "(0.0, 1.0]"),
])
def test_bad_values_name_field_and_allowed(override, field, allowed):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=[override])
    assert field in str(e.value) and allowed in str(e.value)


def test_unknown_names_are_unknown_name_errors_and_required_fields():
    with pytest.raises(UnknownNameError):
        load_config(overrides=["model=nope"])
    with pytest.raises(ConfigError, match="data.root is required"):
        load_config(overrides=["dataset=cifar10"])
    with pytest.raises(ConfigError, match="teacher.checkpoint is required"):
        load_config(overrides=["teacher.source=checkpoint"])


def test_bad_yaml_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML: line 2, column 1") as err:
        load_config(p)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="is not a text file"):
        load_config(tmp_path / "binary.yaml")
    with pytest.raises(ConfigError, match="is a directory; expected a YAML file"):
        load_config(tmp_path)
    (tmp_path / "date.yaml").write_text("seed: 2020-13-45\n")  # YAML syntax, but no such date
    with pytest.raises(ConfigError, match=r"date.yaml' is not valid YAML: month must be in 1\.\.12$"):
        load_config(tmp_path / "date.yaml")


def test_as_section_fills_missing_fields_with_the_configs_defaults():
    from kpid_core.config import DataConfig, TrainConfig, as_section

    tc = TrainConfig(epochs=3)
    assert as_section(TrainConfig, tc) is tc
    from_dict = as_section(TrainConfig, {"lr": 0.1, "not_a_field": 1})
    assert from_dict == TrainConfig(lr=0.1)  # epochs 8, not some call site's own default
    assert as_section(DataConfig, None).val_fraction == DataConfig().val_fraction
