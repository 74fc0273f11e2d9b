"""Data-parallel fit on a real 2-rank gloo group (the path a sweep's TorchTrainer trial takes)."""

from __future__ import annotations

import json
import multiprocessing as mp

import ddp_worker
import pytest
import torch
from torch import nn

pytestmark = pytest.mark.slow


def _spawn(target, tmp_path, world: int = 2, timeout: float = 120.0) -> None:
    """Run ``target(rank, world, root)`` in ``world`` fresh processes and wait for all of them.

    They are forked from a forkserver, a clean process (no threads, no CUDA) that imported torch and
    the rank bodies once for the session: the safe start method that spawn is, without paying the
    ~2 s torch import in each of the six ranks the tests start.
    """
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["ddp_worker", "kpid_core.training.train", "kpid_core.training.distributed"])
    procs = [ctx.Process(target=target, args=(r, world, str(tmp_path))) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive, "a rank hung (waiting in a collective)"
    assert [p.exitcode for p in procs] == [0] * world


def test_gradients_are_averaged_to_the_full_batch_gradient_and_ranks_agree_on_a_choice(tmp_path):
    _spawn(ddp_worker.grad_rank, tmp_path)
    r0, r1 = (torch.load(tmp_path / f"grad{r}.pt", weights_only=True) for r in (0, 1))
    torch.manual_seed(0)
    model, x, y = nn.Linear(6, 3), torch.randn(8, 6), torch.randint(0, 3, (8,))
    full = nn.functional.cross_entropy(model(x), y)
    full.backward()
    for g0, g1, ref in zip(r0["grads"], r1["grads"], (p.grad for p in model.parameters())):
        assert torch.equal(g0, g1)
        torch.testing.assert_close(g0, ref)
    torch.testing.assert_close(r0["loss"], full.detach())
    assert r0["agreed"] == r1["agreed"] == 10  # kpid_core.training.distributed.agree_on_index: rank 0's choice


def test_two_ranks_train_on_halves_and_end_identical(tmp_path):
    _spawn(ddp_worker.fit_rank, tmp_path)
    facts = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    # each rank sees half of the training set, in half batches: the global batch is unchanged
    for f in facts:
        assert f["shard_samples"] == (f["train_samples"] + 1) // 2 and f["shard_batch"] == f["batch"] // 2
    # gradients averaged + BN statistics synchronised: both ranks hold the same network
    for key in ("state", "proj"):
        for (k, a), b in zip(states[0][key].items(), states[1][key].values()):
            assert torch.equal(a, b), k
    assert facts[0]["history"] == facts[1]["history"] and facts[0]["test"] == facts[1]["test"]
    assert facts[0]["history"][-1]["loss"] < facts[0]["history"][0]["loss"]
    # the reported accuracy counts every val image once: the same as one process on the full set
    from kpid_core.models import build_model
    from kpid_core.training.data import build_data
    from kpid_core.training.train import evaluate

    data = build_data({"name": "synthetic", "image_size": 8, "batch_size": 32}, seed=0)
    model = build_model("digits_resnet", num_classes=10, in_channels=3, width=0.25)
    model.load_state_dict(states[0]["state"])
    assert evaluate(model, data.val) == facts[0]["history"][-1]["accuracy"]
    assert evaluate(model, data.test) == facts[0]["test"] > 0.3


def test_a_non_finite_loss_on_one_rank_stops_both(tmp_path):
    _spawn(ddp_worker.nan_rank, tmp_path, timeout=90.0)
    assert [(tmp_path / f"nan{r}.txt").read_text() for r in (0, 1)] == ["non_finite", "non_finite"]
