"""prune_to_budget: lands on the budget, physical surgery is exact, errors are typed."""

import math

import pytest
import torch
from torch import nn

from kpid_core.engine.groups import find_groups
from kpid_core.engine.importance import compute_importance
from kpid_core.engine.macs import count_macs
from kpid_core.errors import (
    ConfigError,
    InfeasibleBudgetError,
    SpecError,
    UnknownNameError,
    UnsupportedModelError,
)
from kpid_core.models import build_model
from kpid_core.prune import load_pruned, output_channels, prune_to_budget, save_pruned

X64 = torch.zeros(1, 3, 64, 64)


def _lands(res, budget):
    target = math.floor(budget * res.macs_before)
    assert res.macs_after <= target
    assert res.macs_after >= (1 - 0.005) * budget * res.macs_before, res.macs_after / res.macs_before


@pytest.mark.parametrize("budget", [0.3, 0.5, 0.7])
def test_lands_on_budget_small(budget):
    model = build_model("mobilenet_v3_small")
    res = prune_to_budget(model, X64, budget)
    _lands(res, budget)
    assert res.macs_after == count_macs(res.model, (3, 64, 64))
    assert res.params_after < res.params_before


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v3_large", "efficientnet_b0"])
def test_lands_on_budget_224_after_reload(name, tmp_path):
    model = build_model(name)
    x = torch.zeros(1, 3, 224, 224)
    scores = compute_importance(model, x, "random", seed=1)
    for i, budget in enumerate((0.3, 0.5, 0.7)):
        res = prune_to_budget(model, x, budget, scores if i % 2 else None, model_name=name)
        save_pruned(res, tmp_path / str(budget))
        back = load_pruned(tmp_path / str(budget))
        recount = count_macs(back, (3, 224, 224))  # independent count of the reloaded model
        assert recount == res.macs_after
        _lands(res, budget)
    back.train()
    out = back(torch.randn(2, 3, 64, 64))  # forward/backward at a small size: the point is the graph
    out.sum().backward()
    assert out.shape == (2, 1000) and all(p.grad is not None for p in back.parameters())


# The classifiers the registry offered first, less its four heaviest (resnet101, wide_resnet50_2,
# vgg16_bn, efficientnet_b3: checked once, see docs/engine.md). Every other torchvision family is
# covered by tests/core/test_model_zoo.py, every torchvision name by bench/models.py.
_ZOO = ["resnet18", "resnet34", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
        "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "vgg11_bn", "alexnet", "mnasnet1_0",
        "regnet_y_400mf"]


@pytest.mark.slow
def test_torchvision_zoo_prunes_at_half():
    ok = []
    for name in _ZOO:
        res = prune_to_budget(build_model(name, num_classes=10), X64, 0.5, model_name=name)
        assert res.macs_after <= 0.5 * res.macs_before
        assert res.macs_after >= 0.99 * 0.5 * res.macs_before, name
        assert res.model(torch.zeros(2, 3, 64, 64)).shape == (2, 10)
        ok.append(name)
    assert len(ok) >= 12


def _zero_removed(model, groups, kept):
    """Make the removed channels contribute nothing: zero their producing convs/linears and norms."""
    mods = dict(model.named_modules())
    with torch.no_grad():
        for g in groups:
            gone = set(range(g.size)) - set(kept[g.key])
            for mem in g.members:
                if mem.dim != "out":
                    continue
                idx = [i for i, r in zip(mem.idxs, mem.root_idxs) if r in gone]
                m = mods[mem.module]
                for p in (m.weight, getattr(m, "bias", None)):
                    if p is not None:
                        p[idx] = 0


@pytest.mark.parametrize("name", ["tiny", "resnet18", "mobilenet_v3_small"])
def test_surgery_preserves_function(name, tiny):
    model = tiny if name == "tiny" else build_model(name)
    x = torch.randn(2, 3, 32, 32)
    gen = torch.Generator().manual_seed(0)
    groups = find_groups(model, x[:1])
    scores = {g.key: torch.rand(g.size, generator=gen) for g in groups}
    for m in model.modules():  # non-trivial BN statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    first = prune_to_budget(model, x[:1], 0.5, scores)
    _zero_removed(model, groups, first.kept)
    res = prune_to_budget(model, x[:1], 0.5, scores)
    assert res.kept == first.kept  # allocation depends on the scores, not on the weights
    model.eval()
    res.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(res.model(x), model(x), rtol=1e-4, atol=1e-5)
        assert res.macs_after < res.macs_before


