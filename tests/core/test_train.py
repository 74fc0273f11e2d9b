"""fit/evaluate: learning, NaN detection, checkpoint-before-callback and exact resume on CPU."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kpid_core.config import TrainConfig
from kpid_core.errors import NonFiniteLossError
from kpid_core.models import build_model
from kpid_core.training.data import build_data
from kpid_core.training.distill import DistillLoss
from kpid_core.training.train import CHECKPOINT_FILE, evaluate, fit

SYN = {"name": "synthetic", "image_size": 8, "batch_size": 32}


def test_evaluate_counts_top1():
    x = torch.eye(4).repeat(2, 1)  # 8 samples; model = identity logits
    y = torch.tensor([0, 1, 2, 3, 0, 0, 0, 3])
    loader = DataLoader(TensorDataset(x, y), batch_size=3)
    assert evaluate(_Lin(), loader) == pytest.approx(6 / 8)  # preds 0,1,2,3,0,1,2,3


class _Lin(nn.Linear):
    def __init__(self):
        super().__init__(4, 4, bias=False)
        with torch.no_grad():
            self.weight.copy_(torch.eye(4))


def test_fit_learns_with_sgd_and_adamw():
    data = build_data(SYN, seed=0)
    for opt in ("sgd", "adamw"):
        torch.manual_seed(0)
        model = build_model("digits_resnet", num_classes=10, in_channels=3, width=0.5)
        before = evaluate(model, data.val)
        cfg = TrainConfig(epochs=3, lr=0.05 if opt == "sgd" else 3e-3, optimizer=opt)
        res = fit(model, None, data, DistillLoss(kd_weight=0, inner_weight=0), cfg)
        assert res.epochs_done == 3 and [h["epoch"] for h in res.history] == [1, 2, 3]
        assert res.history[-1]["loss"] < res.history[0]["loss"]
        assert res.history[-1]["accuracy"] > max(before, 0.3), opt
        assert res.history[-1]["lr"] < cfg.lr * 0.2  # cosine schedule decayed


def test_warm_up_rises_linearly_then_the_cosine_decays_over_the_remaining_steps():
    from kpid_core.training.train import lr_factor

    cosine = [0.5 * (1 + math.cos(math.pi * s / 12)) for s in range(13)]
    assert [lr_factor(12)(s) for s in range(13)] == pytest.approx(cosine)  # no warm-up: the old schedule
    f = lr_factor(12, 4)
    assert [f(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert [f(s) for s in range(4, 13)] == pytest.approx([0.5 * (1 + math.cos(math.pi * s / 8)) for s in range(9)])
    assert lr_factor(3, 10)(2) == pytest.approx(1.0)  # a warm-up longer than the run is capped at it
    # through fit: history's lr is the rate after each epoch's last step (4 batches per epoch)
    x, y = torch.eye(4).repeat(4, 1), torch.arange(4).repeat(4)
    loaders = SimpleNamespace(train=DataLoader(TensorDataset(x, y), batch_size=4), val=[(x, y)])
    res = fit(_Lin(), None, loaders, DistillLoss(kd_weight=0, inner_weight=0),
              TrainConfig(epochs=4, lr=0.1, warmup_epochs=1.5))  # 6 warm-up steps of 16
    assert [h["lr"] for h in res.history] == pytest.approx(
        [0.1 * 5 / 6, 0.1 * 0.5 * (1 + math.cos(math.pi * 2 / 10)), 0.1 * 0.5 * (1 + math.cos(math.pi * 6 / 10)), 0.0])


def test_non_finite_loss_raises():
    data = build_data(SYN, seed=0)
    model = build_model("digits_resnet", num_classes=10, in_channels=3, width=0.25)
    with pytest.raises(NonFiniteLossError, match="non-finite loss"):
        fit(model, None, data, DistillLoss(kd_weight=0, inner_weight=0), TrainConfig(epochs=2, lr=1e30))
    bad = SimpleNamespace(train=[(torch.full((2, 3, 8, 8), math.inf), torch.tensor([0, 1]))], val=data.val)
    with pytest.raises(NonFiniteLossError):
        fit(model, None, bad, DistillLoss(kd_weight=0, inner_weight=0), TrainConfig(epochs=1))


def _run(ckdir, stop_after=None, resume=False):
    data = build_data(SYN, seed=0)
    torch.manual_seed(1)
    teacher = build_model("digits_resnet", num_classes=10, in_channels=3, width=0.5).eval()
    torch.manual_seed(2)
    student = build_model("digits_resnet", num_classes=10, in_channels=3, width=0.25)
    # projection: its parameters and optimizer state must survive the restart too
    loss = DistillLoss(kd_weight=1.0, inner_weight=1.0, match="projection")
    loss.attach(student, teacher, ["layer1", "layer3"], example_input=torch.zeros(1, 3, 8, 8))
    seen = []

    def on_epoch(epoch, metrics):
        state = torch.load(ckdir / CHECKPOINT_FILE, weights_only=True)
        assert state["epoch"] == epoch  # the checkpoint of this epoch exists before the callback
        seen.append(epoch)
        if stop_after is not None and epoch == stop_after:
            raise KeyboardInterrupt

    res = fit(student, teacher, data, loss, TrainConfig(epochs=3, lr=0.05), on_epoch=on_epoch,
              checkpoint_dir=ckdir, resume=resume, seed=5)
    return res, student, loss, seen


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The 3-epoch run both resume tests compare with (run once): (result, student, loss, epochs seen)."""
    return _run(tmp_path_factory.mktemp("full"))


def test_resume_gives_identical_results(tmp_path, uninterrupted):
    full, s_full, l_full, seen_full = uninterrupted
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "b", stop_after=1)
    resumed, s_res, l_res, seen_res = _run(tmp_path / "b", resume=True)
    assert seen_full == [1, 2, 3] and seen_res == [2, 3]
    assert resumed.history == full.history  # losses and val accuracy of every epoch, bit for bit
    for (k, a), b in zip(s_full.state_dict().items(), s_res.state_dict().values()):
        assert torch.equal(a, b), k
    assert all(torch.equal(a, b) for a, b in zip(l_full.projections.parameters(), l_res.projections.parameters()))


def test_resume_after_the_last_epoch_trains_nothing_and_returns_the_history(tmp_path, uninterrupted):
    # The driver can die after a trial's last report: the restarted trial starts from the final
    # epoch's checkpoint and must still return that run's metrics and weights.
    full, s_full, _, _ = uninterrupted
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "b", stop_after=3)
    resumed, s_res, _, seen_res = _run(tmp_path / "b", resume=True)
    assert seen_res == [] and resumed.epochs_done == 3
    assert resumed.history == full.history
    for (k, a), b in zip(s_full.state_dict().items(), s_res.state_dict().values()):
        assert torch.equal(a, b), k
