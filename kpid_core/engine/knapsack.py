"""0/1 knapsack for channel allocation: keep the channels whose importance is worth their MACs.

Items are channels; ``values`` are importance scores (>= 0), ``weights`` the MACs each channel
costs (>= 0, integers or floats; a weightless item is always kept), ``capacity`` the MAC budget:

* ``"greedy"`` — the classic value/weight order, then every later item that still fits.
* ``"dp"`` — the exact optimum, certified. Pruning instances have few distinct weights (every
  channel of a group costs the same after linearisation), so items fall into *classes* of equal
  weight, and within a class only "keep the top-k by value" matters. The solver starts from the
  greedy solution x* and the Dantzig/LP bound ``L`` with the break ratio ``lam``. Every solution
  ``x`` satisfies ``value(x) = L - sum(penalties of the items where x differs from x*) - lam*slack``
  where an item's penalty is its reduced cost ``|v - lam*w|`` (Lagrangian identity). A solution
  better than a target must therefore lose less than ``G'`` in total, which limits each class to
  a few deviations ``delta`` around its LP count; a Pareto list of (weight, value) states over the
  classes, pruned with an LP bound on the classes still to come, enumerates every such solution.
  Targets ``G'`` grow geometrically up to the greedy gap: a search that finds a solution below
  ``G'`` proves it optimal; one that finds none proves ``OPT <= L - G'`` (a certified bound). If a
  search needs more than ``max_states`` states, or runs past ``time_limit`` seconds, it keeps the
  most promising states (a beam; never infeasible) and the result reports ``optimal=False`` with
  the certified gap.

Feasibility is exact: integer weights are summed as integers; float weights are rounded UP to
integer units of ``2**-40`` of the capacity (a power of two, so the rounding itself is exact) and
the capacity is first shrunk by ``(n+1)`` units in the last place, so that summing the chosen
float weights in any order still stays within the budget. "Optimal" therefore means optimal for
the rounded weights: exact for integer weights (below a capacity of 2**41; larger integer weights
are rounded up like floats), within ``n * 2**-40`` of the capacity for floats.
"""

from __future__ import annotations

import math
import time
from fractions import Fraction
from typing import NamedTuple

import numpy as np

from kpid_core.errors import ConfigError, InfeasibleBudgetError, UnknownNameError

__all__ = ["MAX_STATES", "METHODS", "TIME_LIMIT", "KnapsackResult", "solve", "solve_detailed"]

METHODS = ("dp", "greedy")
MAX_STATES = 200_000  # states kept per class of the exact search before it turns into a beam
TIME_LIMIT = 5.0  # seconds of exact search before it turns into a (fast, narrow) beam
_EXPANSION = 5  # at most _EXPANSION * max_states candidate states per class (memory: ~50 MB)
_LATE_STATES = 1_000  # beam width once the time limit has passed
_UNIT_BITS = 40  # float weights are rounded up to capacity * 2**-40 (sums stay < 2**62 in int64)
_REL_TOL = 1e-12  # relative slack for float comparisons of VALUES (never of weights)
_TARGET_STEPS = (2.0**-12, 2.0**-9, 2.0**-6, 2.0**-3, 1.0)  # fractions of the greedy gap tried


class KnapsackResult(NamedTuple):
    """Outcome of one solve.

    ``mask``: bool per item (chosen). ``value``: sum of chosen values. ``weight``: sum of chosen
    weights (int for integer weights). ``upper_bound``: certified bound on the optimum (equal to
    ``value`` when ``optimal``). ``gap = (upper_bound - value) / upper_bound`` (0 when the bound
    is 0). ``seconds``: wall time of the solve. ``lp_bound``: the Dantzig (LP relaxation) bound.
    ``states``: the largest state list the exact search held (0 when it did not run).
    """

    mask: np.ndarray
    value: float
    weight: float | int
    upper_bound: float
    gap: float
    method: str
    seconds: float
    optimal: bool
    lp_bound: float = math.nan
    states: int = 0


