"""Channel groups from torch-pruning's dependency graph and the exact MAC model over them."""

import numpy as np
import pytest
import torch

from kpid_core.engine.groups import find_groups
from kpid_core.engine.macs import count_macs
from kpid_core.models import build_model
from kpid_core.prune import prune_to_budget


def _members(g):
    return {(m.module, m.dim) for m in g.members}


def test_tiny_groups_tie_residual_and_depthwise(tiny):
    G = find_groups(tiny, torch.zeros(1, 3, 8, 8))
    by = G.by_key
    assert set(by) == {"stem", "expand"}  # c1 joins the stem's group via the residual add
    assert {("stem", "out"), ("bn0", "out"), ("c1", "out"), ("bn1", "out"), ("c1", "in"),
            ("expand", "in")} <= _members(by["stem"])
    assert {("expand", "out"), ("bn2", "out"), ("dw", "out"), ("bn3", "out"), ("fc", "in")} <= _members(by["expand"])
    assert G.classifier == "fc"
    assert all(("fc", "out") not in _members(g) for g in G)  # logits never pruned
    assert by["stem"].size == 8 and by["expand"].size == 12


def test_se_block_and_classifier_on_mobilenet():
    G = find_groups(build_model("mobilenet_v3_small"), torch.zeros(1, 3, 32, 32))
    g = G.by_key["features.9.block.0.0"]
    assert {("features.9.block.2.fc2", "out"), ("features.9.block.2.fc1", "in"),
            ("features.9.block.1.0", "out")} <= _members(g)
    assert G.classifier == "classifier.3"
    assert all(("classifier.3", "out") not in _members(x) for x in G)


def test_keys_stable_across_builds():
    a = find_groups(build_model("resnet18"), torch.zeros(1, 3, 32, 32)).keys()
    b = find_groups(build_model("resnet18"), torch.zeros(1, 3, 32, 32)).keys()
    assert a == b and len(a) == len(set(a))


def test_marginal_costs_are_the_exact_derivative():
    G = find_groups(build_model("mobilenet_v3_small"), torch.zeros(1, 3, 32, 32))
    rng = np.random.default_rng(0)
    k = np.maximum(2, (G.sizes * rng.uniform(0.3, 0.9, len(G))).astype(np.int64))
    c = G.marginal_costs(k)
    for g in range(len(G)):
        e = np.zeros(len(G), dtype=np.int64)
        e[g] = 1
        # M is quadratic in k, so the central difference is its exact derivative
        assert c[g] == pytest.approx((G.macs(k + e) - G.macs(k - e)) / 2)
        assert G.removal_costs(k)[g] == G.macs(k) - G.macs(k - e)
        assert G.addition_costs(k)[g] == G.macs(k + e) - G.macs(k)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "efficientnet_b0"])
def test_mac_model_equals_count_of_pruned_model(name):
    model = build_model(name)
    x = torch.zeros(1, 3, 32, 32)
    dense = find_groups(build_model(name), x)  # an independent trace of the dense network
    assert dense.macs() == count_macs(model, (3, 32, 32))
    gen = torch.Generator().manual_seed(1)
    scores = {g.key: torch.rand(g.size, generator=gen) for g in dense}
    res = prune_to_budget(model, x, 0.45, scores, min_keep=0.2)
    kept = {k: len(v) for k, v in res.kept.items()}
    assert dense.macs(kept) == count_macs(res.model, (3, 32, 32))
