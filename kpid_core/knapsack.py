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

    ``required``: optional bool mask of items that must be kept. Raises
    :class:`InfeasibleBudgetError` when the required items alone exceed ``capacity``.
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

    ``max_states`` / ``time_limit`` (seconds, None = no limit) bound the exact search; past either
    the answer is the best mask found with ``optimal=False`` and an honest ``gap``.
    """
    t0 = time.perf_counter()
    v, w, cap, req = _validate(values, weights, capacity, method, required)
    n = v.size
    is_int = w.dtype.kind == "i"
    mask = req | (w == 0)  # weightless items (e.g. a zero linearised cost) are kept for free

    # Capacity left for the free items, in the weights' own units, never overstated.
    if is_int:
        req_w = _exact_int_sum(w[req])
        cap_int = math.floor(cap)
        if req_w > cap_int:
            raise InfeasibleBudgetError(_infeasible_msg(req_w, cap), min_budget=req_w)
        residual: float | int = cap_int - req_w
    else:
        # Shrink so that any float summation order of <= n terms stays <= capacity.
        cap_eff = cap * (1.0 - (n + 2) * 2.0**-53)
        req_w = _exact_float_sum(w[req])
        if req_w > cap:
            raise InfeasibleBudgetError(_infeasible_msg(float(req_w), cap), min_budget=float(req_w))
        residual = max(0.0, _round_down(Fraction(cap_eff) - req_w))

    free = np.flatnonzero(~mask)
    units, cap_units = _to_units(w[free], residual, is_int)
    fits = units <= cap_units
    free, units = free[fits], units[fits]
    fv = v[free]

    lp = greedy_value = 0.0
    chosen = np.zeros(free.size, dtype=bool)
    states = 0
    optimal = True
    ub_free = 0.0
    if free.size:
        # ratio desc, then value desc (keeps each equal-weight class a top-k prefix), then index
        order = np.lexsort((np.arange(free.size), -fv, -(fv / units)))
        cw = np.cumsum(units[order])
        b = int(np.searchsorted(cw, cap_units, side="right"))  # items order[:b] fit
        if b == free.size:
            chosen[:] = True
            ub_free = lp = float(fv.sum())
        else:
            chosen = _greedy_fill(units, order, b, cap_units - (int(cw[b - 1]) if b else 0))
            lam = fv[order[b]] / units[order[b]]
            lp = float(fv[order[:b]].sum() + (cap_units - (int(cw[b - 1]) if b else 0)) * lam)
            greedy_value = float(fv[chosen].sum())
            ub_free, optimal = lp, greedy_value >= lp - _REL_TOL * max(lp, 1.0)
            if method == "dp" and not optimal:
                chosen, ub_free, optimal, states = _exact_search(
                    fv, units, cap_units, order, b, lam, lp, chosen, greedy_value, max_states,
                    math.inf if time_limit is None else t0 + time_limit,
                )
            elif optimal:
                ub_free = greedy_value
    mask[free[chosen]] = True

    # Final guard: the mask is feasible in exact arithmetic (a failure here is a bug, not input).
    chosen_w = w[mask]
    if is_int:
        weight: float | int = _exact_int_sum(chosen_w)
        if weight > cap:
            raise RuntimeError("knapsack produced an infeasible mask (a bug; please report)")
    else:
        total = _exact_float_sum(chosen_w)
        if total > Fraction(cap):
            raise RuntimeError("knapsack produced an infeasible mask (a bug; please report)")
        weight = float(total)
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
    st = _build_steps(v, units, order, b, lam)
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
        found, loss, states, truncated = _search_round(st, lam, room, target, tol, max_states, deadline)
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


def _search_round(
    st: _Steps, lam: float, room: int, target: float, tol: float, max_states: int, deadline: float
):
    """Enumerate (Pareto-pruned) every choice of per-class deviations with total loss < target."""
    allowed = st.cum_pen < target + tol
    # Moves per class (allowed steps form a prefix of each (class, side) since cum_pen is sorted).
    r = np.bincount(st.step_cls[allowed & (st.step_side == 0)], minlength=st.cls_w.size)
    s = np.bincount(st.step_cls[allowed & (st.step_side == 1)], minlength=st.cls_w.size)
    active = np.flatnonzero(r + s > 0)
    if active.size == 0:
        return None, math.inf, 1, False
    # Classes with the costliest first moves first: their options die early against the bound.
    first_pen = np.minimum(
        np.where(r[active] > 0, st.cum_pen[st.start[active]], np.inf),
        np.where(s[active] > 0, st.cum_pen[np.minimum(st.start[active] + st.kstar[active],
                                                      st.step_pen.size - 1)], np.inf),
    )
    active = active[np.argsort(-first_pen, kind="stable")]
    stage_of = np.full(st.cls_w.size, -1, dtype=np.int64)
    stage_of[active] = np.arange(active.size)

    # LP of the classes still to come: each allowed step is a fractional item (weight, penalty).
    a_idx = np.flatnonzero(allowed)
    a_w = st.cls_w[st.step_cls[a_idx]].astype(np.float64)
    a_rate = st.step_pen[a_idx] / a_w
    a_stage = stage_of[st.step_cls[a_idx]]
    a_side = st.step_side[a_idx]
    rate_order = np.lexsort((a_rate,))
    a_w, a_rate, a_stage, a_side = a_w[rate_order], a_rate[rate_order], a_stage[rate_order], a_side[rate_order]
    a_pen = a_rate * a_w

    dw = np.zeros(1, dtype=np.int64)
    pen = np.zeros(1)
    val = np.zeros(1)
    prev_bound = np.zeros(1)
    parents: list[np.ndarray] = []
    moves: list[np.ndarray] = []
    max_seen, truncated = 1, False
    for k, c in enumerate(active.tolist()):
        base = int(st.start[c])
        ks = int(st.kstar[c])
        ri, si = int(r[c]), int(s[c])
        # options: delta = -ri..si
        d = np.arange(-ri, si + 1)
        opt_pen = np.zeros(d.size)
        opt_val = np.zeros(d.size)
        if ri:
            opt_pen[:ri] = st.cum_pen[base : base + ri][::-1]
            opt_val[:ri] = st.cum_val[base : base + ri][::-1]
        if si:
            opt_pen[ri + 1 :] = st.cum_pen[base + ks : base + ks + si]
            opt_val[ri + 1 :] = st.cum_val[base + ks : base + ks + si]
        opt_w = d.astype(np.int64) * int(st.cls_w[c])
        if time.perf_counter() > deadline:  # out of time: finish this round as a narrow beam
            max_states = min(max_states, _LATE_STATES)
        cap_in = max(1, (_EXPANSION * max_states) // d.size)
        if dw.size > cap_in:  # bound the expansion's memory: keep the most promising states
            truncated = True
            o = np.sort(np.argsort(prev_bound, kind="stable")[:cap_in])
            dw, pen, val = dw[o], pen[o], val[o]
            parents[-1], moves[-1] = parents[-1][o], moves[-1][o]
        ndw = (dw[:, None] + opt_w[None, :]).ravel()
        npen = (pen[:, None] + opt_pen[None, :]).ravel()
        nval = (val[:, None] + opt_val[None, :]).ravel()
        idx = np.arange(ndw.size)
        bound = npen + _future_cost(ndw, room, lam, a_w, a_pen, a_rate, a_stage, a_side, k)
        keep = bound < target + tol
        ndw, npen, nval, idx, bound = ndw[keep], npen[keep], nval[keep], idx[keep], bound[keep]
        if ndw.size:
            # Pareto filter: a state is kept only if no lighter-or-equal state has at least its value.
            o = np.lexsort((idx, -nval, ndw))
            ndw, npen, nval, idx, bound = ndw[o], npen[o], nval[o], idx[o], bound[o]
            run = np.maximum.accumulate(nval)
            keep = np.ones(ndw.size, dtype=bool)
            keep[1:] = nval[1:] > run[:-1]
            ndw, npen, nval, idx, bound = ndw[keep], npen[keep], nval[keep], idx[keep], bound[keep]
        if ndw.size > max_states:
            truncated = True
            o = np.sort(np.argsort(bound, kind="stable")[:max_states])
            ndw, npen, nval, idx, bound = ndw[o], npen[o], nval[o], idx[o], bound[o]
        max_seen = max(max_seen, int(ndw.size))
        parents.append(idx // d.size)
        moves.append(d[idx % d.size])
        dw, pen, val, prev_bound = ndw, npen, nval, bound
        if dw.size == 0:
            return None, math.inf, max_seen, truncated
    feasible = dw <= room
    if not feasible.any():
        return None, math.inf, max_seen, truncated
    loss = np.where(feasible, pen + lam * (room - dw).astype(np.float64), np.inf)
    j = int(np.argmin(loss))
    best_loss = float(loss[j])
    # Walk back through the stages to the per-class deviations.
    counts = st.kstar.copy()
    for k in range(active.size - 1, -1, -1):
        counts[active[k]] += int(moves[k][j])
        j = int(parents[k][j])
    chosen = np.zeros(st.srt.size, dtype=bool)
    keep_sorted = (np.arange(st.srt.size) - np.repeat(st.start, st.count)) < np.repeat(counts, st.count)
    chosen[st.srt[keep_sorted]] = True
    return chosen, best_loss, max_seen, truncated


def _future_cost(dw, room, lam, a_w, a_pen, a_rate, a_stage, a_side, k):
    """Least loss the classes after stage ``k`` must add, from their LP relaxation."""
    later = a_stage > k
    out = np.empty(dw.size)
    slack = room - dw
    under = slack >= 0
    # Slack left: fill it with additions (cheapest rate first); what stays empty costs lam per unit.
    sel = later & (a_side == 1)
    out[under] = _fill_cost(slack[under].astype(np.float64), a_w[sel], a_pen[sel], a_rate[sel], lam)
    # Over capacity: later classes must give back weight (removals); impossible -> inf.
    sel = later & (a_side == 0)
    out[~under] = _fill_cost((-slack[~under]).astype(np.float64), a_w[sel], a_pen[sel], a_rate[sel], math.inf)
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
