"""Smoke tests of the benchmark helpers: the anchors land on the MAC target, the blocked knapsack
keeps multiples of 8, the same-MACs compact model fits its budget, the CUDA path refuses cleanly."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

# bench/ is a script folder, not an installed package: make it importable under plain `pytest`
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench._anchors import tp_global_to_macs, uniform_prune
from bench.latency import allocate_blocked, blocked_groups, prune_kept
from bench.latency import main as latency_main
from kpid_core.engine.groups import find_groups
from kpid_core.engine.importance import compute_importance
from kpid_core.engine.macs import count_macs
from kpid_core.models import build_model

X = torch.zeros(1, 1, 16, 16)


@pytest.fixture(scope="module")
def digits():
    torch.manual_seed(0)
    return build_model("digits_resnet", num_classes=10).eval()


@pytest.mark.parametrize("budget", [0.5, 0.25])
def test_anchors_land_at_or_just_under_the_mac_target(digits, budget):
    dense = count_macs(digits, (1, 16, 16))
    for fn in (tp_global_to_macs, uniform_prune):
        net, ratio = fn(digits, X, budget)
        assert ratio == count_macs(net, (1, 16, 16)) / dense
        assert budget * 0.95 <= ratio <= budget, (fn.__name__, ratio)
        assert net(torch.randn(2, 1, 16, 16)).shape == (2, 10)
    assert count_macs(digits, (1, 16, 16)) == dense  # the input model is left intact


@pytest.mark.parametrize("budget", [0.4, 0.25])
def test_blocked_knapsack_keeps_multiples_of_8_within_budget(digits, budget):
    G = find_groups(build_model("digits_resnet", num_classes=10).eval(), X)
    scores = compute_importance(digits, X, "l1")
    vectors = [scores.scores[g.key].numpy() for g in G]
    Gb, steps = blocked_groups(G, 8)
    rng = np.random.default_rng(0)
    for _ in range(5):  # the block view is the same exact MAC model, in units of 8 channels
        kb = rng.integers(1, Gb.sizes + 1)
        assert Gb.macs(kb) == G.macs(kb * steps)
        assert np.allclose(Gb.removal_costs(kb), G.macs(kb * steps) - np.array(
            [G.macs(kb * steps - steps * (np.arange(len(kb)) == i)) for i in range(len(kb))]))
    kept = allocate_blocked(G, vectors, budget)
    counts = np.array([len(kept[g.key]) for g in G])
    assert all(c % 8 == 0 and c > 0 for c in counts), counts
    # the kept channels are the top-scored ones of each group
    for g in G:
        v = vectors[g.index]
        assert set(kept[g.key]) == set(np.argsort(-v, kind="stable")[: len(kept[g.key])].tolist())
    dense = count_macs(digits, (1, 16, 16))
    net = prune_kept(digits, X, kept)
    assert count_macs(net, (1, 16, 16)) == G.macs(counts) <= budget * dense
    # maximal: one more block of 8 in any group that is not full would break the budget
    for g in G:
        if counts[g.index] < g.size:
            more = counts.copy()
            more[g.index] += 8
            assert G.macs(more) > budget * dense, (g.key, counts)


def test_latency_cuda_without_cuda_exits_2_with_one_line(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert latency_main(["--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --device cuda") and "cpu" in err[0]
    assert latency_main(["--cost", "flops"]) == 2
    assert "allowed values: mac, latency" in capsys.readouterr().err


def test_latency_budget_pairs_each_variant_with_the_dense_model(monkeypatch, tmp_path, capsys):
    """``--timing pairs`` times every pruned variant against the dense model alone (the landing's
    context) and divides by that pair's own dense samples; ``all`` times them in one rotation."""
    import bench.latency_budget as lb
    from kpid_core.engine.latency_table import LatencySettings

    calls: list[int] = []

    def fake_interleaved(fns, repeats, timer):  # dense first; each call's dense time differs
        calls.append(len(fns))
        dense = [float(len(calls))] * repeats
        return [dense] + [[0.5] * repeats for _ in fns[1:]]

    monkeypatch.setattr(lb, "time_interleaved", fake_interleaved)
    real_prune = lb.prune_to_budget  # MAC budgets for both variants: a latency budget's feasibility
    monkeypatch.setattr(lb, "prune_to_budget",  # depends on this machine's load, and is not tested here
                        lambda model, x, budget, scores, cost, latency: real_prune(model, x, budget, scores))
    settings = LatencySettings(batch=1, repeats=1, cache_dir=str(tmp_path), land_rounds=0)
    rows = lb.run_model("resnet20", 16, [0.5], settings, 3, lambda msg: None, "pairs")
    assert calls == [2, 2] and [r["cost"] for r in rows] == ["latency", "macs"]
    assert [r["ratio"] for r in rows] == [0.5 / 1, 0.5 / 2]  # each against its own pair's dense model
    calls.clear()
    rows = lb.run_model("resnet20", 16, [0.5], settings, 3, lambda msg: None, "all")
    assert calls == [3] and [r["ratio"] for r in rows] == [0.5, 0.5]
    assert lb.main(["--timing", "both"]) == 2
    assert capsys.readouterr().err.strip() == "error: --timing 'both': allowed values: all, pairs"


def test_startup_bench_pairs_rounds_and_refuses_bad_rounds(capsys):
    """bench/startup.py: the difference is taken round by round (not between medians), and a bad
    --rounds is one line with exit 2, before any interpreter is started."""
    from bench.startup import SNIPPETS, main, summarise

    assert SNIPPETS["eager"].startswith(SNIPPETS["product"])  # the anchor does everything the product does
    lines = summarise({"product": [1.0, 5.0, 1.2], "eager": [3.0, 5.5, 3.4]})
    assert "| product | 1.20 | 1.00–5.00 |" in lines and "| eager | 3.40 | 3.00–5.50 |" in lines
    assert "median +2.00 s" in lines[-1]  # per-round differences 2.0, 0.5, 2.2 (medians differ by 2.2)
    assert main(["--rounds", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --rounds '0': must be a whole number >= 1"
