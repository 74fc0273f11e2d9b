"""End-to-end trials on the bundled digits: the accuracy claim, reload, resume, shared artifacts,
teacher sources and the CLI's exit codes."""

import json
from pathlib import Path

import pytest
import torch

from kpid_core import prune_phase
from kpid_core import shared as shared_mod
from kpid_core import trial as trial_mod
from kpid_core.__main__ import main
from kpid_core.config import load_config
from kpid_core.engine.importance import ImportanceScores
from kpid_core.errors import ConfigError, NonFiniteLossError, SpecError
from kpid_core.models import build_model
from kpid_core.prune import load_pruned
from kpid_core.training.teacher import get_teacher, pretrained_weights_path
from kpid_core.training.train import evaluate
from kpid_core.trial import prepare_shared, run_trial

CONTRACT_FIELDS = {"accuracy", "val_accuracy", "teacher_accuracy", "macs", "macs_dense", "macs_ratio", "params",
                   "params_dense", "budget", "metric", "status", "epochs_done", "times", "config"}
# Small but honest: a 3-epoch teacher and a 2-epoch fine-tune for the plumbing tests. The teacher
# recipe is test_baseline's too: the session's teacher cache ($KPID_CACHE_DIR) trains it once.
TINY = ["teacher.epochs=3", "epochs=2", "budget=0.5"]


@pytest.fixture(scope="module")
def tiny_trial(tmp_path_factory):
    """One uninterrupted TINY trial (with checkpoints), the reference of the resume and shared tests."""
    return run_trial(load_config(overrides=TINY), checkpoint_dir=tmp_path_factory.mktemp("full"))


