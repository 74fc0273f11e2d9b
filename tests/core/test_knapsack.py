"""Knapsack solver: optimality against HiGHS (scipy.optimize.milp), exact feasibility, `required`,
greedy semantics, certified bounds, edge cases and input validation."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from scipy.optimize import Bounds, LinearConstraint, milp

from kpid_core.engine.knapsack import KnapsackResult, solve, solve_detailed
from kpid_core.errors import ConfigError, InfeasibleBudgetError, UnknownNameError


def milp_optimum(values, weights, capacity, required=None) -> float:
    """Exact optimum by HiGHS (small instances only)."""
    lo = np.zeros(values.size) if required is None else required.astype(float)
    res = milp(-values, constraints=LinearConstraint(np.asarray(weights, float)[None, :], -np.inf, capacity),
               integrality=np.ones(values.size), bounds=Bounds(lo, 1),
               options={"mip_rel_gap": 0.0, "time_limit": 30})
    assert res.status == 0, res.message
    return -res.fun


def exact_weight(weights, mask) -> Fraction:
    return sum((Fraction(x) for x in np.asarray(weights)[mask].tolist()), Fraction(0))


def make_instance(rng, kind: str, n: int):
    """Random instances; the 'groups' kinds look like pruning: few classes of equal weight."""
    if kind == "int":
        w = rng.integers(1, 1000, n)
        v = rng.integers(0, 1000, n).astype(float)
    elif kind == "float":
        w = rng.uniform(0.1, 10.0, n)
        v = rng.uniform(0.0, 10.0, n)
    elif kind == "groups_int":
        cls = rng.integers(10_000, 10**8, int(rng.integers(1, 8)))
        w = cls[rng.integers(0, cls.size, n)]
        v = np.abs(rng.standard_normal(n)) * rng.uniform(0.2, 5.0)
    else:  # groups_float: costs from a linearisation
        cls = rng.uniform(1.0, 1e6, int(rng.integers(1, 8)))
        w = cls[rng.integers(0, cls.size, n)]
        v = np.abs(rng.standard_normal(n))
    return v, w, float(np.sum(w)) * rng.uniform(0.05, 0.95)


@pytest.mark.parametrize("kind", ["int", "float", "groups_int", "groups_float"])
def test_dp_matches_milp_optimum(kind):
    rng = np.random.default_rng({"int": 1, "float": 2, "groups_int": 3, "groups_float": 4}[kind])
    for trial in range(18):
        n = int(rng.integers(1, 40)) if trial < 15 else int(rng.integers(100, 300))  # small, then medium
        v, w, cap = make_instance(rng, kind, n)
        opt = milp_optimum(v, w, cap)
        res = solve_detailed(v, w, cap, method="dp")
        assert res.value >= 0.999 * opt  # the brief's bar ...
        assert res.optimal
        assert res.value == pytest.approx(opt, rel=1e-9, abs=1e-9)  # ... and in fact exact
        assert res.upper_bound >= opt * (1 - 1e-9)


def test_pruning_scale_instance_exact():
    """3,700 channels in 12 equal-cost groups, integer MACs: certified optimal; HiGHS (2 s, no
    presolve: it stalls on these) finds nothing better. The solver's time is bench/knapsack.py's."""
    rng = np.random.default_rng(7)
    sizes = rng.choice([64, 128, 256, 512], 12)
    costs = rng.integers(10**5, 10**8, 12)
    w = np.repeat(costs, sizes)
    v = np.concatenate([np.abs(rng.standard_normal(s)) * rng.lognormal(0, 0.5) for s in sizes])
    cap = 0.5 * float(w.sum())
    res = solve_detailed(v, w, cap)
    assert res.optimal and res.gap == 0.0
    ref = milp(-v, constraints=LinearConstraint(w[None, :].astype(float), -np.inf, cap),
               integrality=np.ones(v.size), bounds=Bounds(0, 1), options={"time_limit": 2, "presolve": False})
    assert ref.x is not None and res.value >= -ref.fun - 1e-9
    assert res.value <= -ref.mip_dual_bound + 1e-9
    greedy = solve_detailed(v, w, cap, method="greedy")
    assert greedy.value <= res.value <= greedy.upper_bound + 1e-9


def test_feasible_always_in_exact_arithmetic():
    rng = np.random.default_rng(11)
    for trial in range(300):
        kind = ["int", "float", "groups_int", "groups_float"][trial % 4]
        v, w, cap = make_instance(rng, kind, int(rng.integers(1, 80)))
        if trial % 3 == 0:
            cap = float(np.sort(w)[: rng.integers(1, w.size + 1)].sum())  # capacity = an exact subset sum
        req = rng.random(w.size) < 0.1
        if exact_weight(w, req) > Fraction(cap):
            req[:] = False
        for method in ("dp", "greedy"):
            mask = solve(v, w, cap, method=method, required=req)
            assert mask.dtype == np.bool_ and mask.shape == v.shape
            assert exact_weight(w, mask) <= Fraction(cap)
            # any summation order a caller may use stays within the budget too
            assert np.sum(w[mask]) <= cap and sum(w[mask][::-1].tolist()) <= cap
            assert mask[req].all()


def test_float_weights_exact_fits_and_conservative_margin():
    # Integer-valued floats (MAC counts held in a float array) are exact: a perfect fit is allowed.
    assert solve(np.ones(3), np.array([2.0, 3.0, 5.0]), 10.0).all()
    # Fractional floats: the budget shrinks by (n+2) relative ulps so any summation order fits.
    w = np.array([0.5, 0.25, 0.125, 0.125])
    assert solve(np.ones(4), w, 1.0).sum() == 3
    assert solve(np.ones(4), w, 1.0 + 1e-12).all()
    mask = solve(np.array([3.0, 2.0, 1.0]), np.array([0.1, 0.2, 0.3]), 0.3)
    # 0.1 + 0.2 > 0.3 in binary floating point, so only one item can be kept: the best one
    assert mask.tolist() == [True, False, False]


def test_large_integer_weights_exact():
    """MAC-sized integers (up to 1e8 each, capacity beyond 2**40): exact integer feasibility."""
    rng = np.random.default_rng(5)
    w = rng.integers(10**7, 10**8, 20_000) * 1000  # up to 1e11 each; totals ~1e15
    v = rng.random(w.size)
    cap = int(w.sum() // 3)
    res = solve_detailed(v, w, cap)
    assert int(w[res.mask].astype(object).sum()) <= cap
    assert res.weight == int(w[res.mask].astype(object).sum())
    greedy = solve_detailed(v, w, cap, method="greedy")
    assert greedy.value <= res.value + 1e-9 and res.value <= res.upper_bound + 1e-9


def test_required_items_are_kept_and_optimal_otherwise():
    rng = np.random.default_rng(3)
    for _ in range(10):
        v, w, cap = make_instance(rng, "groups_int", 60)
        v = v * (1 + np.arange(60) % 3)  # make the required items matter: some are poor value
        req = np.zeros(60, dtype=bool)
        req[rng.choice(60, 6, replace=False)] = True
        cap = max(cap, float(w[req].sum()))
        res = solve_detailed(v, w, cap, required=req)
        assert res.mask[req].all()
        assert res.value == pytest.approx(milp_optimum(v, w, cap, required=req), rel=1e-9)


def test_infeasible_required_raises_with_min_budget():
    w = np.array([10, 20, 30])
    req = np.array([True, True, False])
    with pytest.raises(InfeasibleBudgetError) as exc:
        solve(np.ones(3), w, 29, required=req)
    assert exc.value.min_budget == 30
    assert "capacity" in str(exc.value)
    assert solve(np.ones(3), w, 30, required=req).tolist() == [True, True, False]  # exactly enough
    with pytest.raises(InfeasibleBudgetError) as exc:
        solve(np.ones(2), np.array([0.1, 0.2]), 0.3, required=np.array([True, True]))  # 0.1+0.2 > 0.3
    assert exc.value.min_budget == pytest.approx(0.3)


def test_infeasible_budget_error_survives_copy_and_pickle():
    """Ray pickles a trial's exception and Tune copies it: both must keep the message and the bound."""
    import copy
    import pickle

    err = InfeasibleBudgetError("budget 0.2 is infeasible", 0.25)
    for clone in (copy.copy(err), pickle.loads(pickle.dumps(err))):
        assert type(clone) is InfeasibleBudgetError
        assert str(clone) == "budget 0.2 is infeasible" and clone.min_budget == 0.25


