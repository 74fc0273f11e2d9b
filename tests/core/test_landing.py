"""Landing a latency budget on measured latency (kpid_core.engine.landing): the loop with stand-in
pruning and measuring, and prune_to_budget with a synthetic table and a stand-in measurement that
errs the way a real table does (an affine error). No timing is asserted anywhere."""

from __future__ import annotations

import copy

import pytest
import torch

from kpid_core.engine import timing
from kpid_core.engine.groups import find_groups
from kpid_core.engine.landing import MAX_ROUND_BLOCKS, land, measured_ratio, next_budget, precise_enough
from kpid_core.engine.macs import count_macs
from kpid_core.engine.timing import LatencySettings
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


def test_a_measurement_is_precise_enough_once_it_decides_the_landing():
    tight = [0.300, 0.301, 0.299, 0.300, 0.302, 0.298, 0.300, 0.301, 0.299]
    assert precise_enough(tight, 0.3, 0.02)  # standard error far below half the tolerance
    spread = [0.270, 0.330, 0.285, 0.315, 0.300, 0.278, 0.322, 0.290, 0.310]  # IQR 0.282-0.318
    assert not precise_enough(spread, 0.305, 0.02)  # within 2 % in the median, but the error is 3.8 %
    assert precise_enough(spread, 0.4, 0.02)  # 25 % off: a correction follows whatever more rounds say
    assert not precise_enough(spread, 0.33, 0.02)  # 9 % off in the median, but within two errors of 2 %
    assert not precise_enough(tight[:3], 0.3, 0.02)  # too few rounds to estimate a spread
    # one wild round does not inflate a robust standard error
    assert precise_enough([*tight, 3.0], 0.3, 0.02)


def _stand_in_timing(monkeypatch, ratio_of_round):
    """time_interleaved returns (dense, pruned) samples whose ratio is ratio_of_round(i); blocks counted."""
    blocks: list[int] = []

    def fake(fns, repeats, timer, warmup=2, min_sample_s=0.02, settle=1):
        start = sum(blocks)
        blocks.append(repeats)
        return [1.0] * repeats, [ratio_of_round(start + i) for i in range(repeats)]

    monkeypatch.setattr(timing, "time_interleaved", fake)
    return blocks


def test_a_noisy_measurement_near_the_budget_adds_rounds_up_to_the_cap(monkeypatch):
    tiny = torch.nn.Conv2d(3, 4, 1)
    noisy = lambda i: 0.3 * (1.1 if i % 2 else 0.9)
    blocks = _stand_in_timing(monkeypatch, noisy)
    s = LatencySettings(land_repeats=6)
    assert measured_ratio(tiny, tiny, (3, 8, 8), s, budget=0.3) == pytest.approx(0.3)
    assert blocks == [6] * MAX_ROUND_BLOCKS  # never precise enough: the cap ends it
    blocks.clear()
    measured_ratio(tiny, tiny, (3, 8, 8), s)  # no budget: one block, as before
    assert blocks == [6]
    blocks.clear()
    calm = _stand_in_timing(monkeypatch, lambda i: 0.3 * (1 + 0.001 * (i % 3)))
    measured_ratio(tiny, tiny, (3, 8, 8), s, budget=0.3)
    assert calm == [6]  # precise at once
    far = _stand_in_timing(monkeypatch, lambda i: noisy(i) * 1.5)
    measured_ratio(tiny, tiny, (3, 8, 8), s, budget=0.3)
    assert far == [6]  # 50 % off: more rounds would not change the correction


@pytest.fixture(scope="module")
def mnv3():
    torch.manual_seed(0)
    return build_model("mobilenet_v3_small", num_classes=10).eval()


def test_prune_to_budget_lands_the_measured_ratio(mnv3, monkeypatch):
    table = _synthetic_table(find_groups(copy.deepcopy(mnv3), (3, 64, 64)))
    monkeypatch.setattr("kpid_core.prune.latency_table", lambda *a, **k: table)
    dense_macs = count_macs(mnv3, (3, 64, 64))

    budgets = []

    def ratio(pruned):  # MACs stand in for time, with an affine error
        return _affine(count_macs(pruned, (3, 64, 64)) / dense_macs)

    def fake_measure(dense, pruned, input_shape, settings, budget=None):
        budgets.append(budget)
        return ratio(pruned)

    monkeypatch.setattr("kpid_core.prune.measured_ratio", fake_measure)
    plain = prune_to_budget(mnv3, (3, 64, 64), 0.5, cost="latency", latency={"land_rounds": 0})
    assert "latency_landing" not in plain.spec
    assert abs(ratio(plain.model) / 0.5 - 1) > 0.05  # the table alone misses
    r = prune_to_budget(mnv3, (3, 64, 64), 0.5, cost="latency")
    assert abs(r.spec["latency_measured"] / 0.5 - 1) <= 0.02
    assert r.spec["latency_measured"] == pytest.approx(ratio(r.model), abs=1e-5)
    assert r.budget == 0.5 and r.spec["budget"] == 0.5 and len(r.spec["latency_landing"]) >= 2
    assert r.spec["latency_settings"]["land_rounds"] == 3
    assert set(budgets) == {0.5}  # each try is measured as precisely as landing the user's budget needs


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
