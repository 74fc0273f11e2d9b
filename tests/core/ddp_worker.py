"""Rank bodies for tests/core/test_distributed.py (a module of its own so the ranks' forkserver imports it)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def _init(rank: int, world: int, root: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{root}/pg", rank=rank, world_size=world)


def _run(rank: int, world: int, root: str, body) -> None:
    """Join the group, run ``body(rank, root)``, leave (see ``_close``)."""
    import traceback

    _init(rank, world, root)
    ok = False
    try:
        body(rank, root)
        ok = True
    except BaseException:  # noqa: BLE001 (printed; the rank then exits 1)
        traceback.print_exc()
    finally:
        _close(ok)


def _close(ok: bool) -> None:
    """Leave the group together, then exit without interpreter finalisation.

    A rank that tears its gloo context down while its peer is still in a collective, or that lets
    gloo's C++ threads outlive the interpreter, can die with SIGABRT ("terminate called without an
    active exception"; pytorch/pytorch#179291) after its work is done: one CI run lost a landing to
    it. The barrier makes both ranks finish their collectives before either destroys the group; the
    hard exit skips the finalisation that the abort comes from. A rank whose body raised still exits
    non-zero, so the test's exit-code check keeps catching real failures.
    """
    import os
    import sys

    try:
        if ok:
            dist.barrier()
    finally:
        dist.destroy_process_group()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0 if ok else 1)


def _fit_rank(rank: int, root: str) -> None:
    """Fine-tune a BN network data-parallel; save what this rank ended with."""
    from kpid_core.config import TrainConfig
    from kpid_core.models import build_model
    from kpid_core.training.data import build_data
    from kpid_core.training.distill import DistillLoss
    from kpid_core.training.distributed import shard_train_loader
    from kpid_core.training.train import evaluate, fit

    data = build_data({"name": "synthetic", "image_size": 8, "batch_size": 32}, seed=0)
    shard, _ = shard_train_loader(data.train, seed=3)
    torch.manual_seed(10 + rank)  # different initialisations: fit must start every rank from rank 0's
    teacher = build_model("digits_resnet", num_classes=10, in_channels=3, width=0.5).eval()
    student = build_model("digits_resnet", num_classes=10, in_channels=3, width=0.25)
    loss = DistillLoss(kd_weight=1.0, inner_weight=1.0, match="projection")
    loss.attach(student, teacher, ["layer1", "layer3"], example_input=torch.zeros(1, 3, 8, 8))
    res = fit(student, teacher, data, loss, TrainConfig(epochs=3, lr=0.05), seed=3)
    loss.detach()
    torch.save({"state": student.state_dict(), "proj": loss.projections.state_dict()},
               Path(root, f"rank{rank}.pt"))
    Path(root, f"rank{rank}.json").write_text(json.dumps({
        "history": res.history, "test": evaluate(student, data.test),
        "shard_samples": len(shard.sampler), "shard_batch": shard.batch_size,
        "train_samples": len(data.train.dataset), "batch": data.train.batch_size}))


def fit_rank(rank: int, world: int, root: str) -> None:
    _run(rank, world, root, _fit_rank)


def _grad_rank(rank: int, root: str) -> None:
    """Average the gradients of two half batches; save them (the test compares with the full batch),
    and the index the ranks agree on."""
    from kpid_core.training.distributed import agree_on_index, average_gradients_and_loss

    torch.manual_seed(0)
    model, x, y = nn.Linear(6, 3), torch.randn(8, 6), torch.randint(0, 3, (8,))
    half = slice(rank * 4, rank * 4 + 4)
    loss = nn.functional.cross_entropy(model(x[half]), y[half])
    loss.backward()
    mean_loss = average_gradients_and_loss(list(model.parameters()), loss)
    agreed = agree_on_index(10 + rank)  # each rank proposes its own; rank 0's wins everywhere
    torch.save({"grads": [p.grad for p in model.parameters()], "loss": mean_loss, "agreed": agreed},
               Path(root, f"grad{rank}.pt"))


def grad_rank(rank: int, world: int, root: str) -> None:
    _run(rank, world, root, _grad_rank)


def _nan_rank(rank: int, root: str) -> None:
    """Only one rank's shard holds a non-finite sample: both ranks must stop (none may hang)."""
    from kpid_core.config import TrainConfig
    from kpid_core.errors import NonFiniteLossError
    from kpid_core.training.distill import DistillLoss
    from kpid_core.training.train import fit

    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    x[5] = float("inf")
    ds = TensorDataset(x, y)
    loaders = SimpleNamespace(train=DataLoader(ds, batch_size=64), val=DataLoader(ds, batch_size=64))
    try:
        fit(nn.Linear(4, 2), None, loaders, DistillLoss(kd_weight=0, inner_weight=0), TrainConfig(epochs=1))
        outcome = "finished"
    except NonFiniteLossError:
        outcome = "non_finite"
    Path(root, f"nan{rank}.txt").write_text(outcome)


def nan_rank(rank: int, world: int, root: str) -> None:
    _run(rank, world, root, _nan_rank)