def _classic_greedy(v, w, cap):
    order = sorted(range(v.size), key=lambda i: (-v[i] / w[i], -v[i], i))
    mask, room = np.zeros(v.size, bool), cap
    for i in order:
        if w[i] <= room:
            mask[i], room = True, room - w[i]
    return mask


def test_greedy_is_the_classic_ratio_fill_and_below_dp_and_bound():
    rng = np.random.default_rng(9)
    for _ in range(100):
        v, w, cap = make_instance(rng, "int", int(rng.integers(1, 50)))
        g = solve_detailed(v, w, cap, method="greedy")
        d = solve_detailed(v, w, cap, method="dp")
        assert g.mask.tolist() == _classic_greedy(v, w, int(cap)).tolist()
        assert g.value <= d.value + 1e-9 <= d.upper_bound + 2e-9
        assert d.upper_bound <= d.lp_bound + 1e-9 and g.upper_bound == pytest.approx(g.lp_bound)
        assert g.method == "greedy" and d.method == "dp"


def test_beam_fallback_is_feasible_with_an_honest_bound():
    """Starve the exact search of states or time: the answer stays feasible and its bound stays valid."""
    rng = np.random.default_rng(21)
    n_truncated = 0
    for _ in range(10):
        v, w, cap = make_instance(rng, "float", 120)
        opt = milp_optimum(v, w, cap)
        for limits in ({"max_states": 2}, {"time_limit": 0.0}):
            res = solve_detailed(v, w, cap, **limits)
            assert exact_weight(w, res.mask) <= Fraction(cap)
            assert res.upper_bound >= opt * (1 - 1e-9)  # certified bound really bounds the optimum
            assert res.value <= opt * (1 + 1e-9)
            assert res.gap == pytest.approx((res.upper_bound - res.value) / res.upper_bound)
            assert res.value >= solve_detailed(v, w, cap, method="greedy").value - 1e-9
            n_truncated += not res.optimal
    assert n_truncated > 0  # the fallback path was exercised


