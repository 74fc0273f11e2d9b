"""Any CNN by name: torchvision's registry and timm's CNNs prune to the budget, run forward and
backward, and reload with identical outputs; the rest is refused with one line."""

from __future__ import annotations

import json
import re
import sys

import pytest
import torch

from kpid_core import models
from kpid_core.__main__ import main
from kpid_core._tv import torchvision
from kpid_core.engine.macs import count_macs
from kpid_core.errors import ConfigError, InfeasibleBudgetError, UnknownNameError, UnsupportedModelError
from kpid_core.models import build_model, check_model_name
from kpid_core.prune import load_pruned, prune_to_budget, save_pruned

# The smallest model of each family, at a reduced input (inception_v3 needs 75 px).
TORCHVISION_SMALL = ["resnet18", "mobilenet_v3_small", "mnasnet0_5", "squeezenet1_1", "googlenet",
                     "efficientnet_b0", "regnet_x_400mf", "densenet121", "convnext_tiny", "shufflenet_v2_x0_5"]
TIMM_SMALL = ["timm:resnet10t", "timm:cspresnet50", "timm:mobilenetv3_small_050", "timm:lcnet_050",
              "timm:regnetx_002", "timm:mixnet_s", "timm:rexnet_100"]  # MixNet: split sections, ReXNet: slices


def _roundtrip(name: str, size: int, tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=10).eval()
    res = prune_to_budget(model, (3, size, size), 0.5, model_name=name, model_kwargs={})
    assert 0.495 <= res.macs_ratio <= 0.5, (name, res.macs_ratio)
    x = torch.randn(2, 3, size, size)
    pruned = res.model.train()
    pruned(x).sum().backward()  # forward and backward in training mode
    assert all(p.grad is not None for p in pruned.parameters() if p.requires_grad)
    save_pruned(res, tmp_path / name.replace(":", "_"))
    loaded = load_pruned(tmp_path / name.replace(":", "_")).eval()
    with torch.no_grad():
        assert torch.equal(pruned.eval()(x), loaded(x)), name  # bit for bit


@pytest.mark.parametrize("name", TORCHVISION_SMALL)
def test_torchvision_families_prune_run_and_reload(name, tmp_path):
    _roundtrip(name, 32, tmp_path)


def test_inception_v3_at_its_smallest_input(tmp_path):
    _roundtrip("inception_v3", 75, tmp_path)


@pytest.mark.parametrize("name", TIMM_SMALL)
def test_timm_families_prune_run_and_reload(name, tmp_path):
    _roundtrip(name, 32, tmp_path)


def test_every_torchvision_classifier_is_offered_or_refused_with_one_line():
    names = torchvision.models.list_models(module=torchvision.models)
    assert len(names) >= 80
    for name in names:
        if name in models.MODEL_NAMES:
            continue
        with pytest.raises(UnsupportedModelError) as e:
            check_model_name(name)
        assert "\n" not in str(e.value) and name in str(e.value)
        assert name.startswith(("vit_", "swin_", "maxvit")), name
    offered = [n for n in names if n in models.MODEL_NAMES]
    convs = [n for n in names if not n.startswith(("vit_", "swin_", "maxvit"))]
    assert offered == convs  # every convolutional classifier, ShuffleNetV2's four sizes too


def test_split_channel_models_are_infeasible_with_a_reason():
    """SKNet splits its input across paths and regroups its attention's channels: those layers
    stay whole, and the one line names the model, how much of the MACs they hold and the
    operations, at a module (MixNet's split sections and ReXNet's slices prune: see
    tests/core/test_channel_split.py; a strided channel slice is refused in one line there)."""
    name, op = "timm:skresnet18", r"a view that regroups channels at layer\d\.\d\.conv1\.attn"
    with pytest.raises(InfeasibleBudgetError, match="in layers whose channels cannot be pruned") as e:
        prune_to_budget(build_model(name, 10), (3, 32, 32), 0.3, model_name=name)
    assert "\n" not in str(e.value) and str(e.value).startswith(f"model {name}: budget 0.3 is infeasible")
    assert re.search(op, str(e.value)), str(e.value)


def test_transformers_and_unknown_names():
    for name in ("vit_b_16", "swin_t", "maxvit_t", "timm:vit_tiny_patch16_224"):
        with pytest.raises(UnsupportedModelError, match="vision transformer"):
            build_model(name)
    with pytest.raises(UnknownNameError, match="close matches: .*resnet50"):
        check_model_name("resnet05")
    with pytest.raises(UnknownNameError, match="close matches: timm:resnet50d"):
        check_model_name("timm:resnet50dd")


def test_timm_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    with pytest.raises(ConfigError, match=r"kpid-sweep\[timm\]"):
        build_model("timm:resnet18")
    assert main(["macs", "--model", "timm:resnet18"]) == 2
    assert build_model("resnet18", 10) is not None  # torchvision names need no timm


def test_module_function_factory_by_name(tmp_path):
    name = "kpid_core.models:digits_resnet"  # any importable package.module:function
    assert models.model_in_channels(name) is None and models.model_has_width(name)
    res = prune_to_budget(build_model(name, 10, in_channels=3), (3, 16, 16), 0.5, model_name=name,
                          model_kwargs={"num_classes": 10, "in_channels": 3})
    save_pruned(res, tmp_path / "f")
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(res.model.eval()(x), load_pruned(tmp_path / "f").eval()(x))
    for bad, msg in (("no_such_mod:f", "cannot import module"), ("kpid_core.models:nope", "has no function")):
        with pytest.raises(ConfigError, match=msg):
            check_model_name(bad)