def test_channel_map_and_output_channels():
    model = build_model("resnet18")
    res = prune_to_budget(model, torch.zeros(1, 3, 32, 32), 0.4, compute_importance(model, (3, 32, 32), "random"))
    dense, pruned = dict(model.named_modules()), dict(res.model.named_modules())
    name = "layer2.0.conv2"
    cm = res.channel_map[name]
    torch.testing.assert_close(pruned[name].weight, dense[name].weight[cm["out"]][:, cm["in"]])
    key = next(k for k in res.kept if k.startswith("layer4.0."))  # layer4's residual group
    ch = output_channels(res, "layer4")
    assert ch == res.kept[key] == res.channel_map["layer4.1.bn2"]["out"]
    assert len(ch) == pruned["layer4.1.bn2"].num_features
    assert output_channels(res.spec, "layer4") == ch
    assert output_channels(res, "fc") is None  # logits are never pruned
    with pytest.raises(ConfigError):
        output_channels(res, "nope")


def test_uniform_allocation():
    model = build_model("mobilenet_v3_small")
    res = prune_to_budget(model, X64, 0.5, allocation="uniform")
    assert res.macs_after <= 0.5 * res.macs_before
    sizes = {g.key: g.size for g in find_groups(model, X64)}
    fracs = [len(v) / sizes[k] for k, v in res.kept.items() if sizes[k] >= 20]
    assert max(fracs) - min(fracs) < 0.1  # one fraction everywhere (up to rounding)


def test_input_model_untouched_and_errors(tiny):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    x = torch.zeros(1, 3, 8, 8)
    res = prune_to_budget(tiny, x, 0.6)
    assert res.model is not tiny
    assert all(torch.equal(before[k], v) for k, v in tiny.state_dict().items())
    for bad in (0, -0.1, 1.5, float("nan"), "half", True):
        with pytest.raises(ConfigError, match="budget"):
            prune_to_budget(tiny, x, bad)
    with pytest.raises(UnknownNameError, match="knapsack, uniform"):
        prune_to_budget(tiny, x, 0.5, allocation="magic")
    with pytest.raises(InfeasibleBudgetError) as ei:
        prune_to_budget(tiny, x, 0.01, min_keep=0.5)
    assert 0.01 < ei.value.min_budget < 1 and f"{ei.value.min_budget:.4f}"[:4] in str(ei.value)
    ok = prune_to_budget(tiny, x, math.ceil(ei.value.min_budget * 1e4) / 1e4, min_keep=0.5)
    assert ok.macs_after <= ok.macs_before
    with pytest.raises(SpecError, match="no scores for channel group"):
        prune_to_budget(tiny, x, 0.5, {"stem": torch.ones(8)})
    with pytest.raises(SpecError, match="has 8 channels"):
        prune_to_budget(tiny, x, 0.5, {"stem": torch.ones(3), "expand": torch.ones(12)})


def test_old_import_path_reexports_the_split_modules():
    """Users import allocation, spec and export names from ``kpid_core.prune``: each is the same
    object as in the module that owns it."""
    import importlib

    from kpid_core import prune

    homes = {"ALLOCATIONS": "engine.allocation", "SOLVERS": "engine.allocation", "allocate": "engine.allocation",
             "SPEC_FORMAT": "engine.spec", "SPEC_VERSION": "engine.spec", "load_pruned": "engine.spec",
             "output_channels": "engine.spec", "save_pruned": "engine.spec", "export_onnx": "engine.export"}
    for name in prune.__all__:
        obj = getattr(prune, name)
        if name in homes:
            assert obj is getattr(importlib.import_module(f"kpid_core.{homes[name]}"), name), name


def test_check_fraction_and_min_keep_floors(tiny):
    from kpid_core.engine.allocation import check_fraction, min_keep_floors

    assert check_fraction("budget", 1) == 1.0
    for bad in (0, 1.5, True, "0.5", float("nan")):
        with pytest.raises(ConfigError, match="budget"):
            check_fraction("budget", bad)
    groups = find_groups(tiny, torch.zeros(1, 3, 16, 16))
    floors = min_keep_floors(groups, 0.1)
    assert all(1 <= f <= g.size and f >= math.ceil(0.1 * g.size - 1e-9) for f, g in zip(floors, groups))
    assert list(min_keep_floors(groups, 1.0)) == [g.size for g in groups]


def test_a_model_with_no_conv_or_linear_layer_is_refused_in_one_line():
    with pytest.raises(UnsupportedModelError, match="model Identity cannot be pruned: it has no conv or linear layer"):
        prune_to_budget(nn.Identity(), (3, 8, 8), 0.5)