@pytest.mark.parametrize("method", ["dp", "greedy"])
def test_edge_cases(method):
    v, w = np.array([3.0, 1.0, 2.0]), np.array([2, 1, 2])
    assert not solve(v, w, 0, method=method).any()  # capacity 0
    assert solve(v, w, 5, method=method).all()  # everything fits
    assert solve(v, w, 100.5, method=method).all()
    assert solve(np.array([1.0]), np.array([4.0]), 4.0, method=method).tolist() == [True]  # single item
    assert solve(np.array([1.0]), np.array([4.0]), 3.99, method=method).tolist() == [False]
    assert solve(np.zeros(0), np.zeros(0), 1.0, method=method).shape == (0,)
    r = solve_detailed(v, w, 0, method=method)
    assert isinstance(r, KnapsackResult) and r.value == 0 and r.gap == 0 and r.optimal
    assert solve(np.zeros(3), np.array([1, 1, 1]), 2, method=method).sum() <= 2  # all-zero values


def test_zero_weight_items_are_kept_for_free():
    v, w = np.array([1.0, 5.0, 0.5, 2.0]), np.array([0.0, 3.0, 0.0, 2.0])
    for method in ("dp", "greedy"):
        res = solve_detailed(v, w, 2.5, method=method)
        assert res.mask.tolist() == [True, False, True, True]
        assert res.value == pytest.approx(3.5) and res.weight == 2
    assert solve(v, w, 0.0).tolist() == [True, False, True, False]


def test_deterministic_with_ties_broken_by_index():
    v = np.ones(10)
    w = np.full(10, 3)
    for method in ("dp", "greedy"):
        assert np.flatnonzero(solve(v, w, 12, method=method)).tolist() == [0, 1, 2, 3]
    rng = np.random.default_rng(0)
    vv, ww, cap = make_instance(rng, "groups_float", 500)
    vv = np.round(vv, 1)  # many exact ties
    first = solve(vv, ww, cap)
    for _ in range(3):
        assert np.array_equal(solve(vv.copy(), ww.copy(), cap), first)


def test_input_validation_names_the_argument():
    ok_v, ok_w = np.ones(3), np.ones(3)
    cases = [
        ({"values": [1.0, np.nan, 1.0]}, "values"),
        ({"values": [1.0, -1.0, 1.0]}, "values"),
        ({"values": np.ones((3, 1))}, "values"),
        ({"weights": [1.0, -1.0, 1.0]}, "weights"),
        ({"weights": [1.0, np.inf, 1.0]}, "weights"),
        ({"weights": np.ones(4)}, "weights"),
        ({"capacity": -1.0}, "capacity"),
        ({"capacity": float("nan")}, "capacity"),
        ({"capacity": [1.0]}, "capacity"),
        ({"required": np.array([1, 0, 1])}, "required"),
        ({"required": np.ones(2, dtype=bool)}, "required"),
    ]
    for override, name in cases:
        kw = {"values": ok_v, "weights": ok_w, "capacity": 2.0} | override
        with pytest.raises(ConfigError, match=name):
            solve(**kw)
    with pytest.raises(UnknownNameError, match="greedy"):
        solve(ok_v, ok_w, 2.0, method="simplex")
