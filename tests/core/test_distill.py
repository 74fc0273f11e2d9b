"""DistillLoss: logits KD forms, inner KD with kept-channel matching and learned projections."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kpid_core.errors import ConfigError
from kpid_core.training.distill import DistillLoss, FeatureTaps


def test_kl_kd_is_hinton_formula():
    torch.manual_seed(0)
    s, t, y = torch.randn(5, 7), torch.randn(5, 7), torch.randint(0, 7, (5,))
    T = 3.0
    loss = DistillLoss(ce_weight=0.0, kd_weight=1.0, inner_weight=0.0, temperature=T)
    pt = F.softmax(t / T, 1)
    manual = (pt * (pt.log() - F.log_softmax(s / T, 1))).sum(1).mean() * T * T
    total, parts = loss(s, y, t)
    assert torch.allclose(total, manual, atol=1e-5) and parts["ce"] == 0.0
    assert float(loss(t, y, t)[0]) == pytest.approx(0.0, abs=1e-6)  # identical logits: no KD loss


def test_mse_form_weights_and_label_smoothing():
    torch.manual_seed(1)
    s, t, y = torch.randn(4, 5), torch.randn(4, 5), torch.randint(0, 5, (4,))
    loss = DistillLoss(ce_weight=0.5, kd_weight=2.0, inner_weight=0.0, kd_form="mse", label_smoothing=0.1)
    total, parts = loss(s, y, t)
    ce = F.cross_entropy(s, y, label_smoothing=0.1)
    assert parts["kd"] == pytest.approx(float(F.mse_loss(s, t)), rel=1e-6)
    assert float(total) == pytest.approx(0.5 * float(ce) + 2.0 * float(F.mse_loss(s, t)), rel=1e-6)
    with pytest.raises(ConfigError, match="kl, mse"):
        DistillLoss(kd_form="l2")
    with pytest.raises(ConfigError, match="kept, projection"):
        DistillLoss(match="nearest")


class _Net(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.stem = nn.Conv2d(2, width, 3, padding=1)
        self.head = nn.Linear(width, 3)

    def forward(self, x):
        return self.head(self.stem(x).mean((2, 3)))


def _pair():
    torch.manual_seed(0)
    teacher, student = _Net(4), _Net(2)
    keep = [1, 3]
    with torch.no_grad():  # the student IS the teacher restricted to channels 1 and 3
        student.stem.weight.copy_(teacher.stem.weight[keep])
        student.stem.bias.copy_(teacher.stem.bias[keep])
    return teacher, student, keep


def test_inner_kd_kept_compares_with_the_kept_teacher_channels():
    teacher, student, keep = _pair()
    x, y = torch.randn(3, 2, 6, 6), torch.randint(0, 3, (3,))
    loss = DistillLoss(ce_weight=0.0, kd_weight=0.0, inner_weight=1.0).attach(student, teacher, ["stem"], {"stem": keep})
    _, parts, _ = loss.step(student, x, y)
    assert parts["inner"] == pytest.approx(0.0, abs=1e-10)
    wrong = DistillLoss(ce_weight=0.0, kd_weight=0.0, inner_weight=1.0).attach(student, teacher, ["stem"], {"stem": [0, 1]})
    _, parts, _ = wrong.step(student, x, y)
    assert parts["inner"] > 1e-3
    # unpruned tap (None) with a narrower student: a shape error that says what to do
    bad = DistillLoss(ce_weight=0.0, kd_weight=0.0, inner_weight=1.0).attach(student, teacher, ["stem"], {"stem": None})
    with pytest.raises(ConfigError, match="match=projection"):
        bad.step(student, x, y)


def test_inner_kd_gradients_reach_student_not_teacher():
    teacher, student, keep = _pair()
    with torch.no_grad():
        student.stem.weight.add_(0.1)
    loss = DistillLoss(kd_weight=1.0, inner_weight=1.0).attach(student, teacher, ["stem"], {"stem": keep})
    total, parts, logits = loss.step(student, torch.randn(3, 2, 6, 6), torch.tensor([0, 1, 2]))
    total.backward()
    assert student.stem.weight.grad is not None and float(student.stem.weight.grad.abs().sum()) > 0
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not teacher.training and logits.shape == (3, 3) and parts["inner"] > 0


def test_projection_learns_and_is_not_part_of_the_student():
    teacher, student, _ = _pair()
    x, y = torch.randn(8, 2, 6, 6), torch.randint(0, 3, (8,))
    loss = DistillLoss(ce_weight=0.0, kd_weight=0.0, inner_weight=1.0, match="projection")
    loss.attach(student, teacher, ["stem"], {"stem": None}, example_input=x[:1])
    proj = loss.projections["stem"]
    assert proj.in_channels == 2 and proj.out_channels == 4
    assert not any(k.startswith("projections") or "proj" in k for k in student.state_dict())
    opt = torch.optim.SGD(list(student.parameters()) + list(loss.projections.parameters()), lr=0.05)
    before = proj.weight.detach().clone()
    first = None
    for _ in range(30):
        total, parts, _ = loss.step(student, x, y)
        first = first if first is not None else parts["inner"]
        opt.zero_grad()
        total.backward()
        opt.step()
    assert not torch.equal(before, proj.weight) and parts["inner"] < first


def test_feature_taps_unknown_name_and_no_teacher():
    with pytest.raises(ConfigError, match="no module named"):
        FeatureTaps(_Net(2), ["layer9"])
    student = _Net(2)
    loss = DistillLoss().attach(student, None, ["stem"])  # teacher-free: CE only
    total, parts, _ = loss.step(student, torch.randn(2, 2, 4, 4), torch.tensor([0, 1]))
    assert parts["kd"] == 0.0 and parts["inner"] == 0.0 and float(total.detach()) == pytest.approx(parts["ce"])