def solve(values, weights, capacity, method: str = "dp", required=None) -> np.ndarray:
    """Bool mask of the items to keep: max sum(values) s.t. sum(weights) <= capacity.

    Args:
        values: one finite value per item (1-D).
        weights: one non-negative weight per item, integers or floats (1-D, same length).
        capacity: the largest total weight allowed (≥ 0).
        method: ``dp`` (certified exact, see :func:`solve_detailed`) or ``greedy`` (by value per weight).
        required: optional bool mask of items that must be kept.

    Returns:
        A bool array, True for the kept items; their weights sum to at most ``capacity``.

    Raises:
        InfeasibleBudgetError: the required items alone exceed ``capacity``.
        ConfigError, UnknownNameError: malformed inputs or an unknown ``method``.
    """
    return solve_detailed(values, weights, capacity, method=method, required=required).mask


def solve_detailed(
    values,
    weights,
    capacity,
    method: str = "dp",
    required=None,
    *,
    max_states: int = MAX_STATES,
    time_limit: float | None = TIME_LIMIT,
) -> KnapsackResult:
    """Like :func:`solve` but returns a :class:`KnapsackResult` with bound, gap and timing.

    Args:
        values, weights, capacity, method, required: as for :func:`solve`.
        max_states: states kept per class by the exact search before it turns into a beam.
        time_limit: seconds of exact search (None = no limit).

    Returns:
        The mask with its value, weight and a certified upper bound; past either limit the answer
        is the best mask found with ``optimal=False`` and an honest ``gap``.

    Raises:
        As :func:`solve`.
    """
    t0 = time.perf_counter()
    v, w, cap, req = _validate(values, weights, capacity, method, required)
    is_int = w.dtype.kind == "i"
    mask = req | (w == 0)  # weightless items (e.g. a zero linearised cost) are kept for free
    residual = _residual_capacity(w, req, cap, is_int)
    free = np.flatnonzero(~mask)
    units, cap_units = _to_units(w[free], residual, is_int)
    fits = units <= cap_units
    free, units = free[fits], units[fits]
    deadline = math.inf if time_limit is None else t0 + time_limit
    chosen, lp, ub_free, optimal, states = _solve_free(v[free], units, cap_units, method, max_states, deadline)
    mask[free[chosen]] = True

    weight = _checked_weight(w[mask], cap, is_int)
    value = math.fsum(v[mask].tolist())
    req_value = math.fsum(v[req | (w == 0)].tolist())
    upper = max(value, req_value + ub_free) if not optimal else value
    lp_bound = req_value + lp if free.size else value
    gap = (upper - value) / upper if upper > 0 else 0.0
    return KnapsackResult(
        mask=mask, value=value, weight=weight, upper_bound=upper, gap=max(gap, 0.0), method=method,
        seconds=time.perf_counter() - t0, optimal=bool(optimal), lp_bound=max(lp_bound, value),
        states=states,
    )


def _residual_capacity(w: np.ndarray, req: np.ndarray, cap: float, is_int: bool) -> float | int:
    """Capacity left for the free items once the required ones are in, in the weights' own units,
    never overstated; raises :class:`InfeasibleBudgetError` when the required items do not fit."""
    if is_int:
        req_w = _exact_int_sum(w[req])
        cap_int = math.floor(cap)
        if req_w > cap_int:
            raise InfeasibleBudgetError(_infeasible_msg(req_w, cap), min_budget=req_w)
        return cap_int - req_w
    # Shrink so that any float summation order of <= n terms stays <= capacity.
    cap_eff = cap * (1.0 - (w.size + 2) * 2.0**-53)
    req_w = _exact_float_sum(w[req])
    if req_w > cap:
        raise InfeasibleBudgetError(_infeasible_msg(float(req_w), cap), min_budget=float(req_w))
    return max(0.0, _round_down(Fraction(cap_eff) - req_w))


