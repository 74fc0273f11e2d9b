"""The latency table: what it measures, its cache key and invalidation, paired timing, the CLI and
the trial config. Timings are measured for real (tiny settings) but never asserted."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from kpid_core.config import TrialConfig
from kpid_core.engine import latency_table as lt
from kpid_core.engine.groups import find_groups
from kpid_core.errors import ConfigError
from kpid_core.models import build_model


@pytest.fixture()
def tiny():
    torch.manual_seed(0)
    return build_model("mobilenet_v3_small", num_classes=10).eval()


def _settings(tmp_path, **kw):
    return lt.LatencySettings(batch=kw.pop("batch", 1), repeats=1, cache_dir=str(tmp_path / "cache"),
                              min_sample_s=0.001, **kw)


def test_table_rows_follow_the_mac_trace_and_time_what_follows(tiny, tmp_path):
    G = find_groups(copy.deepcopy(tiny), (3, 16, 16))
    t = lt.measure_table(G.model, G, _settings(tmp_path))
    assert t.names == [lay.name for lay in G.layers]
    assert len(t.a) == len(t.b) == len(t.d) == len(t.names)
    assert min(t.a) >= 0 and min(t.b) >= 0
    # BN and activations are timed with the conv before them; SE's pooling with the depthwise conv
    assert t.followers[0][:2] == ["BatchNorm2d", "Hardswish"]
    assert any("AdaptiveAvgPool2d" in f for f in t.followers)
    assert t.offset_s is not None and 0.5 <= t.scale <= 3.0
    assert {"w0.5_measured_ratio", "w0.5_table_ratio", "w0.5_calibrated_ratio"} <= set(t.reference)
    cm = lt.latency_cost(G, t)
    assert cm.total() == pytest.approx(t.dense_s * 1e6)  # calibrated: the dense total is the measured one


def test_cache_key_hits_and_invalidation(tiny, tmp_path, monkeypatch):
    G = find_groups(copy.deepcopy(tiny), (3, 16, 16))
    s = _settings(tmp_path)
    calls = []
    real = lt.measure_table

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(lt, "measure_table", counting)
    t1 = lt.latency_table(G.model, G, s)
    files = list((tmp_path / "cache").glob("*.json"))
    assert len(calls) == 1 and len(files) == 1
    key = json.loads(files[0].read_text())["key"]
    assert {"arch", "input", "device", "batch", "dtype", "threads", "amp", "channels_last", "torch", "timing"} <= set(key)
    assert lt.latency_table(G.model, G, s) == t1 and len(calls) == 1  # cached: not measured again

    lt.latency_table(G.model, G, _settings(tmp_path, batch=2))  # another batch: another table
    assert len(calls) == 2 and len(list((tmp_path / "cache").glob("*.json"))) == 2

    data = json.loads(files[0].read_text())  # a file whose stored key differs (older torch) is stale
    data["key"]["torch"] = "0.0"
    files[0].write_text(json.dumps(data))
    lt.latency_table(G.model, G, s)
    assert len(calls) == 3 and json.loads(files[0].read_text())["key"]["torch"] == torch.__version__

    data = json.loads(files[0].read_text())  # a table timed before the settle call (no "timing") is stale
    del data["key"]["timing"]
    files[0].write_text(json.dumps(data))
    lt.latency_table(G.model, G, s)
    assert len(calls) == 4 and json.loads(files[0].read_text())["key"]["timing"] == lt.TIMING_VERSION

    files[0].write_text("{not json")  # corrupt: measured again and replaced
    lt.latency_table(G.model, G, s)
    assert len(calls) == 5 and json.loads(files[0].read_text())["key"] == key


def test_each_sample_follows_a_settle_call_of_the_same_model():
    # the first call after another model's pays for that model's memory state (docs/latency.md)
    seq: list[int] = []
    fns = [lambda i=i: seq.append(i) for i in range(3)]
    timer = lt.Timer(lt.LatencySettings(repeats=1))
    out = lt.time_interleaved(fns, 4, timer, warmup=1, min_sample_s=0.0)
    assert [len(o) for o in out] == [4, 4, 4]
    rounds = seq[2 * len(fns):]  # after the warm-up and the one-call calibration of each
    assert len(rounds) == 4 * 3 * 2
    assert all(rounds[k] == rounds[k + 1] for k in range(0, len(rounds), 2))  # settle, then the timed call
    assert [rounds[k] for k in range(0, 6, 2)] == [0, 1, 2] and [rounds[k] for k in range(6, 12, 2)] == [1, 2, 0]
    seq.clear()
    lt.time_interleaved(fns, 2, timer, warmup=0, min_sample_s=0.0, settle=0)
    assert seq[3:] == [0, 1, 2, 1, 2, 0]


def test_arch_hash_changes_with_architecture_and_input(tiny):
    h = lt.arch_hash(tiny, (3, 16, 16))
    assert h == lt.arch_hash(copy.deepcopy(tiny), (3, 16, 16))
    assert h != lt.arch_hash(tiny, (3, 64, 64))
    assert h != lt.arch_hash(build_model("mobilenet_v3_small", num_classes=10, width=0.5), (3, 16, 16))


def test_paired_latency_names_the_device(tiny, tmp_path):
    pruned = build_model("mobilenet_v3_small", num_classes=10, width=0.5)
    out = lt.paired_latency(tiny, pruned, (3, 16, 16), _settings(tmp_path, batch=2))
    assert out["latency_device"].startswith("cpu: ") and out["latency_batch"] == 2
    assert out["latency_ms"] > 0 and out["latency_dense_ms"] > 0 and out["latency_ratio"] > 0


def test_settings_and_config_reject_bad_values():
    with pytest.raises(ConfigError, match="latency batch must be a whole number >= 1"):
        lt.LatencySettings(batch=0).check()
    with pytest.raises(ConfigError, match="allowed values are cpu, cuda"):
        lt.LatencySettings(device="tpu").check()
    with pytest.raises(ConfigError, match="prune.cost='flops' is not allowed; allowed values: macs, params, latency"):
        TrialConfig.from_dict({"cost": "flops"})
    with pytest.raises(ConfigError, match="prune.round_to=12 is not allowed"):
        TrialConfig.from_dict({"round_to": 12})
    with pytest.raises(ConfigError, match="latency.batch"):
        TrialConfig.from_dict({"latency": {"batch": 0}})
    with pytest.raises(ConfigError, match=r"latency.min_sample_s=0.0 is out of range; allowed: \(0.0, 10.0\]"):
        TrialConfig.from_dict({"latency.min_sample_s": 0.0})
    # the trial's table and dense/pruned timing take the configured sample length
    from kpid_core.prune_phase import latency_settings

    short = TrialConfig.from_dict({"latency.min_sample_s": 0.005})
    for table in (True, False):
        assert latency_settings(short, torch.device("cpu"), table=table).min_sample_s == 0.005
    cfg = TrialConfig.from_dict({"cost": "latency", "round_to": 8, "latency.measure": False})
    assert (cfg.prune.cost, cfg.prune.round_to, cfg.latency.measure) == ("latency", 8, "off")
    with pytest.raises(ConfigError, match="latency.measure='sometimes' is not allowed; allowed values: auto, on, off"):
        TrialConfig.from_dict({"latency.measure": "sometimes"})


def test_cli_prune_cost_latency(tmp_path, capsys, monkeypatch):
    """In-process (``python -m kpid_core`` as a program is run by test_cli_engine and test_cli_storage)."""
    from kpid_core.__main__ import main

    monkeypatch.setenv("KPID_CACHE_DIR", str(tmp_path / "cache"))
    rc = main(["prune", "--model", "mobilenet_v3_small", "--input", "32", "--budget", "0.9", "--metric", "l1",
               "--cost", "latency", "--batch", "2", "--table-repeats", "1", "--round-to", "8",
               "--min-sample-s", "0.002", "--out", str(tmp_path / "out"), "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    out = json.loads(captured.out)
    assert out["cost"] == "latency" and out["round_to"] == 8
    spec = json.loads((tmp_path / "out" / "spec.json").read_text())
    assert spec["cost"] == "latency" and spec["latency_settings"]["batch"] == 2
    assert spec["latency_settings"]["min_sample_s"] == 0.002  # the option reaches the timing
    # landed on measured latency: each try's table budget and measured ratio, the kept one reported
    tries = spec["latency_landing"]
    assert 1 <= len(tries) <= 4 and [t["kept"] for t in tries].count(True) == 1
    assert out["latency_measured"] == next(t["measured"] for t in tries if t["kept"]) > 0
    kept = next(t for t in tries if t["kept"])
    assert out["cost_ratio"] <= kept["table_budget"]  # the table's allocation at that try's budget
    assert list((tmp_path / "cache" / "latency").glob("*.json"))


@pytest.mark.parametrize("bad, field", [(["--cost", "flops"], "--cost"), (["--round-to", "12"], "--round-to"),
                                        (["--batch", "0"], "--batch"), (["--land-rounds", "-1"], "--land-rounds"),
                                        (["--device", "cuda", "--cost", "latency"], "latency device"),
                                        (["--cost", "latency", "--min-sample-s", "0"], "min_sample_s"),
                                        (["--batch", "4"], "--device/--batch")])
def test_cli_prune_bad_latency_values_are_one_line_errors(tmp_path, capsys, bad, field):
    from kpid_core.__main__ import main

    try:
        rc = main(["prune", "--model", "mobilenet_v3_small", "--budget", "0.5", "--metric", "l1",
                   "--out", str(tmp_path / "bad"), *bad])
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == 2, (bad, err)
    assert len(err.strip().splitlines()) == 1 and field in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()


def test_yaml_on_off_switches_are_read_as_words():
    """``--set train.amp=on`` (YAML 1.1 reads on/off as booleans) is the switch, not a type error."""
    from kpid_core.config import load_config

    cfg = load_config(None, ["train.amp=on", "train.channels_last=off"])
    assert (cfg.train.amp, cfg.train.channels_last) == ("on", "off")
    with pytest.raises(ConfigError, match="prune.metric=True has the wrong type"):
        load_config(None, ["prune.metric=on"])  # only the on/off switches take booleans


def test_a_grouped_conv_is_timed_as_one_with_its_groups_at_both_widths(tmp_path, monkeypatch):
    """A grouped conv (now prunable on both sides) is timed as a conv with its own groups, at its full
    input width and at a halved one that stays a multiple of its groups (what the cost model's
    per-group input term is fitted from); a depthwise conv is timed at its own channels."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16),
                              torch.nn.Conv2d(16, 24, 3, padding=1, groups=4), torch.nn.BatchNorm2d(24),
                              torch.nn.Conv2d(24, 24, 3, padding=1, groups=24),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(24, 5)).eval()
    seen = []
    prepare = lt.Timer.prepare

    def spy(self, model, input_shape):
        first = model[0] if isinstance(model, torch.nn.Sequential) else model
        if isinstance(first, torch.nn.Conv2d):
            seen.append((first.in_channels, first.out_channels, first.groups, input_shape[1]))
        return prepare(self, model, input_shape)

    monkeypatch.setattr(lt.Timer, "prepare", spy)
    G = find_groups(copy.deepcopy(net), (3, 8, 8))
    lt.measure_table(G.model, G, _settings(tmp_path))
    grouped = {s for s in seen if s[2] == 4}
    assert grouped == {(16, 24, 4, 16), (8, 24, 4, 8), (16, 12, 4, 16)}, seen
    assert {s for s in seen if s[0] == s[2] and s[2] > 4} == {(24, 24, 24, 24), (12, 12, 12, 12)}, seen
