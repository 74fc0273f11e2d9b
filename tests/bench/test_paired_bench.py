"""The paired Fashion-MNIST benchmarks end to end on tiny IDX files, and their statistics."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))

from test_data_small import write_fashion

from bench import ablation, quality
from bench._paired import paired


def _rows(method, accs, budget=0.25):
    return [{"seed": s, "budget": budget, "method": method, "accuracy": a} for s, a in enumerate(accs)]


def test_paired_difference_and_t_test_match_a_hand_computation():
    a, b = [0.90, 0.92, 0.91, 0.93], [0.89, 0.90, 0.90, 0.90]
    rows = _rows("ours", a) + _rows("tp", b) + _rows("tp", [0.5], budget=0.1)
    d = paired(rows, "ours", "tp", 0.25)
    diffs = [x - y for x, y in zip(a, b)]
    mean = sum(diffs) / 4
    sd = math.sqrt(sum((x - mean) ** 2 for x in diffs) / 3)
    t = mean / (sd / 2)
    assert d["n"] == 4 and d["mean"] == pytest.approx(mean) and d["std"] == pytest.approx(sd)
    from scipy import stats

    assert d["p"] == pytest.approx(2 * stats.t.sf(abs(t), 3))
    only = paired(rows + _rows("ours", [0.7], budget=0.1)[:1], "ours", "tp", 0.1)
    assert only["n"] == 1 and math.isnan(only["p"])  # one pair: no test


@pytest.mark.slow
def test_quality_and_ablation_run_cache_and_summarise(tmp_path, capsys):
    write_fashion(tmp_path / "fm")
    cache = tmp_path / "cache"
    # one torch thread per job: two on the 2 shared cores of CI made this test ~7x slower
    argv = ["--setting", "smoke", "--seeds", "1", "--cache", str(cache), "--set", f"data.root={tmp_path / 'fm'}",
            "--threads", "1", "--methods", "ours,no_kd,tp_plain"]
    torch.set_num_threads(2)  # the caller's count differs from the jobs' (the autouse fixture restores 1)
    # a variant of a from-scratch baseline: its overrides win over the baseline's recipe (lr = teacher.lr)
    assert quality.main([*argv, "--variant", "spread2:prune.spread=2",
                         "--variant", "mnw@mnv3_small:lr=0.02,train.warmup_epochs=1"]) == 0
    assert torch.get_num_threads() == 2  # the jobs' own thread count does not leak to the caller
    out = capsys.readouterr().out
    files = sorted(cache.glob("smoke-*/seed0/b0.25/*.json"))
    assert [f.stem for f in files] == ["mnw", "no_kd", "ours", "spread2", "tp_plain"]
    assert "prune.spread=2" in json.loads(files[3].read_text())["overrides"] and "| spread2 | " in out
    mnw = json.loads(files[0].read_text())
    assert (mnw["lr"], mnw["warmup_epochs"], 0 < mnw["width"]) == (0.02, 1.0, True) and "| mnw | " in out
    files.pop(3)
    row = json.loads((files[2]).read_text())
    assert 0 <= row["accuracy"] <= 1 and row["macs_ratio"] <= 0.25 and row["seed"] == 0
    assert "| ours | " in out and "| tp_plain | " in out and "ours − tp_plain" not in out
    assert "budget 0.25: drop from teacher" in out
    # a second run computes nothing: every result is cached (files untouched)
    stamps = [f.stat().st_mtime_ns for f in files]
    assert ablation.main(argv[:-2] + ["--methods", "ours,no_kd", "--budgets", "0.25"]) == 0
    assert [f.stat().st_mtime_ns for f in files] == stamps
    assert "logits KD > no KD" not in capsys.readouterr().out  # logits_kd was not asked for


def test_bad_arguments_are_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        quality.main(["--methods", "ours,magic"])
    assert e.value.code == 2 and "--methods: unknown magic" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        quality.main(["--budgets", "1.5"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        quality.main(["--threads", "0"])
    assert e.value.code == 2 and "--threads must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        quality.main(["--variant", "ours:prune.steps=2"])  # a method's name cannot be a variant's
    assert e.value.code == 2 and "--variant" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        quality.main(["--variant", "v@magic:lr=0.1"])  # nor can it run a method that does not exist
    assert e.value.code == 2 and "unknown method 'magic'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        quality.main(["--seeds", "0"])
    assert e.value.code == 2 and "--seeds '0': no seed" in capsys.readouterr().err


@pytest.mark.parametrize("argv, says", [
    (["--variant", "s1:prune.spread=0.5"], "--variant s1: prune.spread=0.5 is out of range"),
    (["--variant", "v@logits_kd:distill.kd_wieght=0.5"], "--variant v: unknown config key 'distill.kd_wieght'"),
    (["--set", "train.lr=-1"], "--set: train.lr=-1.0 is out of range"),
    (["--variant", "t:distill.taps=[layer1,layer9]"], "--variant t: distill.taps: no module 'layer9' in resnet20"),
])
def test_a_bad_override_value_is_one_line_before_any_training(argv, says, tmp_path, capsys):
    # it used to surface as a worker's traceback once the seed's teacher had been trained
    with pytest.raises(SystemExit) as e:
        quality.main(["--setting", "smoke", "--seeds", "1", "--budgets", "0.25", "--methods", "ours", "--cache",
                      str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and says in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing was trained or written


def test_a_selecting_trials_choice_is_caught_from_its_log_line():
    import logging

    from bench._paired import _Chosen
    from kpid_core.engine.selection import candidate_plan, select_allocation

    logger, catch = logging.getLogger("kpid_core.trial"), _Chosen()
    logger.addHandler(catch)
    try:
        model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.Flatten())
        result = type("R", (), {"model": model, "kept": {"g": [0]}, "macs_ratio": 0.5})
        batch = [(torch.randn(2, 1, 1, 1), torch.tensor([0, 1]))]
        logger.setLevel(logging.INFO)
        select_allocation(lambda s, spread: result, candidate_plan("l1", 1.5, 2), lambda m: {}, batch, batch,
                          log=logger.info)  # the trial logs the choice through this logger
    finally:
        logger.removeHandler(catch)
        logger.setLevel(logging.NOTSET)
    assert catch.chosen == ["l1 spread 1.5"]  # both tie; the first is kept


def test_the_report_names_the_teacher_that_was_trained():
    setting = quality.SETTINGS["full"]
    assert quality.teacher_label(setting, []) == "ResNet-20"
    assert quality.teacher_label(setting, ["model=resnet56"]) == "ResNet-56"  # --set model=... wins
    assert quality.teacher_label(setting, ["model=timm:resnet10t"]) == "timm:resnet10t"


def test_a_variants_list_value_stays_one_override():
    # a list value has commas of its own: `distill.taps=[a,b]` was cut into `distill.taps=[a` and `b]`
    import argparse

    from kpid_core.config import load_config

    ov, bases = quality.parse_variants(
        ["taps@uniform_kd:distill.taps=[layer1.0,layer2.0],distill.inner_weight=3"], argparse.ArgumentParser())
    assert ov == {"taps": ["distill.taps=[layer1.0,layer2.0]", "distill.inner_weight=3"]}
    assert bases == {"taps": "uniform_kd"}
    assert load_config(None, ov["taps"]).distill.taps == ["layer1.0", "layer2.0"]


def test_a_seeds_cells_start_once_its_own_teacher_is_ready():
    # they used to wait for every teacher: with three seeds on two workers a core idled through the third
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from bench._paired import SETTINGS, Job, run_pipelined

    def job(seed, budget):
        return Job(SETTINGS["smoke"], (), seed, budget, ("ours",), (), "unused", 1)

    cell_of_seed_0_ran = threading.Event()
    ran_while_teacher_1_trained = []

    def fake(j):
        if j.budget is None and j.seed == 1:  # a slow teacher: waits for seed 0's cell, at most 20 s
            ran_while_teacher_1_trained.append(cell_of_seed_0_ran.wait(timeout=20))
        if j.budget is not None and j.seed == 0:
            cell_of_seed_0_ran.set()
        return [f"seed {j.seed} budget {j.budget}"]

    lines = []
    with ThreadPoolExecutor(max_workers=2) as ex:
        run_pipelined(ex, fake, [job(s, None) for s in range(3)], [job(s, b) for s in range(3) for b in (0.25, 0.1)],
                      lines.append)
    assert ran_while_teacher_1_trained == [True]
    assert sorted(lines) == sorted(f"seed {s} budget {b}" for s in range(3) for b in (None, 0.25, 0.1))


def test_a_variant_of_a_compared_method_gets_that_methods_goal_line():
    # a from-scratch baseline run as a --variant (another recipe) had no goal line: goals() knew only the names
    rows = [{**r, "teacher": 0.92} for r in _rows("ours", [0.90, 0.91, 0.92])
            + _rows("mnv3_fair", [0.88, 0.885, 0.9]) + _rows("uni_x", [0.88, 0.895, 0.90], budget=0.1)
            + _rows("ours", [0.85, 0.86, 0.87], budget=0.1)]
    lines = quality.goals(rows, [0.25, 0.1], {"mnv3_fair": "mnv3_large", "uni_x": "uniform_kd"})
    front = [g for g in lines if "mnv3_fair" in g]
    assert len(front) == 1 and front[0].startswith("budget 0.25: ours − mnv3_fair +2.17") and "met" in front[0]
    low = [g for g in lines if "uni_x" in g]
    assert len(low) == 1 and low[0].startswith("budget 0.1: ours − uni_x -3.17") and low[0].endswith("MISSED")
    assert not [g for g in quality.goals(rows, [0.25, 0.1]) if "_fair" in g or "uni_x" in g]  # no bases: no lines