def _solve_free(fv: np.ndarray, units: np.ndarray, cap_units: int, method: str, max_states: int,
                deadline: float) -> tuple[np.ndarray, float, float, bool, int]:
    """The knapsack over the free items (integer weights ``units``, each ≤ ``cap_units``).

    Returns ``(chosen, lp, upper bound, optimal, states)``: the chosen mask, the Dantzig bound, a
    certified bound on the optimum, whether ``chosen`` is proven optimal, and the exact search's
    largest state list (0 when it did not run)."""
    chosen = np.zeros(fv.size, dtype=bool)
    if not fv.size:
        return chosen, 0.0, 0.0, True, 0
    # ratio desc, then value desc (keeps each equal-weight class a top-k prefix), then index
    order = np.lexsort((np.arange(fv.size), -fv, -(fv / units)))
    cw = np.cumsum(units[order])
    b = int(np.searchsorted(cw, cap_units, side="right"))  # items order[:b] fit
    if b == fv.size:
        chosen[:] = True
        lp = float(fv.sum())
        return chosen, lp, lp, True, 0
    room = cap_units - (int(cw[b - 1]) if b else 0)
    chosen = _greedy_fill(units, order, b, room)
    lam = fv[order[b]] / units[order[b]]
    lp = float(fv[order[:b]].sum() + room * lam)
    greedy_value = float(fv[chosen].sum())
    optimal = greedy_value >= lp - _REL_TOL * max(lp, 1.0)
    if optimal:
        return chosen, lp, greedy_value, True, 0
    if method != "dp":
        return chosen, lp, lp, False, 0
    chosen, ub, optimal, states = _exact_search(fv, units, cap_units, order, b, lam, lp, chosen, greedy_value,
                                                max_states, deadline)
    return chosen, lp, ub, optimal, states


def _checked_weight(chosen_w: np.ndarray, cap: float, is_int: bool) -> float | int:
    """The chosen items' total weight, checked in exact arithmetic (a failure here is a bug)."""
    if is_int:
        weight = _exact_int_sum(chosen_w)
        if weight > cap:
            raise RuntimeError("knapsack produced an infeasible mask (a bug; please report)")
        return weight
    total = _exact_float_sum(chosen_w)
    if total > Fraction(cap):
        raise RuntimeError("knapsack produced an infeasible mask (a bug; please report)")
    return float(total)


# ----------------------------------------------------------------------------------------------
# input handling and exact weight arithmetic


def _validate(values, weights, capacity, method, required):
    if method not in METHODS:
        raise UnknownNameError(f"method={method!r} is not a knapsack method; allowed: {', '.join(METHODS)}")
    v = np.asarray(values)
    if v.ndim != 1:
        raise ConfigError(f"values: expected a 1-D array, got shape {v.shape}")
    if v.dtype.kind not in "fiu":
        raise ConfigError(f"values: expected real numbers, got dtype {v.dtype}")
    v = v.astype(np.float64)
    if not np.isfinite(v).all():
        raise ConfigError("values: must be finite (found NaN or inf)")
    if (v < 0).any():
        raise ConfigError(f"values: must be >= 0 (found {v.min()!r})")
    w = np.asarray(weights)
    if w.shape != v.shape:
        raise ConfigError(f"weights: expected shape {v.shape} like values, got {w.shape}")
    if w.dtype.kind in "iu":
        if w.size and w.dtype.kind == "u" and w.max() > np.iinfo(np.int64).max:
            raise ConfigError("weights: integer weights must be < 2**63")
        w = w.astype(np.int64)
    elif w.dtype.kind == "f":
        w = w.astype(np.float64)
        if not np.isfinite(w).all():
            raise ConfigError("weights: must be finite (found NaN or inf)")
        if w.size and (w == np.floor(w)).all() and 0 <= w.min() and w.sum() < 2.0**53:
            w = w.astype(np.int64)  # MAC counts stored as floats: exact integer arithmetic applies
    else:
        raise ConfigError(f"weights: expected integers or floats, got dtype {w.dtype}")
    if w.size and (w < 0).any():
        raise ConfigError(f"weights: must be >= 0 (found {w.min()!r})")
    if np.ndim(capacity) != 0 or isinstance(capacity, (bool, np.bool_)):
        raise ConfigError(f"capacity: expected a number, got {capacity!r}")
    try:
        cap = float(capacity)
    except (TypeError, ValueError):
        raise ConfigError(f"capacity: expected a number, got {capacity!r}") from None
    if not math.isfinite(cap) or cap < 0:
        raise ConfigError(f"capacity: must be finite and >= 0, got {capacity!r}")
    if isinstance(capacity, (int, np.integer)) and w.dtype.kind == "i":
        cap = int(capacity)  # keep huge integer budgets exact
    if required is None:
        req = np.zeros(v.shape, dtype=bool)
    else:
        req = np.asarray(required)
        if req.dtype != np.bool_ or req.shape != v.shape:
            raise ConfigError(
                f"required: expected a bool mask of shape {v.shape}, got dtype {req.dtype} shape {req.shape}"
            )
        req = req.copy()
    return v, w, cap, req


