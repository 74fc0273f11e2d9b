"""Landing a latency budget on *measured* latency: the table steers the allocation, timing corrects it.

The latency table (:mod:`kpid_core.engine.latency_table`) is a model. It is calibrated on uniformly
cut copies, yet the knapsack picks non-uniform allocations and cuts exactly where the table promises
the most time saved, so its prediction of the chosen network errs by 5–15 % on a quiet CPU, in a
direction that depends on the architecture (bench/BENCHMARKS.latency.md: ResNet-50 ran faster than
predicted, MobileNetV3-Large slower). As NetAdapt does with its proposals, a latency budget is therefore
landed in closed loop:

1. prune at the budget under the table;
2. time the pruned network against the dense one in interleaved pairs (on the table's device, batch,
   threads, AMP) — the measured ratio ``m``;
3. if ``|m / budget − 1| > tolerance``, prune again at a corrected *table* budget: ``b · budget / m``
   after the first try, then the secant through the two tries nearest the budget; at most ``rounds``
   corrections;
4. keep the try whose measured ratio is nearest the budget.

The budget stays what the user asked for (a fraction of the dense model's measured latency); each
try's table budget and measured ratio are returned (the spec records them as ``latency_landing``).
:func:`land` holds the loop and takes the pruning and the measuring as callables, so it is tested
without timing anything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from kpid_core.engine.timing import LatencySettings, paired_latency
from kpid_core.errors import InfeasibleBudgetError

__all__ = ["land", "measured_ratio", "next_budget"]

R = TypeVar("R")


def measured_ratio(dense: nn.Module, pruned: nn.Module, input_shape: tuple[int, ...],
                   settings: LatencySettings) -> float:
    """Pruned ÷ dense latency, the median over ``settings.land_repeats`` interleaved rounds of the
    paired ratio (copies are timed; the models stay where they are).

    Args:
        dense: the dense model.
        pruned: the pruned model.
        input_shape: one input's shape (C, H, W).
        settings: device, batch, threads, AMP, channels_last; ``land_repeats`` rounds.

    Returns:
        The measured latency ratio.
    """
    from dataclasses import replace

    return float(paired_latency(dense, pruned, input_shape,
                                replace(settings, repeats=settings.land_repeats))["latency_ratio"])


def next_budget(tries: list[tuple[float, float]], budget: float) -> float:
    """The next table budget from the tries so far.

    Args:
        tries: ``(table budget, measured ratio)`` of each try, in order.
        budget: the measured ratio aimed at.

    Returns:
        After one try, its table budget scaled by ``budget / measured``; after more, the secant
        through the two tries whose measured ratios are nearest ``budget`` (the scaling again when
        those two give no increasing slope); clamped to (0, 1].
    """
    near = sorted(tries, key=lambda t: abs(t[1] - budget))
    b0, m0 = near[0]
    nxt = b0 * budget / m0 if m0 > 0 else b0
    if len(near) > 1:
        b1, m1 = near[1]
        if m1 != m0 and (b1 - b0) / (m1 - m0) > 0:
            nxt = b0 + (budget - m0) * (b1 - b0) / (m1 - m0)
    return min(1.0, max(1e-4, nxt))


def land(prune_at: Callable[[float], R], measure: Callable[[R], float], budget: float, *, rounds: int,
         tolerance: float, log: Callable[[str], None] | None = None) -> tuple[R, list[dict[str, Any]]]:
    """Prune at ``budget``, measure, and re-prune at corrected table budgets until the measured ratio
    is within ``tolerance`` (relative) of ``budget`` or ``rounds`` corrections are spent.

    Args:
        prune_at: prunes at a table budget and returns the result.
        measure: the measured latency ratio of a result.
        budget: the measured ratio aimed at (the user's budget).
        rounds: corrections at most (0: the first try is kept as it is, unmeasured).
        tolerance: the largest ``|measured / budget − 1|`` that ends the loop.
        log: progress lines.

    Returns:
        ``(result, history)``: the try whose measured ratio is nearest ``budget``, and one
        ``{"table_budget", "measured", "kept"}`` per try (empty with ``rounds`` 0).

    Raises:
        InfeasibleBudgetError: from the first try only; a correction the floors cannot meet ends
            the loop instead.
    """
    result = prune_at(budget)
    if rounds <= 0:
        return result, []
    tries: list[tuple[float, float, R]] = []
    b = budget
    for k in range(rounds + 1):
        m = measure(result)
        tries.append((b, m, result))
        if log is not None:
            log(f"latency landing: table budget {b:.4f} -> measured {m:.4f} of dense (target {budget:.4f})")
        if abs(m / budget - 1) <= tolerance or k == rounds:
            break
        b = next_budget([(t[0], t[1]) for t in tries], budget)
        if any(abs(b - t[0]) < 1e-6 for t in tries):
            break  # the correction would repeat a try
        try:
            result = prune_at(b)
        except InfeasibleBudgetError:
            break
    best = min(range(len(tries)), key=lambda i: abs(tries[i][1] / budget - 1))
    return tries[best][2], [{"table_budget": round(t[0], 6), "measured": round(t[1], 6), "kept": i == best}
                            for i, t in enumerate(tries)]
