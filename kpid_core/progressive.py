"""Progressive prune-and-distill: reach the budget in several knapsack steps, fine-tuning in between.

Why it exists: the paper prunes once. Its importance (first-order Taylor) is measured on the dense
teacher and is a good guide for the first cut, but at a tenth of the MACs most channels are gone
and the scores of the dense network no longer describe the network that remains (Molchanov et al.'s
Taylor pruning, which the paper's metric comes from, removes channels a few at a time and fine-tunes
in between for this reason). With ``prune.steps = S`` the trial

1. cuts the dense model to ``budget ** (1/S)`` of its MACs (the usual knapsack on the teacher's scores),
2. fine-tunes the student under the teacher for ``prune.step_epochs`` epochs (the trial's own loss),
3. scores the *student* again with the same metric and cuts it to ``budget ** (2/S)`` of the dense
   MACs, and so on, until the last step lands on ``budget``.

The fine-tuning epochs of the intermediate steps are taken from ``train.epochs``, so a progressive
trial trains exactly as many epochs as a one-shot trial. The channels kept by each step are indices
into the previous student; :func:`compose_kept` maps them back to the dense model, and the result is
rebuilt from the dense model with :func:`~kpid_core.prune.prune_to_kept`, so that its spec, channel
map (inner KD) and saved files are those of a one-shot prune that kept the same channels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from kpid_core.errors import SpecError

__all__ = ["compose_kept", "progressive_prune", "step_budgets"]


def step_budgets(budget: float, steps: int) -> list[float]:
    """The MAC fractions (of the dense model) reached after each step: geometric, ending at ``budget``.

    Args:
        budget: the final fraction, in (0, 1].
        steps: the number of pruning steps (≥ 1).

    Returns:
        ``[budget ** (1/steps), budget ** (2/steps), ..., budget]``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return [budget ** ((i + 1) / steps) for i in range(steps - 1)] + [budget]


def compose_kept(outer: Mapping[str, list[int]], inner: Mapping[str, list[int]]) -> dict[str, list[int]]:
    """Dense-model channel indices kept after two cuts.

    Args:
        outer: ``group_key -> dense indices`` kept by the first cut (sorted).
        inner: ``group_key -> indices into the first cut's channels`` kept by the second.

    Returns:
        ``group_key -> sorted dense indices`` kept by both.

    Raises:
        SpecError: the two cuts do not name the same groups, or an inner index is out of range.
    """
    if set(outer) != set(inner):
        raise SpecError(f"progressive prune: the student's channel groups differ from the dense model's "
                        f"({sorted(set(outer) ^ set(inner))[:4]})")
    out = {}
    for key, idx in inner.items():
        base = list(outer[key])
        if any(i < 0 or i >= len(base) for i in idx):
            raise SpecError(f"progressive prune: group {key!r} keeps index out of range of its {len(base)} channels")
        out[key] = sorted(base[i] for i in idx)
    return out


def progressive_prune(dense: nn.Module, example_input: Any, budget: float, steps: int, first_scores: Any, *,
                      prune: Callable[[nn.Module, float, Any], Any], rescore: Callable[[nn.Module], Any],
                      tune: Callable[[Any, int], None], rebuild: Callable[[dict[str, list[int]]], Any],
                      log: Callable[[str], None] | None = None) -> Any:
    """Prune ``dense`` to ``budget`` of its MACs in ``steps`` cuts with fine-tuning in between.

    Args:
        dense: the dense model (not modified).
        example_input: a (1, C, H, W) input, as for :func:`~kpid_core.prune.prune_to_budget`.
        budget: the final MAC fraction of ``dense``.
        steps: the number of cuts (1 = the paper's one-shot prune).
        first_scores: importance scores of ``dense`` for the first cut.
        prune: ``prune(model, fraction_of_its_own_macs, scores) -> PruneResult`` (the allocation).
        rescore: ``rescore(student) -> scores`` of a fine-tuned student, for the next cut.
        tune: ``tune(result, step)`` fine-tunes ``result.model`` in place (``result`` refers to the
            dense model's channels).
        rebuild: ``rebuild(kept) -> PruneResult`` of ``dense`` keeping exactly ``kept`` (see
            :func:`~kpid_core.prune.prune_to_kept`).
        log: optional progress callback.

    Returns:
        The final :class:`~kpid_core.prune.PruneResult`, relative to ``dense``, whose model holds the
        weights of the last student (not yet fine-tuned after the last cut).
    """
    targets = step_budgets(budget, steps)
    result = prune(dense, targets[0], first_scores)
    for i, target in enumerate(targets[1:], start=1):
        tune(result, i - 1)
        student = result.model
        cut = prune(student, min(1.0, target * result.macs_before / result.macs_after), rescore(student))
        kept = compose_kept(result.kept, cut.kept)
        rebuilt = rebuild(kept)
        rebuilt.model.load_state_dict(cut.model.state_dict())
        rebuilt.model.train(student.training)
        result = rebuilt
        if log is not None:
            log(f"progressive step {i + 1}/{steps}: {result.macs_after} MACs ({result.macs_ratio:.4f} of dense, "
                f"target {target:.4f})")
    return result