def _infeasible_msg(req_w, cap) -> str:
    return (
        f"capacity={cap!r}: the required items alone weigh {req_w!r}; "
        f"the budget must be at least that (lower the per-group floor or raise the budget)"
    )


def _exact_int_sum(x: np.ndarray) -> int:
    """Sum of int64 weights without overflow (int64 when it provably fits, Python ints otherwise)."""
    if x.size == 0:
        return 0
    if int(x.max()) <= (2**62) // x.size:
        return int(x.sum())
    return int(x.sum(dtype=object))


def _exact_float_sum(x: np.ndarray) -> Fraction:
    """Exact sum of float64s (math.fsum is correctly rounded; exactness matters only at ties)."""
    if x.size == 0:
        return Fraction(0)
    return sum((Fraction(t) for t in x.tolist()), Fraction(0)) if x.size <= 64 else _dyadic_sum(x)


def _dyadic_sum(x: np.ndarray) -> Fraction:
    """Exact sum of many float64s: mantissa * 2**exp, summed as Python ints per exponent."""
    mant, exp = np.frexp(x)
    m = np.ldexp(mant, 53).astype(np.int64)  # exact: 53-bit integer mantissas
    e = exp.astype(np.int64) - 53
    e0 = int(e.min())
    total = 0
    for ex in np.unique(e).tolist():
        total += int(m[e == ex].sum(dtype=object)) << (ex - e0)
    return Fraction(total) * Fraction(2) ** e0


def _round_down(x: Fraction) -> float:
    f = float(x)
    return f if Fraction(f) <= x else float(np.nextafter(f, -math.inf))


def _to_units(w: np.ndarray, residual, is_int: bool) -> tuple[np.ndarray, int]:
    """Integer weights (rounded UP) and capacity (rounded DOWN) for the search, in int64 units."""
    if residual <= 0 or w.size == 0:
        return np.ones(w.size, dtype=np.int64), 0
    if is_int:
        shift = max(0, int(residual).bit_length() - 1 - _UNIT_BITS)
        if shift == 0:
            return w.astype(np.int64), int(residual)
        return ((w - 1) >> shift) + 1, int(residual) >> shift  # ceil-divide by 2**shift
    exp = math.frexp(residual)[1] - 1 - _UNIT_BITS  # residual / 2**exp in [2**40, 2**41)
    cap_units = math.floor(math.ldexp(residual, -exp))
    big = w > residual  # cannot fit; keep them out of int64 range trouble
    scaled = np.ceil(np.ldexp(np.where(big, residual, w), -exp))  # power-of-two scaling: exact
    units = scaled.astype(np.int64)
    units[big] = cap_units + 1
    return units, cap_units


# ----------------------------------------------------------------------------------------------
# greedy and the exact search


def _greedy_fill(units: np.ndarray, order: np.ndarray, b: int, room: int) -> np.ndarray:
    """Greedy prefix order[:b] plus every later item (in ratio order) that still fits."""
    chosen = np.zeros(units.size, dtype=bool)
    chosen[order[:b]] = True
    rest = order[b + 1 :]
    rw = units[rest]
    while room > 0 and rest.size:
        hit = np.flatnonzero(rw <= room)
        if hit.size == 0:
            break
        j = int(hit[0])
        chosen[rest[j]] = True
        room -= int(rw[j])
        rest, rw = rest[j + 1 :], rw[j + 1 :]
    return chosen


class _Steps(NamedTuple):
    """Per class, the moves away from the LP solution x*, one item at a time, cheapest first."""

    cls_w: np.ndarray  # weight (units) of each class
    start: np.ndarray  # first position of each class in ``srt``
    kstar: np.ndarray  # items of each class in x*
    count: np.ndarray  # items per class
    srt: np.ndarray  # free items by (class, value desc, index)
    # step arrays, ordered by (class, side, step); side 0 = remove from x*, 1 = add to x*
    step_cls: np.ndarray
    step_side: np.ndarray
    step_pen: np.ndarray  # reduced cost of this one step (>= 0)
    cum_pen: np.ndarray  # penalty of all steps up to this one within (class, side)
    cum_val: np.ndarray  # value change of all steps up to this one (negative for removals)


