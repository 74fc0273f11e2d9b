"""Data parallelism for :func:`kpid_core.training.train.fit` over an initialised ``torch.distributed`` group.

Whoever starts the processes sets up the group (Ray Train's ``TorchTrainer`` in a sweep, ``torchrun``,
``init_process_group`` in a test) and the current CUDA device of each rank; this module never
imports Ray. Without an initialised group of two or more ranks every helper is a no-op, so
single-process code pays nothing.

Semantics: synchronous SGD with the *same global batch* as a single-process run. Each rank takes
``batch_size // world`` samples of a shard of the training set (a padded ``DistributedSampler``,
so every rank runs the same number of steps), gradients are averaged in one flat all-reduce per
step, BatchNorm running statistics are averaged after each epoch, and evaluation counts are summed
over disjoint shards. Trials with different worker counts therefore compare like for like.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

__all__ = ["agree_on_index", "average_gradients_and_loss", "broadcast_parameters", "eval_shard", "mean_over_ranks",
           "reduce_counts", "shard_train_loader", "sync_buffers", "world"]


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised default process group, else ``(0, 1)``."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def agree_on_index(index: int) -> int:
    """Rank 0's ``index`` on every rank (a choice made from floating-point results, which may
    differ in the last bit between devices, must be the same choice everywhere); ``index`` itself
    outside a group.

    Args:
        index: this rank's choice.

    Returns:
        The choice every rank uses.
    """
    import torch.distributed as dist

    if world()[1] < 2:
        return index
    t = torch.tensor([index], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.broadcast(t, src=0)
    return int(t.item())


def broadcast_parameters(*modules: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (identical start, whatever the seeds)."""
    import torch.distributed as dist

    if world()[1] < 2:
        return
    with torch.no_grad():
        for m in modules:
            for t in [*m.parameters(), *m.buffers()]:
                dist.broadcast(t.data, src=0)


def shard_train_loader(loader: DataLoader, seed: int) -> tuple[DataLoader, DistributedSampler | None]:
    """This rank's shard of ``loader`` with a per-rank batch of ``batch_size // world`` (≥ 1).

    Returns the loader and its sampler (call ``sampler.set_epoch(e)`` before each epoch), or the
    original loader and ``None`` outside a group.
    """
    rank, n = world()
    if n < 2:
        return loader, None
    sampler = DistributedSampler(loader.dataset, num_replicas=n, rank=rank, shuffle=True, seed=seed,
                                 drop_last=False)
    extra: dict[str, Any] = {}
    if loader.num_workers > 0:
        extra = {"persistent_workers": loader.persistent_workers, "worker_init_fn": loader.worker_init_fn}
    shard = DataLoader(loader.dataset, batch_size=max(1, int(loader.batch_size or 1) // n), sampler=sampler,
                       num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                       collate_fn=loader.collate_fn, drop_last=loader.drop_last, **extra)
    return shard, sampler


def average_gradients_and_loss(params: list[nn.Parameter], loss: torch.Tensor) -> torch.Tensor:
    """Average the gradients of ``params`` and ``loss`` over ranks, in place; return the mean loss.

    One flat all-reduce per step. The loss travels with the gradients so that a non-finite loss on
    any rank is seen by every rank and they all stop together (no rank is left waiting).
    """
    import torch.distributed as dist

    n = world()[1]
    if n < 2:
        return loss.detach()
    grads = [p.grad for p in params if p.grad is not None]
    dev = grads[0].device if grads else loss.device
    flat = torch.cat([g.reshape(-1).float() for g in grads] + [loss.detach().reshape(1).float().to(dev)])
    dist.all_reduce(flat)
    flat /= n
    offset = 0
    for g in grads:
        k = g.numel()
        g.copy_(flat[offset:offset + k].view_as(g))
        offset += k
    return flat[-1]


def sync_buffers(module: nn.Module) -> None:
    """Average floating-point buffers (BatchNorm running mean/var) over ranks, so every rank holds
    the same model for evaluation and checkpoints."""
    import torch.distributed as dist

    n = world()[1]
    if n < 2:
        return
    with torch.no_grad():
        for b in module.buffers():
            if b.is_floating_point():
                dist.all_reduce(b)
                b /= n


def eval_shard(loader: DataLoader) -> DataLoader:
    """This rank's disjoint share of an evaluation loader (every sample counted exactly once)."""
    rank, n = world()
    if n < 2:
        return loader
    idx = list(range(rank, len(loader.dataset), n))  # type: ignore[arg-type]
    return DataLoader(Subset(loader.dataset, idx), batch_size=loader.batch_size, shuffle=False,
                      num_workers=loader.num_workers, pin_memory=loader.pin_memory, collate_fn=loader.collate_fn)


def mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average each of ``values`` over ranks (the per-epoch loss terms)."""
    import torch.distributed as dist

    n = world()[1]
    if n < 2:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return {k: float(v) / n for k, v in zip(keys, t.tolist())}


def reduce_counts(correct: int, total: int, device: torch.device) -> tuple[int, int]:
    """Sum ``(correct, total)`` over ranks."""
    import torch.distributed as dist

    if world()[1] < 2:
        return correct, total
    t = torch.tensor([correct, total], dtype=torch.int64, device=device)
    dist.all_reduce(t)
    return int(t[0].item()), int(t[1].item())
