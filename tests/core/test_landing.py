"""Landing a latency budget on measured latency (kpid_core.engine.landing): the loop with stand-in
pruning and measuring, and prune_to_budget with a synthetic table and a stand-in measurement that
errs the way a real table does (an affine error). No timing is asserted anywhere."""

from __future__ import annotations

import copy

import pytest
import torch

from kpid_core.engine.groups import find_groups
from kpid_core.engine.landing import land, next_budget
from kpid_core.engine.macs import count_macs
from kpid_core.errors import ConfigError, InfeasibleBudgetError
from kpid_core.models import build_model
from kpid_core.prune import prune_to_budget
from tests.core.test_cost import _synthetic_table


def _affine(b: float) -> float:
    """A table that under-predicts: the network measures 0.08 + 1.15 × what was asked of the table."""
    return 0.08 + 1.15 * b


def test_the_loop_lands_within_the_tolerance_and_keeps_the_nearest_try():
    calls: list[float] = []
    result, history = land(lambda b: calls.append(b) or b, _affine, 0.5, rounds=3, tolerance=0.02)
    assert abs(_affine(result) / 0.5 - 1) <= 0.02
    # 0.655 measured, then 0.519 (scaled: 3.8 % over), then 0.503 (scaled again): it stops there
    assert len(history) == len(calls) == 3 and history[0]["table_budget"] == 0.5
    assert [h["kept"] for h in history].count(True) == 1
    kept = next(h for h in history if h["kept"])
    assert kept["table_budget"] == pytest.approx(result, abs=1e-6)
    assert kept["measured"] == min((h["measured"] for h in history), key=lambda m: abs(m - 0.5))


def test_no_rounds_keeps_the_table_allocation_unmeasured():
    def measure(_):
        raise AssertionError("measured with rounds=0")

    assert land(lambda b: b, measure, 0.5, rounds=0, tolerance=0.02) == (0.5, [])


def test_noisy_measurements_end_at_the_round_limit_with_the_nearest_try():
    noise = iter([1.2, 0.9, 1.1, 0.95, 1.3])
    result, history = land(lambda b: b, lambda b: b * next(noise), 0.5, rounds=3, tolerance=0.01)
    assert len(history) == 4  # the first try and three corrections
    best = min(history, key=lambda h: abs(h["measured"] - 0.5))
    assert best["kept"] and result == pytest.approx(best["table_budget"], abs=1e-6)


def test_a_correction_the_floors_cannot_meet_ends_the_loop():
    def prune_at(b):
        if b < 0.45:
            raise InfeasibleBudgetError("floors", 0.45)
        return b

    result, history = land(prune_at, lambda b: b * 1.2, 0.5, rounds=3, tolerance=0.02)
    assert result == 0.5 and len(history) == 1 and history[0]["kept"]
    with pytest.raises(InfeasibleBudgetError):  # the first try's refusal is the caller's
        land(prune_at, lambda b: b, 0.4, rounds=3, tolerance=0.02)


def test_next_budget_scales_until_bracketed_then_follows_the_secant_inside_the_bracket():
    assert next_budget([(0.5, 0.6)], 0.5) == pytest.approx(0.5 * 0.5 / 0.6)
    # both over the target: no bracket, so the nearest is scaled (no secant leap outside the tries)
    assert next_budget([(0.5, 0.655), (0.4, 0.54)], 0.5) == pytest.approx(0.4 * 0.5 / 0.54)
    # bracketed, on the line m = 0.08 + 1.15 b: the secant hits the target exactly
    tries = [(b, _affine(b)) for b in (0.5, 0.3)]
    assert _affine(next_budget(tries, 0.5)) == pytest.approx(0.5)
    # a step function: the secant would land near an end of the bracket, so the midpoint is taken
    assert next_budget([(0.50, 0.70), (0.48, 0.46)], 0.58) == pytest.approx(0.49)
    # an inconsistent "bracket" (a smaller budget measured slower): back to scaling the nearest
    assert next_budget([(0.45, 0.56), (0.5, 0.46)], 0.5) == pytest.approx(0.5 * 0.5 / 0.46)


@pytest.fixture(scope="module")
def mnv3():
    torch.manual_seed(0)
    return build_model("mobilenet_v3_small", num_classes=10).eval()


def test_prune_to_budget_lands_the_measured_ratio(mnv3, monkeypatch):
    table = _synthetic_table(find_groups(copy.deepcopy(mnv3), (3, 64, 64)))
    monkeypatch.setattr("kpid_core.prune.latency_table", lambda *a, **k: table)
    dense_macs = count_macs(mnv3, (3, 64, 64))

    def fake_measure(dense, pruned, input_shape, settings):  # MACs stand in for time, with an affine error
        return _affine(count_macs(pruned, tuple(input_shape)) / dense_macs)

    monkeypatch.setattr("kpid_core.prune.measured_ratio", fake_measure)
    plain = prune_to_budget(mnv3, (3, 64, 64), 0.5, cost="latency", latency={"land_rounds": 0})
    assert "latency_landing" not in plain.spec
    assert abs(fake_measure(None, plain.model, (3, 64, 64), None) / 0.5 - 1) > 0.05  # the table alone misses
    r = prune_to_budget(mnv3, (3, 64, 64), 0.5, cost="latency")
    assert abs(r.spec["latency_measured"] / 0.5 - 1) <= 0.02
    assert r.spec["latency_measured"] == pytest.approx(fake_measure(None, r.model, (3, 64, 64), None), abs=1e-5)
    assert r.budget == 0.5 and r.spec["budget"] == 0.5 and len(r.spec["latency_landing"]) >= 2
    assert r.spec["latency_settings"]["land_rounds"] == 3


def test_bad_landing_settings_name_the_field():
    from kpid_core.config import TrialConfig
    from kpid_core.engine.timing import LatencySettings

    with pytest.raises(ConfigError, match="land_rounds"):
        LatencySettings(land_rounds=-1).check()
    with pytest.raises(ConfigError, match="land_tolerance"):
        LatencySettings(land_tolerance=0).check()
    with pytest.raises(ConfigError, match=r"latency.land_rounds=-1 is out of range"):
        TrialConfig.from_dict({"latency": {"land_rounds": -1}})
    with pytest.raises(ConfigError, match=r"latency.land_tolerance=1.0 is out of range"):
        TrialConfig.from_dict({"latency": {"land_tolerance": 1.0}})
