"""Choosing the allocation among knapsack candidates by their loss after adaptive batch norm.

The knapsack is exact for its values, but its values (a first-order importance summed over a group)
model badly what removing most of a layer does: at a tenth of the MACs, allocations the knapsack
rates alike end up points apart after fine-tuning. A freshly pruned network whose batch-norm
statistics are re-estimated on a few training batches ("adaptive BN": Li et al., EagleEye, ECCV 2020)
predicts that order well: on Fashion-MNIST (bench/BENCHMARKS.quality.md, sixth round) its training
loss ranked five allocations of one budget in the order of their fine-tuned test accuracy on two of
three seeds.

``prune.candidates`` N > 1 (the default is 6) therefore builds N knapsack solutions of the same
budget: the configured one first, then the other ranking metric (L1 beside the configured one, L2
beside L1), other spreads, and group values scaled by random factors. Each is pruned, its batch
norms are re-estimated on ``prune.candidate_batches`` training batches, it is scored by its
cross-entropy on as many other training batches, and the lowest loss is kept. Validation and test data are not touched; every
candidate lands on the same budget, so the choice costs N small forward passes and no training.
N = 1 is the paper's one-shot allocation.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kpid_core.errors import ConfigError

__all__ = ["SPREADS", "Candidate", "adaptive_bn_loss", "candidate_plan", "perturb", "select_allocation",
           "training_batches"]

SPREADS = (1.25, 2.0)  # spreads tried beside the configured one
NOISE_SIGMA = 0.5  # a perturbed candidate scales each group's values by exp(sigma * z), z ~ N(0, 1)


@dataclass(frozen=True)
class Candidate:
    """One allocation to try.

    Args:
        name: a short label for logs and the spec.
        metric: the importance metric whose scores value and rank the channels.
        spread: the knapsack's ``spread`` (see :func:`kpid_core.engine.allocation.allocate`).
        noise: 0 = the scores as they are; k > 0 = every group's scores scaled by one random factor
            drawn with seed k (:func:`perturb`).
    """

    name: str
    metric: str
    spread: float
    noise: int = 0


def candidate_plan(metric: str, spread: float, n: int, seed: int = 0, *, other_metric: str = "l1") -> list[Candidate]:
    """The ``n`` candidates a trial tries, the configured allocation first.

    Args:
        metric: the configured importance metric.
        spread: the configured spread.
        n: how many candidates (≥ 1).
        seed: varies the random perturbations (the trial's seed).
        other_metric: the second ranking tried beside ``metric`` (data-free L1 by default).

    Returns:
        The candidates: the configured one; each metric at each spread of :data:`SPREADS`; then
        perturbed values, alternating the metrics, at the configured spread.
    """
    if n < 1:
        raise ConfigError(f"prune.candidates must be >= 1, got {n}")
    metrics = [metric] + ([other_metric] if other_metric != metric else [])
    plan = [Candidate(f"{m} spread {s:g}", m, s) for m in metrics for s in (spread, *SPREADS)]
    plan = list({(c.metric, c.spread): c for c in plan}.values())  # the configured spread may be in SPREADS
    for i in itertools.count():
        if len(plan) >= n:
            break
        m = metrics[i % len(metrics)]
        k = seed * 1000 + i + 1
        plan.append(Candidate(f"{m} spread {spread:g} noise {k}", m, spread, k))
    return plan[:n]


def perturb(scores: Any, noise: int, sigma: float = NOISE_SIGMA) -> dict[str, torch.Tensor]:
    """``scores`` with every group's values multiplied by one factor ``exp(sigma * z)``.

    Args:
        scores: :class:`~kpid_core.engine.importance.ImportanceScores` or ``{group_key: tensor}``.
        noise: the seed of the factors (the same seed gives the same factors).
        sigma: spread of the log-factors.

    Returns:
        ``{group_key: tensor}``: the ranking inside a group is unchanged, the groups' values move.
    """
    table = getattr(scores, "scores", scores)
    rng = np.random.default_rng(noise)
    return {k: table[k] * float(np.exp(sigma * rng.standard_normal())) for k in sorted(table)}


def training_batches(loader: Iterable, n: int, seed: int) -> tuple[list, list]:
    """Two disjoint lists of up to ``n`` training batches: one to re-estimate batch norm, one to score
    (the same single batch when the loader holds only one).

    The global torch generator and the loader's own shuffling generator (the product's train loader
    has one; it also seeds the workers) are seeded for the draw, so every candidate, every rank and a
    rerun see the same batches whatever ran before, and both are restored afterwards.

    Args:
        loader: the training loader.
        n: batches in each list.
        seed: the draw's seed.

    Returns:
        ``(recalibrate, score)`` lists of batches.

    Raises:
        ConfigError: the loader is empty. A loader of one batch gives it to both lists.
    """
    gen = getattr(getattr(loader, "sampler", None), "generator", None)
    state, gen_state = torch.random.get_rng_state(), gen.get_state() if gen is not None else None
    torch.manual_seed(seed)
    if gen is not None:
        gen.manual_seed(seed)
    try:
        batches = list(itertools.islice(iter(loader), 2 * n))
    finally:
        torch.random.set_rng_state(state)
        if gen is not None:
            gen.set_state(gen_state)
    if not batches:
        raise ConfigError("prune.candidates > 1 needs training batches to re-estimate batch norm and score the "
                          "candidates; the training split is empty")
    if len(batches) == 1:  # a tiny training split: recalibrate and score on the one batch
        return batches, batches
    half = (len(batches) + 1) // 2
    return batches[:half], batches[half:]


def adaptive_bn_loss(model: nn.Module, recalibrate: list, score: list, device: torch.device | str = "cpu"
                     ) -> tuple[float, float]:
    """Cross-entropy and accuracy of a copy of ``model`` on ``score`` after its batch-norm running
    statistics were re-estimated (a plain average) on ``recalibrate``. ``model`` is not modified.

    Args:
        model: the pruned network.
        recalibrate: ``(inputs, targets)`` batches for the batch-norm statistics.
        score: ``(inputs, targets)`` batches to score on.
        device: where to run.

    Returns:
        ``(mean cross-entropy, accuracy)`` over ``score``.
    """
    net = copy.deepcopy(model).to(device)
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the recalibration batches
    loss, right, seen = 0.0, 0, 0
    with torch.no_grad():
        net.train()
        for x, _ in recalibrate:
            net(x.to(device))
        net.eval()
        for x, y in score:
            out = net(x.to(device))
            y = y.to(device)
            loss += float(F.cross_entropy(out.float(), y, reduction="sum"))
            right += int((out.argmax(1) == y).sum())
            seen += len(y)
    return loss / max(seen, 1), right / max(seen, 1)


def select_allocation(build: Callable[[Any, float], Any], plan: list[Candidate], scores_for: Callable[[str], Any],
                      recalibrate: list, score: list, device: torch.device | str = "cpu", *,
                      agree: Callable[[int], int] | None = None, log: Callable[[str], None] | None = None
                      ) -> tuple[Any, list[dict]]:
    """Build every candidate of ``plan`` and keep the one with the lowest :func:`adaptive_bn_loss`.

    Args:
        build: ``(scores, spread) -> PruneResult`` at the trial's budget.
        plan: the candidates (:func:`candidate_plan`).
        scores_for: ``metric -> scores`` (computed once per metric by the caller).
        recalibrate: batches that re-estimate batch norm.
        score: batches that score.
        device: where the candidates are scored.
        agree: maps this process's choice to the one every rank uses (data-parallel trials broadcast
            rank 0's); None = this process alone.
        log: progress callback, one line per candidate.

    Returns:
        ``(chosen PruneResult, rows)``: a row per candidate with its fields, ``loss``, ``accuracy``,
        ``macs_ratio`` and ``chosen``; candidates that keep the same channels as an earlier one are
        scored once.
    """
    results, rows, seen = [], [], {}
    for c in plan:
        scores = scores_for(c.metric)
        result = build(perturb(scores, c.noise) if c.noise else scores, c.spread)
        key = tuple((k, tuple(v)) for k, v in sorted(result.kept.items()))
        if key in seen:
            loss, acc = rows[seen[key]]["loss"], rows[seen[key]]["accuracy"]
        else:
            seen[key] = len(rows)
            loss, acc = adaptive_bn_loss(result.model, recalibrate, score, device)
        results.append(result)
        rows.append({**asdict(c), "loss": loss, "accuracy": acc, "macs_ratio": result.macs_ratio, "chosen": False})
        if log:
            log(f"candidate {len(rows)}/{len(plan)} {c.name}: loss {loss:.4f}, accuracy {acc:.4f} "
                f"after adaptive BN (MACs {result.macs_ratio:.4f})")
    best = min(range(len(rows)), key=lambda i: (rows[i]["loss"], i))
    best = agree(best) if agree is not None else best
    rows[best]["chosen"] = True
    if log:
        log(f"chose candidate {best + 1}: {plan[best].name}")
    return results[best], rows

