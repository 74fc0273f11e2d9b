"""Landing a latency budget on *measured* latency: the table steers the allocation, timing corrects it.

The latency table (:mod:`kpid_core.engine.latency_table`) is a model. It is calibrated on uniformly
cut copies, yet the knapsack picks non-uniform allocations and cuts exactly where the table promises
the most time saved, so its prediction of the chosen network erred by up to 16 % on a quiet CPU, in a
direction that depends on the architecture (bench/BENCHMARKS.latency.md: ResNet-50 ran faster than
predicted, MobileNetV3-Large slower). As NetAdapt does with its proposals, a latency budget is therefore
landed in closed loop:

1. prune at the budget under the table;
2. time the pruned network against the dense one in interleaved pairs (on the table's device, batch,
   threads, AMP) — the measured ratio ``m``, with rounds added while it is too noisy to tell whether
   it is within the tolerance (:func:`measured_ratio`);
3. if ``|m / budget − 1| > tolerance``, prune again at a corrected *table* budget: ``b · budget / m``
   until the tries bracket the budget, then a secant kept inside the bracket (:func:`next_budget`);
   at most ``rounds`` corrections;
4. keep the try whose measured ratio is nearest the budget.

The budget stays what the user asked for (a fraction of the dense model's measured latency); each
try's table budget and measured ratio are returned (the spec records them as ``latency_landing``).
:func:`land` holds the loop and takes the pruning and the measuring as callables, so it is tested
without timing anything.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from kpid_core.engine.timing import LatencySettings, paired_samples
from kpid_core.errors import InfeasibleBudgetError

__all__ = ["MAX_ROUND_BLOCKS", "land", "measured_ratio", "next_budget", "precise_enough"]

R = TypeVar("R")


#: a landing measurement near the budget adds rounds up to this many times ``land_repeats``
MAX_ROUND_BLOCKS = 3


def precise_enough(ratios: list[float], budget: float, tolerance: float) -> bool:
    """Whether the paired ratios measured so far decide the landing: the relative standard error of
    their median is at most half of ``tolerance``, or the median is outside the tolerance by more
    than two standard errors (a correction follows whatever more rounds would say).

    The standard error of the median is estimated robustly, ``1.2533 · (IQR / 1.349) / √n``, so one
    slow round (a neighbour's burst on a shared host) does not inflate it.

    Args:
        ratios: pruned ÷ dense per interleaved round (fewer than four never suffice).
        budget: the ratio aimed at.
        tolerance: the landing's relative tolerance.

    Returns:
        True when more rounds would not change what the landing does with the measurement.
    """
    if len(ratios) < 4:
        return False
    m = statistics.median(ratios)
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    se = 1.2533 * (q3 - q1) / 1.349 / math.sqrt(len(ratios)) / m
    dev = abs(m / budget - 1)
    return se <= tolerance / 2 or dev - 2 * se > tolerance


def measured_ratio(dense: nn.Module, pruned: nn.Module, input_shape: tuple[int, ...],
                   settings: LatencySettings, budget: float | None = None) -> float:
    """Pruned ÷ dense latency: the median over interleaved rounds of the paired ratio (copies are
    timed; the models stay where they are).

    ``settings.land_repeats`` rounds are timed; with a ``budget``, blocks of as many rounds are added
    until :func:`precise_enough` says the measurement decides the landing, at most
    :data:`MAX_ROUND_BLOCKS` blocks. On a shared 2-core CPU the median of 9 rounds of a
    MobileNetV3-Large cut to 0.3 varied by 1.9 % (standard deviation) from one measurement to the
    next, as much as the landing's tolerance (bench/BENCHMARKS.latency.md).

    Args:
        dense: the dense model.
        pruned: the pruned model.
        input_shape: one input's shape (C, H, W).
        settings: device, batch, threads, AMP, channels_last; ``land_repeats`` rounds a block,
            ``land_tolerance``.
        budget: the ratio the landing aims at; None times one block.

    Returns:
        The measured latency ratio.
    """
    def ratios(d: list[float], p: list[float]) -> list[float]:
        return [b / a for a, b in zip(d, p)]

    enough = None if budget is None else lambda d, p: precise_enough(ratios(d, p), budget, settings.land_tolerance)
    d, p = paired_samples(dense, pruned, input_shape, settings, settings.land_repeats, enough=enough,
                          max_blocks=MAX_ROUND_BLOCKS)
    return float(statistics.median(ratios(d, p)))


def next_budget(tries: list[tuple[float, float]], budget: float) -> float:
    """The next table budget from the tries so far (a safeguarded secant).

    Measured latency is a step function of the channel counts on small layers (kernels change with
    the width), so an unguarded secant can leap far past the target. Once the tries bracket the
    target (a smaller table budget measured under it, a larger one over it), the next budget is the
    secant between the two nearest brackets, kept inside them (their midpoint when it would fall in
    the outer quarters); before that, the try measured nearest the target is scaled by
    ``budget / measured``.

    Args:
        tries: ``(table budget, measured ratio)`` of each try, in order.
        budget: the measured ratio aimed at.

    Returns:
        The next table budget, clamped to (0, 1].
    """
    under = [t for t in tries if t[1] < budget]
    over = [t for t in tries if t[1] > budget]
    if under and over:
        b_lo, m_lo = max(under)  # the largest table budget measured under the target
        b_hi, m_hi = min(over)  # the smallest measured over it
        if b_lo < b_hi and m_hi > m_lo:
            nxt = b_lo + (budget - m_lo) * (b_hi - b_lo) / (m_hi - m_lo)
            quarter = (b_hi - b_lo) / 4
            if not b_lo + quarter <= nxt <= b_hi - quarter:
                nxt = (b_lo + b_hi) / 2
            return min(1.0, max(1e-4, nxt))
    b0, m0 = min(tries, key=lambda t: abs(t[1] - budget))
    return min(1.0, max(1e-4, b0 * budget / m0 if m0 > 0 else b0))


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