def test_pruning_ignores_grad_flags_mode_and_grad_context():
    torch.manual_seed(0)
    base = build_model("resnet20", 10)
    ref = prune_to_budget(base, (3, 32, 32), 0.5).kept
    frozen = build_model("resnet20", 10)
    frozen.load_state_dict(base.state_dict())
    frozen.requires_grad_(False)
    frozen.layer1.requires_grad_(True)
    frozen.train()
    flags = [p.requires_grad for p in frozen.parameters()]
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    with torch.inference_mode():
        res = prune_to_budget(frozen, torch.zeros(1, 3, 32, 32), 0.5)
    with torch.no_grad():
        assert prune_to_budget(frozen, (3, 32, 32), 0.5).kept == ref
    assert prune_to_budget(frozen.eval(), (3, 32, 32), 0.5).kept == ref
    frozen.train()
    assert res.kept == ref
    assert [p.requires_grad for p in frozen.parameters()] == flags and frozen.training  # input untouched
    assert all(torch.equal(v, before[k]) for k, v in frozen.state_dict().items())
    pruned_flags = {n: p.requires_grad for n, p in res.model.named_parameters()}
    assert pruned_flags == {n: p.requires_grad for n, p in frozen.named_parameters()}


def test_count_macs_takes_both_shapes():
    m = build_model("resnet18", 10)
    assert count_macs(m, (1, 3, 64, 64)) == count_macs(m, (3, 64, 64)) > 0


def test_models_command_lists_names_and_refusals(capsys):
    assert main(["models", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in out["models"]}
    assert rows["densenet121"]["status"] == "ok" and rows["vit_b_16"]["status"].startswith("refused")
    assert "timm: installed" in out["timm"]
    assert main(["models", "--timm", "ghostnet*"]) == 0
    assert "timm:ghostnet_100" in capsys.readouterr().out
    assert main(["models", "--timm", "ghostnet_nosuch*"]) == 0  # a pattern that matches nothing says so
    assert "timm: no CNN matches 'ghostnet_nosuch*'" in capsys.readouterr().out


class _RowScaledConv(torch.nn.Conv2d):
    """A conv that keeps a channel-sized buffer on a dim other than the first."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.register_buffer("row", torch.ones(1, self.out_channels, 1, 1))

    def forward(self, x):
        return super().forward(x) * self.row


def test_a_layer_with_channel_sized_state_fails_in_one_line():
    """A channel-sized tensor that is not per output channel on its first dim is not resized: one
    line naming the failing forward, not a traceback."""
    net = torch.nn.Sequential(_RowScaledConv(3, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 16, 3),
                              torch.nn.Flatten(), torch.nn.LazyLinear(4))
    net(torch.zeros(1, 3, 12, 12))
    with pytest.raises(UnsupportedModelError, match="forward fails") as e:
        prune_to_budget(net, (3, 12, 12), 0.5)
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_attention_whose_channel_tracing_cycles_is_refused_in_one_line_instead_of_running_forever():
    """timm's global-context ResNet: torch-pruning follows its views round a cycle that multiplies the
    mapped indices by the spatial size at each pass (it ran for hours); the bound on the indices
    (``tp_guards.MAX_MAPPED_INDICES``) turns that into one line."""
    net = build_model("timm:gcresnet33ts", num_classes=10)
    with pytest.raises(UnsupportedModelError, match="more than 2,097,152 indices") as e:
        prune_to_budget(net, (3, 32, 32), 0.5)
    assert "\n" not in str(e.value)


def test_the_index_bound_leaves_a_flatten_into_a_classifier_alone(monkeypatch):
    """A VGG-like flatten maps C channels onto C·H·W features: far under the bound; a bound below
    what it maps refuses it (the bound is what refuses, not the model's shape)."""
    from kpid_core.engine import tp_guards

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(16 * 8 * 8, 4))
    res = prune_to_budget(net, (3, 8, 8), 0.5)
    assert res.model[0].out_channels < 16 and res.model[3].in_features == res.model[0].out_channels * 64
    monkeypatch.setattr(tp_guards, "MAX_MAPPED_TOTAL", 16 * 64 * 2)  # over all mappings: it maps more
    with pytest.raises(UnsupportedModelError, match="more than 2,048 indices"):
        prune_to_budget(net, (3, 8, 8), 0.5)
    monkeypatch.setattr(tp_guards, "MAX_MAPPED_INDICES", 16 * 64 - 1)  # at once: 16 channels -> 1,024
    with pytest.raises(UnsupportedModelError, match="more than 1,023 indices"):
        prune_to_budget(net, (3, 8, 8), 0.5)


def test_a_conv_subclass_gain_is_cut_with_its_outputs(tmp_path):
    """timm's NF-ResNet: ScaledStdConv2d's gain (out, 1, 1, 1) is cut like the conv's outputs, so it
    prunes to the budget, runs forward and backward, and reloads with identical outputs."""
    _roundtrip("timm:nf_resnet26", 32, tmp_path)
    torch.manual_seed(0)
    dense = build_model("timm:nf_resnet26", num_classes=10)
    res = prune_to_budget(dense, (3, 32, 32), 0.5)
    convs = dict(dense.named_modules())
    cut = [(n, m) for n, m in res.model.named_modules() if n in res.channel_map and hasattr(m, "gain")
           and m.out_channels < convs[n].out_channels]
    assert cut
    for name, m in cut:
        assert torch.equal(m.gain, convs[name].gain[res.channel_map[name]["out"]])
