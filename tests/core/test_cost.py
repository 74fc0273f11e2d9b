"""Cost models: exact totals and differences, params against count_params, round_to, and the knapsack
landing at or under a latency budget (a synthetic table: timings are never asserted here)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from kpid_core.engine.cost import blocked, check_cost, check_round_to, mac_cost, params_cost
from kpid_core.engine.groups import find_groups
from kpid_core.engine.latency_table import LatencyTable, latency_cost
from kpid_core.engine.macs import count_params
from kpid_core.errors import ConfigError, UnknownNameError
from kpid_core.models import build_model
from kpid_core.prune import prune_to_budget


@pytest.fixture(scope="module")
def mnv3():
    torch.manual_seed(0)
    return build_model("mobilenet_v3_small", num_classes=10).eval()


def _random_counts(groups, rng):
    return np.array([rng.integers(1, s + 1) for s in groups.sizes], dtype=np.int64)


def test_mac_cost_equals_the_mac_model_and_differences_are_exact(mnv3):
    G = find_groups(copy.deepcopy(mnv3), (3, 64, 64))
    cm, rng = mac_cost(G), np.random.default_rng(0)
    assert cm.total() == G.macs() and isinstance(cm.total(), int)
    for _ in range(5):
        k = _random_counts(G, rng)
        assert cm.total(k) == G.macs(k)
        for g in np.flatnonzero(k > 1)[:10]:
            e = np.zeros_like(k)
            e[g] = 1
            assert cm.removal(k)[g] == cm.total(k) - cm.total(k - e)
            assert cm.addition(k)[g] == cm.total(k + e) - cm.total(k)


def test_params_cost_predicts_count_params_of_the_pruned_model(mnv3):
    for name, model in (("mnv3", mnv3), ("resnet18", build_model("resnet18", num_classes=10).eval())):
        G = find_groups(copy.deepcopy(model), (3, 64, 64))
        assert params_cost(G).total() == count_params(model), name
        r = prune_to_budget(model, (3, 64, 64), 0.4, cost="params")
        assert r.cost == "params" and r.params_after == r.cost_after  # the model is exact
        assert r.params_after <= 0.4 * r.params_before
        assert r.params_after >= 0.38 * r.params_before, "lands close to the budget"


def test_round_to_keeps_multiples_and_the_mac_budget():
    model = build_model("resnet18", num_classes=10).eval()
    r = prune_to_budget(model, (3, 64, 64), 0.5, round_to=16)
    G = find_groups(copy.deepcopy(model), (3, 64, 64))
    for g in G:
        if g.size % 16 == 0:
            assert len(r.kept[g.key]) % 16 == 0, g.key
    assert r.macs_after <= 0.5 * r.macs_before
    plain = prune_to_budget(model, (3, 64, 64), 0.5)
    assert any(len(v) % 16 for v in plain.kept.values())  # without round_to the counts are free


def test_blocked_totals_match_per_channel_totals(mnv3):
    G = find_groups(copy.deepcopy(mnv3), (3, 64, 64))
    cm = mac_cost(G)
    b8 = blocked(cm, 8)
    rng = np.random.default_rng(1)
    kb = np.array([rng.integers(1, s + 1) for s in b8.sizes])
    assert b8.total(kb) == cm.total(kb * b8.steps)


def _synthetic_table(G, seed=0):
    """A latency table with known coefficients (seconds), like a measured one."""
    rng = np.random.default_rng(seed)
    n = len(G.layers)
    a = list(rng.uniform(1e-9, 5e-9, n))
    b = list(rng.uniform(1e-7, 1e-6, n))
    d = list(rng.uniform(1e-6, 2e-6, n))
    cin, cout = G.channels(G.sizes)
    full = [ai * ci * co + bi * co + di for ai, bi, di, ci, co in zip(a, b, d, cin, cout)]
    return LatencyTable({"arch": "synthetic"}, [lay.name for lay in G.layers], a, b, d, full, sum(full), 0.0)


@pytest.mark.parametrize("budget", [0.4, 0.6, 0.8])
def test_knapsack_lands_at_or_under_a_latency_budget(mnv3, budget, monkeypatch):
    G = find_groups(copy.deepcopy(mnv3), (3, 64, 64))
    table = _synthetic_table(G)
    monkeypatch.setattr("kpid_core.prune.latency_table", lambda *a, **k: table)
    r = prune_to_budget(mnv3, (3, 64, 64), budget, cost="latency", latency={"land_rounds": 0})  # the table alone
    lat = latency_cost(G, table)
    k = G.counts({key: len(v) for key, v in r.kept.items()})
    assert r.cost_after == pytest.approx(lat.total(k)) and r.cost_before == pytest.approx(lat.total())
    assert r.cost_ratio <= budget
    assert r.cost_ratio >= budget - 0.01, "lands within a point of the budget"
    assert r.spec["cost"] == "latency"
    # the same budget in MACs keeps a different allocation: the cost model matters
    assert prune_to_budget(mnv3, (3, 64, 64), budget).kept != r.kept


def test_bad_cost_and_round_to_are_one_line_errors(mnv3):
    with pytest.raises(UnknownNameError, match="allowed values: macs, params, latency"):
        check_cost("flops")
    with pytest.raises(ConfigError, match="round_to must be one of 1, 8, 16, 32"):
        check_round_to(7)
    with pytest.raises(ConfigError, match="round_to"):
        prune_to_budget(mnv3, (3, 64, 64), 0.5, round_to=True)
    with pytest.raises(ConfigError, match="latency: unknown field 'batchsize'"):
        prune_to_budget(mnv3, (3, 64, 64), 0.5, cost="latency", latency={"batchsize": 8})
