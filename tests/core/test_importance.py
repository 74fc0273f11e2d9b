"""Importance metrics: each metric's defining property, and the score file."""

import copy

import pytest
import torch

from kpid_core.engine.importance import METRICS, ImportanceScores, compute_importance
from kpid_core.errors import ConfigError, SpecError, UnknownNameError

X = torch.zeros(1, 3, 8, 8)


def _loader(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 5, (4,), generator=g)) for _ in range(n)]


def _expand_params(m):
    """(tensor, dim) of every parameter slice belonging to the 'expand' group's channels."""
    return [(m.expand.weight, 0), (m.bn2.weight, 0), (m.bn2.bias, 0), (m.dw.weight, 0),
            (m.bn3.weight, 0), (m.bn3.bias, 0), (m.fc.weight, 1)]


def _per_channel(tensors, f):
    return sum(f(t.detach().double().movedim(d, 0).reshape(t.shape[d], -1)).sum(1) for t, d in tensors)


@pytest.mark.parametrize("block", [1, 7, 1 << 20])
def test_scores_do_not_depend_on_the_rows_reduced_at_once(tiny, monkeypatch, block):
    """Parameters are reduced a block of rows at a time (a large classifier never becomes one float64
    copy): a block of one element, of a few rows, or of all of them gives the same scores."""
    from kpid_core.engine import importance

    whole = {m: compute_importance(tiny, X, m).scores for m in ("l1", "l2", "bn_gamma")}
    monkeypatch.setattr(importance, "_REDUCE_BLOCK", block)
    for metric, scores in whole.items():
        got = compute_importance(tiny, X, metric).scores
        for key, v in scores.items():
            torch.testing.assert_close(got[key], v, rtol=1e-13, atol=0)
    params = _expand_params(tiny)  # and they are still the hand-computed sums
    torch.testing.assert_close(whole["l1"]["expand"], _per_channel(params, torch.abs))


def test_metric_names():
    assert set(METRICS) >= {"taylor", "taylor_abs", "taylor_sq", "l1", "l2", "bn_gamma", "random"}
    with pytest.raises(UnknownNameError, match="valid metrics: .*taylor"):
        compute_importance(torch.nn.Linear(2, 2), (2,), "magic")


def test_l1_l2_bn_gamma_by_hand(tiny):
    params = _expand_params(tiny)
    l1 = compute_importance(tiny, X, "l1").scores["expand"]
    torch.testing.assert_close(l1, _per_channel(params, torch.abs))
    l2 = compute_importance(tiny, X, "l2").scores["expand"]
    torch.testing.assert_close(l2, _per_channel(params, lambda t: t * t).sqrt())
    bn = compute_importance(tiny, X, "bn_gamma").scores["expand"]
    torch.testing.assert_close(bn, (tiny.bn2.weight.abs() + tiny.bn3.weight.abs()).double().detach())


def test_random_is_seeded(tiny):
    a = compute_importance(tiny, X, "random", seed=3).scores
    b = compute_importance(tiny, X, "random", seed=3).scores
    c = compute_importance(tiny, X, "random", seed=4).scores
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["expand"], c["expand"])


def _signed_taylor(model, batch):
    m = copy.deepcopy(model).eval()
    x, y = batch
    torch.nn.functional.cross_entropy(m(x), y).backward()
    return _per_channel([(t * t.grad, d) for t, d in _expand_params(m)], lambda t: t)


def test_taylor_vs_taylor_abs(tiny):
    tiny.bn2.weight.data.uniform_(-1, 1)  # non-trivial gradients through every member
    data = _loader(2)
    s1, s2 = _signed_taylor(tiny, data[0]), _signed_taylor(tiny, data[1])
    taylor = compute_importance(tiny, X, "taylor", loader=data, n_batches=2).scores["expand"]
    tabs = compute_importance(tiny, X, "taylor_abs", loader=data, n_batches=2).scores["expand"]
    tsq = compute_importance(tiny, X, "taylor_sq", loader=data, n_batches=2).scores["expand"]
    torch.testing.assert_close(taylor, (s1 + s2).abs())  # paper: abs of the accumulated sum
    torch.testing.assert_close(tabs, s1.abs() + s2.abs())  # Molchanov: sum of per-batch abs
    torch.testing.assert_close(tsq, s1.square() + s2.square())  # Molchanov's squared: per-batch squares
    assert (tabs > taylor + 1e-12).any()  # signs disagree somewhere, so the two differ
    only_first = compute_importance(tiny, X, "taylor", loader=data, n_batches=1).scores["expand"]
    torch.testing.assert_close(only_first, s1.abs())  # n_batches limits the batches used


def test_does_not_modify_model(tiny):
    tiny.train()
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    compute_importance(tiny, X, "taylor", loader=_loader(2))
    after = tiny.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert tiny.training and all(p.grad is None for p in tiny.parameters())


def test_data_metric_without_loader(tiny):
    with pytest.raises(ConfigError, match="needs data"):
        compute_importance(tiny, X, "taylor")


def test_save_load_roundtrip_and_corrupt(tiny, tmp_path):
    s = compute_importance(tiny, X, "l1")
    path = s.save(tmp_path / "imp" / "l1.pt")
    back = ImportanceScores.load(path)
    assert back.metric == "l1" and set(back.scores) == set(s.scores)
    assert all(torch.equal(back.scores[k], s.scores[k]) for k in s.scores)
    raw = path.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(SpecError, match="corrupt"):
        ImportanceScores.load(tmp_path / "trunc.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(SpecError, match="not a kpid-importance"):
        ImportanceScores.load(tmp_path / "other.pt")
    with pytest.raises(SpecError, match="does not exist"):
        ImportanceScores.load(tmp_path / "missing.pt")