@pytest.mark.slow
def test_default_cli_trial_keeps_accuracy_at_budget_03_and_model_reloads(tmp_path, capsys):
    """The must-show claim with the DEFAULT config (only the budget changed), through the CLI."""
    out = tmp_path / "run"
    assert main(["trial", "--set", "budget=0.3", "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert set(m) == CONTRACT_FIELDS and m["status"] == "finished" and m["epochs_done"] == 8
    assert json.loads(capsys.readouterr().out)["accuracy"] == m["accuracy"]
    assert m["teacher_accuracy"] >= 0.95  # digits_resnet trains to >= 95 % in its 15 epochs
    assert m["accuracy"] >= m["teacher_accuracy"] - 0.02
    assert 0.28 <= m["macs_ratio"] <= 0.30 and m["macs"] < m["macs_dense"] and m["params"] < m["params_dense"]
    assert set(m["times"]) == {"teacher_s", "importance_s", "prune_s", "finetune_s", "total_s"}
    assert "trial finished" in (out / "trial.log").read_text()
    # the saved model reloads and reproduces the reported test accuracy on the same split
    model = load_pruned(out / "model")
    cfg = load_config(overrides=["budget=0.3"])
    data = trial_mod.trial_data(cfg)
    assert evaluate(model, data.test) == pytest.approx(m["accuracy"], abs=1e-9)


@pytest.mark.slow
def test_resume_after_interrupt_matches_uninterrupted(tmp_path, tiny_trial):
    cfg = load_config(overrides=TINY)
    full = tiny_trial

    def stop(epoch, metrics):
        assert {"epoch", "accuracy", "loss", "macs", "macs_ratio", "budget", "params"} <= set(metrics)
        if epoch == 1:
            raise KeyboardInterrupt  # the trial dies after epoch 1's checkpoint

    with pytest.raises(KeyboardInterrupt):
        run_trial(cfg, on_epoch=stop, checkpoint_dir=tmp_path / "ck")
    epochs = []
    resumed = run_trial(cfg, on_epoch=lambda e, m: epochs.append(e), resume_from=tmp_path / "ck",
                        checkpoint_dir=tmp_path / "ck2")
    assert epochs == [2]
    for k in ("accuracy", "val_accuracy", "macs", "params", "epochs_done", "teacher_accuracy"):
        assert resumed[k] == full[k], k


@pytest.mark.slow
def test_shared_artifacts_give_the_same_trial_without_recomputing(tmp_path, monkeypatch, tiny_trial):
    cfg = load_config(overrides=TINY)
    alone = tiny_trial  # checkpoints change nothing a trial computes: the same as without them
    shared = prepare_shared(cfg, tmp_path / "shared", ["taylor", "l1"])
    assert shared.split.is_file() and shared.teacher.is_file() and set(shared.importance) == {"taylor", "l1"}
    assert shared.teacher_accuracy == alone["teacher_accuracy"]

    def boom(*a, **k):
        raise AssertionError("recomputed although shared")

    monkeypatch.setattr(shared_mod, "get_teacher", boom)  # where the trial's teacher and scores come from
    monkeypatch.setattr(shared_mod, "teacher_importance", boom)
    monkeypatch.setattr(prune_phase, "teacher_importance", boom)
    with_shared = run_trial(cfg, shared=str(tmp_path / "shared"))  # a path works (Ray passes strings)
    for k in ("accuracy", "val_accuracy", "macs", "params"):
        assert with_shared[k] == alone[k], k
    l1 = run_trial(cfg.with_overrides({"metric": "l1", "epochs": 1}), shared=shared)
    assert l1["metric"] == "l1" and l1["status"] == "finished" and l1["epochs_done"] == 1
    # shared scores over 8 batches do not answer a trial that asks for 3: it scores its teacher itself
    with pytest.raises(AssertionError, match="recomputed although shared"):
        run_trial(cfg.with_overrides({"prune.importance_batches": 3}), shared=shared)
    # preparing again over the same folder keeps the files that answer the config, rescores the others
    monkeypatch.setattr(shared_mod, "get_teacher", get_teacher)
    again = prepare_shared(cfg, tmp_path / "shared", ["taylor"])  # teacher_importance is still boom
    assert again.importance["taylor"] == shared.importance["taylor"]
    monkeypatch.undo()
    three = prepare_shared(cfg.with_overrides({"prune.importance_batches": 3}), tmp_path / "shared", ["taylor"])
    assert ImportanceScores.load(three.importance["taylor"]).meta["n_batches"] == 3


def test_teacher_is_cached_by_config(tmp_path):
    cfg = load_config(overrides=["teacher.epochs=1", f"teacher.cache_dir={tmp_path}"])
    data = trial_mod.trial_data(cfg)
    first = get_teacher(cfg, data)
    assert first.source == "train" and len(list(tmp_path.glob("*.pt"))) == 1

    def no_training(*a, **k):
        raise AssertionError("trained again")

    again = get_teacher(cfg, data, train_fn=no_training)
    assert again.source == "cache" and again.accuracy == first.accuracy
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
    other = load_config(overrides=["teacher.epochs=2", f"teacher.cache_dir={tmp_path}"])
    with pytest.raises(AssertionError, match="trained again"):  # a different teacher config misses the cache
        get_teacher(other, data, train_fn=no_training)
    warm = cfg.with_overrides({"train.warmup_epochs": 1})  # the teacher trains with the warm-up too
    with pytest.raises(AssertionError, match="trained again"):
        get_teacher(warm, data, train_fn=no_training)
    # an explicit 0 is the default recipe (no warm-up): the same teacher
    assert get_teacher(cfg.with_overrides({"train.warmup_epochs": 0.0}), data, train_fn=no_training).source == "cache"


def test_teacher_checkpoint_missing_corrupt_and_good(tmp_path):
    data = trial_mod.trial_data(load_config())
    missing = load_config(overrides=["teacher.source=checkpoint", f"teacher.checkpoint={tmp_path / 'no.pt'}"])
    with pytest.raises(SpecError, match="does not exist"):
        get_teacher(missing, data)
    (tmp_path / "bad.pt").write_bytes(b"PK\x03\x04 not really a zip")
    corrupt = missing.with_overrides({"teacher.checkpoint": str(tmp_path / "bad.pt")})
    with pytest.raises(SpecError, match="not a readable state dict"):
        get_teacher(corrupt, data)
    torch.save(build_model("resnet20", 10).state_dict(), tmp_path / "wrong.pt")
    with pytest.raises(SpecError, match="does not fit the model"):
        get_teacher(missing.with_overrides({"teacher.checkpoint": str(tmp_path / "wrong.pt")}), data)
    good = build_model("digits_resnet", 10)
    torch.save({"state_dict": good.state_dict()}, tmp_path / "good.pt")
    t = get_teacher(missing.with_overrides({"teacher.checkpoint": str(tmp_path / "good.pt")}), data)
    assert t.source == "checkpoint" and 0.0 <= t.accuracy <= 1.0
    assert torch.equal(t.model.conv1.weight, good.conv1.weight)


def test_pretrained_teacher_absent_then_present(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cfg = load_config(overrides=["model=resnet18", "teacher.source=pretrained", "dataset=synthetic",
                                 "data.image_size=8"])
    member, path = pretrained_weights_path("resnet18")
    assert path == tmp_path / "hub" / "checkpoints" / Path(member.url).name
    # synthetic data has 10 classes, ImageNet weights 1000: refuse clearly
    data = trial_mod.trial_data(cfg)
    with pytest.raises(ConfigError, match="has 1000 classes but the data has 10"):
        get_teacher(cfg, data)
    data.num_classes = 1000  # pretend an ImageNet-sized head
    with pytest.raises(SpecError) as e:
        get_teacher(cfg, data)
    assert str(path) in str(e.value) and member.url in str(e.value)
    path.parent.mkdir(parents=True)
    weights = build_model("resnet18", 1000).state_dict()
    torch.save(weights, path)
    t = get_teacher(cfg, data)
    assert t.source == "pretrained" and torch.equal(t.model.fc.weight, weights["fc.weight"])
    with pytest.raises(ConfigError, match="IMAGENET1K_V1"):
        pretrained_weights_path("resnet18", "IMAGENET9K")


def test_cli_errors_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    cases = [
        (["--out", str(tmp_path / "full")], "exists and is not empty"),
        (["--set", "bogus=1", "--out", str(tmp_path / "a")], "valid keys: seed, data.name"),
        (["--set", "dataset=mnist", "--out", str(tmp_path / "b")], "allowed values: digits"),
        (["--set", "model=resnet9000", "--out", str(tmp_path / "c")], "digits_resnet"),
        (["--set", "dataset=cifar10", "--set", f"data.root={tmp_path / 'none'}", "--out", str(tmp_path / "d")],
         "cifar10 expects ROOT/cifar-10-batches-py"),
        (["--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "e")], "does not exist"),
        (["--set", "dataset=imagefolder", "--set", f"data.root={tmp_path / 'none'}", "--out", str(tmp_path / "f")],
         "imagefolder expects ROOT/train"),
        (["--config", str(tmp_path / "broken.yaml"), "--out", str(tmp_path / "g")], "line 2, column 1"),
        (["--set", "distill.taps=[layer1,layr3]", "--out", str(tmp_path / "h")], "distill.taps: no module 'layr3'"),
    ]
    (tmp_path / "broken.yaml").write_text("seed: [unclosed\n")
    for argv, needle in cases:
        assert main(["trial", *argv, "--quiet"]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and needle in err and "\n" not in err and "Traceback" not in err
    assert (tmp_path / "full" / "x").read_text() == "keep me"
    # nothing written: a failed run leaves no --out behind (the same command may simply be re-run)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.yaml", "full"]


def test_a_tap_that_names_no_module_fails_before_the_teacher_is_trained(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("teacher trained before the taps were checked")

    monkeypatch.setattr(shared_mod, "get_teacher", boom)
    with pytest.raises(ConfigError, match=r"^distill.taps: no module 'layer9' in resnet20; .*layer1, layer2"):
        run_trial(load_config(overrides=[*TINY, "model=resnet20", "distill.taps=[layer1,layer9]"]))


@pytest.mark.slow
def test_nan_loss_clear_status_exit_3(tmp_path, capsys):
    out = tmp_path / "nan"
    code = main(["trial", "--set", "lr=1e30", "--set", "teacher.epochs=3", "--set", "epochs=1", "--out", str(out),
                 "--quiet"])
    assert code == 3
    err = capsys.readouterr().err
    assert err.startswith("status: non_finite_loss") and "Traceback" not in err
    assert json.loads((out / "metrics.json").read_text())["status"] == "non_finite_loss"
    with pytest.raises(NonFiniteLossError):
        run_trial(load_config(overrides=["lr=1e30", "teacher.epochs=3", "epochs=1"]))


def test_the_trial_module_re_exports_the_shared_and_prune_phase_names():
    """docs/CONTRACTS.md: ``kpid_core.trial`` keeps answering for what moved to shared.py and prune_phase.py."""
    for name in ("prepare_shared", "SharedArtifacts", "trial_data", "load_teacher", "teacher_importance"):
        assert getattr(trial_mod, name) is getattr(shared_mod, name), name
    for name in ("latency_settings", "TRIAL_STATE_FILE"):
        assert getattr(trial_mod, name) is getattr(prune_phase, name), name


def test_ctrl_c_during_a_trial_is_one_line_and_the_same_command_can_be_run_again(tmp_path, monkeypatch, capsys):
    def interrupted(cfg, out_dir=None, **kw):
        (out_dir / "trial.log").write_text("started\n")  # what a trial has written when Ctrl-C comes
        raise KeyboardInterrupt

    monkeypatch.setattr(trial_mod, "run_trial", interrupted)
    out = tmp_path / "run"
    assert main(["trial", "--out", str(out)]) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith("interrupted: the trial stopped before it finished; removed the partial --out")
    assert len(err.splitlines()) == 1 and not out.exists()
    out.mkdir()  # an --out that was there (empty) before the run is kept
    assert main(["trial", "--out", str(out)]) == 130 and out.is_dir()


def test_cuda_asked_for_where_there_is_none_and_a_cache_dir_that_is_a_file_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["trial", "--out", str(tmp_path / "a"), "--set", "train.device=cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: train.device=cuda: CUDA is not available here") and len(err.splitlines()) == 1
    assert not (tmp_path / "a").exists()

    def boom(*a, **k):
        raise AssertionError("the teacher was trained before its cache was checked")

    monkeypatch.setattr("kpid_core.training.train.fit", boom)  # get_teacher imports it when it trains
    (tmp_path / "file").write_text("x")
    assert main(["trial", "--quiet", "--out", str(tmp_path / "b"), "--set", f"teacher.cache_dir={tmp_path / 'file'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: teacher.cache_dir: cannot write '{tmp_path / 'file'}'") and len(err.splitlines()) == 1