def _build_steps(v, units, order, b, lam) -> _Steps:
    n = v.size
    cls_w, cls = np.unique(units, return_inverse=True)
    m = cls_w.size
    srt = np.lexsort((np.arange(n), -v, cls))
    cls_s = cls[srt]
    count = np.bincount(cls, minlength=m)
    start = np.concatenate(([0], np.cumsum(count)[:-1]))
    in_x = np.zeros(n, dtype=bool)
    in_x[order[:b]] = True
    kstar = np.bincount(cls[order[:b]], minlength=m)
    pos = np.arange(n) - start[cls_s]
    ks = kstar[cls_s]
    inside = pos < ks
    # Greedy prefix within a class is its top-k by value (same weight; ties by index), so removal
    # steps run from the k*-th best downwards and addition steps from the (k*+1)-th best onwards.
    new_pos = np.where(inside, start[cls_s] + ks - 1 - pos, np.arange(n))
    step_item = np.empty(n, dtype=np.int64)
    step_item[new_pos] = srt
    sc = cls[step_item]
    side = (~in_x[step_item]).astype(np.int8)
    sv = v[step_item]
    rc = sv - lam * cls_w[sc].astype(np.float64)
    pen = np.where(side == 0, np.maximum(rc, 0.0), np.maximum(-rc, 0.0))
    dval = np.where(side == 0, -sv, sv)
    seg = sc * 2 + side
    first = np.ones(n, dtype=bool)
    first[1:] = seg[1:] != seg[:-1]
    cum_pen = _segmented_cumsum(pen, first)
    cum_val = _segmented_cumsum(dval, first)
    return _Steps(cls_w, start, kstar, count, srt, sc, side, pen, cum_pen, cum_val)


def _segmented_cumsum(x: np.ndarray, first: np.ndarray) -> np.ndarray:
    c = np.cumsum(x)
    base = (c - x)[first]
    return c - base[np.cumsum(first) - 1]


def _exact_search(v, units, cap, order, b, lam, lp, incumbent, inc_value, max_states, deadline):
    """Exact search over per-class deviations from x*; returns (chosen, upper bound, optimal, states)."""
    steps = _build_steps(v, units, order, b, lam)
    room = cap - int(units[order[:b]].sum())  # slack of x* (>= 0)
    tol = _REL_TOL * max(lp, 1.0)
    best_loss = lp - inc_value  # loss of the incumbent (greedy) w.r.t. the LP bound
    best = incumbent
    certified = 0.0  # OPT <= lp - certified
    max_seen = 0
    for frac in _TARGET_STEPS:
        target = best_loss * frac
        if target <= certified:
            continue
        if time.perf_counter() > deadline:
            break
        found, loss, states, truncated = _search_round(steps, lam, room, target, tol, max_states, deadline)
        max_seen = max(max_seen, states)
        if found is not None and loss < best_loss:
            best, best_loss = found, loss
        if truncated:
            break
        if found is not None and loss < target - tol:
            return best, lp - best_loss, True, max_seen  # every better solution was enumerated
        certified = target
        if frac == 1.0:
            return best, lp - best_loss, True, max_seen  # nothing beats the incumbent
    return best, lp - certified, best_loss <= certified + tol, max_seen


class _FutureItems(NamedTuple):
    """The allowed steps of the classes still to come, as fractional LP items sorted by rate."""

    w: np.ndarray
    pen: np.ndarray
    rate: np.ndarray
    stage: np.ndarray
    side: np.ndarray


def _search_round(
    steps: _Steps, lam: float, room: int, target: float, tol: float, max_states: int, deadline: float
):
    """Enumerate (Pareto-pruned) every choice of per-class deviations with total loss < target.

    Returns ``(chosen mask or None, its loss, largest state list, truncated)``."""
    allowed = steps.cum_pen < target + tol
    # Moves per class (allowed steps form a prefix of each (class, side) since cum_pen is sorted).
    n_remove = np.bincount(steps.step_cls[allowed & (steps.step_side == 0)], minlength=steps.cls_w.size)
    n_add = np.bincount(steps.step_cls[allowed & (steps.step_side == 1)], minlength=steps.cls_w.size)
    active = _stage_order(steps, n_remove, n_add)
    if active.size == 0:
        return None, math.inf, 1, False
    future = _future_items(steps, allowed, active)

    dw = np.zeros(1, dtype=np.int64)  # weight change of each state w.r.t. x*
    pen = np.zeros(1)
    val = np.zeros(1)
    prev_bound = np.zeros(1)
    parents: list[np.ndarray] = []
    moves: list[np.ndarray] = []
    max_seen, truncated = 1, False
    for k, c in enumerate(active.tolist()):
        deltas, opt_pen, opt_val, opt_w = _class_options(steps, c, int(n_remove[c]), int(n_add[c]))
        if time.perf_counter() > deadline:  # out of time: finish this round as a narrow beam
            max_states = min(max_states, _LATE_STATES)
        cap_in = max(1, (_EXPANSION * max_states) // deltas.size)
        if dw.size > cap_in:  # bound the expansion's memory: keep the most promising states
            truncated = True
            o = np.sort(np.argsort(prev_bound, kind="stable")[:cap_in])
            dw, pen, val = dw[o], pen[o], val[o]
            parents[-1], moves[-1] = parents[-1][o], moves[-1][o]
        ndw = (dw[:, None] + opt_w[None, :]).ravel()
        npen = (pen[:, None] + opt_pen[None, :]).ravel()
        nval = (val[:, None] + opt_val[None, :]).ravel()
        bound = npen + _future_cost(ndw, room, lam, future, k)
        ndw, npen, nval, idx, bound = _prune_states(ndw, npen, nval, bound, target + tol)
        if ndw.size > max_states:
            truncated = True
            o = np.sort(np.argsort(bound, kind="stable")[:max_states])
            ndw, npen, nval, idx, bound = ndw[o], npen[o], nval[o], idx[o], bound[o]
        max_seen = max(max_seen, int(ndw.size))
        parents.append(idx // deltas.size)
        moves.append(deltas[idx % deltas.size])
        dw, pen, val, prev_bound = ndw, npen, nval, bound
        if dw.size == 0:
            return None, math.inf, max_seen, truncated
    feasible = dw <= room
    if not feasible.any():
        return None, math.inf, max_seen, truncated
    loss = np.where(feasible, pen + lam * (room - dw).astype(np.float64), np.inf)
    j = int(np.argmin(loss))
    return _walk_back(steps, active, parents, moves, j), float(loss[j]), max_seen, truncated


def _stage_order(steps: _Steps, n_remove: np.ndarray, n_add: np.ndarray) -> np.ndarray:
    """The classes with any allowed move, costliest first move first (their options die early
    against the bound)."""
    active = np.flatnonzero(n_remove + n_add > 0)
    first_pen = np.minimum(
        np.where(n_remove[active] > 0, steps.cum_pen[steps.start[active]], np.inf),
        np.where(n_add[active] > 0, steps.cum_pen[np.minimum(steps.start[active] + steps.kstar[active],
                                                             steps.step_pen.size - 1)], np.inf),
    )
    return active[np.argsort(-first_pen, kind="stable")]


def _future_items(steps: _Steps, allowed: np.ndarray, active: np.ndarray) -> _FutureItems:
    """LP of the classes still to come: each allowed step is a fractional item (weight, penalty),
    tagged with its class's stage in ``active`` and its side (0 remove, 1 add)."""
    stage_of = np.full(steps.cls_w.size, -1, dtype=np.int64)
    stage_of[active] = np.arange(active.size)
    a_idx = np.flatnonzero(allowed)
    w = steps.cls_w[steps.step_cls[a_idx]].astype(np.float64)
    rate = steps.step_pen[a_idx] / w
    o = np.lexsort((rate,))
    w, rate = w[o], rate[o]
    return _FutureItems(w, rate * w, rate, stage_of[steps.step_cls[a_idx]][o], steps.step_side[a_idx][o])


def _class_options(steps: _Steps, c: int, n_remove: int, n_add: int):
    """Class ``c``'s options: deviations ``-n_remove .. n_add`` from its count in x*, with the
    penalty, value and weight change of each."""
    base, kstar = int(steps.start[c]), int(steps.kstar[c])
    deltas = np.arange(-n_remove, n_add + 1)
    opt_pen = np.zeros(deltas.size)
    opt_val = np.zeros(deltas.size)
    if n_remove:
        opt_pen[:n_remove] = steps.cum_pen[base : base + n_remove][::-1]
        opt_val[:n_remove] = steps.cum_val[base : base + n_remove][::-1]
    if n_add:
        opt_pen[n_remove + 1 :] = steps.cum_pen[base + kstar : base + kstar + n_add]
        opt_val[n_remove + 1 :] = steps.cum_val[base + kstar : base + kstar + n_add]
    return deltas, opt_pen, opt_val, deltas.astype(np.int64) * int(steps.cls_w[c])


def _prune_states(dw, pen, val, bound, limit):
    """Drop states whose bound reaches ``limit``, then Pareto-filter: a state is kept only if no
    lighter-or-equal state has at least its value. Returns the survivors and their indices."""
    idx = np.arange(dw.size)
    keep = bound < limit
    dw, pen, val, idx, bound = dw[keep], pen[keep], val[keep], idx[keep], bound[keep]
    if dw.size:
        o = np.lexsort((idx, -val, dw))
        dw, pen, val, idx, bound = dw[o], pen[o], val[o], idx[o], bound[o]
        run = np.maximum.accumulate(val)
        keep = np.ones(dw.size, dtype=bool)
        keep[1:] = val[1:] > run[:-1]
        dw, pen, val, idx, bound = dw[keep], pen[keep], val[keep], idx[keep], bound[keep]
    return dw, pen, val, idx, bound


def _walk_back(steps: _Steps, active: np.ndarray, parents: list, moves: list, j: int) -> np.ndarray:
    """The item mask of final state ``j``: walk back through the stages to the per-class counts."""
    counts = steps.kstar.copy()
    for k in range(active.size - 1, -1, -1):
        counts[active[k]] += int(moves[k][j])
        j = int(parents[k][j])
    chosen = np.zeros(steps.srt.size, dtype=bool)
    keep_sorted = (np.arange(steps.srt.size) - np.repeat(steps.start, steps.count)) < np.repeat(counts, steps.count)
    chosen[steps.srt[keep_sorted]] = True
    return chosen


def _future_cost(dw, room, lam, future: _FutureItems, k):
    """Least loss the classes after stage ``k`` must add, from their LP relaxation."""
    later = future.stage > k
    out = np.empty(dw.size)
    slack = room - dw
    under = slack >= 0
    # Slack left: fill it with additions (cheapest rate first); what stays empty costs lam per unit.
    sel = later & (future.side == 1)
    out[under] = _fill_cost(slack[under].astype(np.float64), future.w[sel], future.pen[sel], future.rate[sel], lam)
    # Over capacity: later classes must give back weight (removals); impossible -> inf.
    sel = later & (future.side == 0)
    out[~under] = _fill_cost((-slack[~under]).astype(np.float64), future.w[sel], future.pen[sel], future.rate[sel],
                             math.inf)
    return out


def _fill_cost(amount, w, pen, rate, tail_rate):
    if amount.size == 0:
        return amount
    if w.size == 0:
        return np.where(amount > 0, amount * tail_rate if math.isfinite(tail_rate) else np.inf, 0.0)
    cw = np.cumsum(w)
    cp = np.cumsum(pen)
    t = np.searchsorted(cw, amount, side="left")
    inside = t < w.size
    tt = np.minimum(t, w.size - 1)
    prev_w = np.where(tt > 0, cw[tt - 1], 0.0)
    prev_p = np.where(tt > 0, cp[tt - 1], 0.0)
    cost = prev_p + (amount - prev_w) * rate[tt]
    over = amount - cw[-1]
    tail = cp[-1] + (over * tail_rate if math.isfinite(tail_rate) else np.inf)
    return np.where(inside, cost, tail)
