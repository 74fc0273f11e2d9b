"""Distillation loss of KPID: cross-entropy + logits KD + inner KD at named tap points.

Like timm's ``task/distillation.py`` the loss is one object with explicit weights:
``total = ce_weight * CE + kd_weight * KD(logits) + inner_weight * mean_over_taps(MSE(features))``.

Inner KD compares the student's feature map at each tap with the teacher's. The pruned student is
narrower, so widths are matched either by ``kept`` (compare each student channel with the teacher
channel it was kept from; no parameters) or ``projection`` (a learned 1x1 conv per tap lifts the
student to the teacher's width; these parameters train with the student but are not exported).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from kpid_core.errors import ConfigError

__all__ = ["DistillLoss", "FeatureTaps", "LossParts"]

LossParts = dict[str, float]


class FeatureTaps:
    """Forward hooks that record the outputs of named modules during a forward pass."""

    def __init__(self, model: nn.Module, names: Sequence[str]):
        modules = dict(model.named_modules())
        missing = [n for n in names if n not in modules]
        if missing:
            raise ConfigError(
                f"distill.taps: no module named {missing} in the model; e.g. "
                f"{', '.join(n for n, _ in list(model.named_children())[:8])}"
            )
        self.names = list(names)
        self.features: dict[str, torch.Tensor] = {}
        self._handles = [modules[n].register_forward_hook(self._hook(n)) for n in self.names]

    def _hook(self, name: str):
        def hook(_mod, _inp, out):
            if isinstance(out, (tuple, list)):
                out = out[0]
            self.features[name] = out

        return hook

    def clear(self) -> None:
        self.features = {}

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


class DistillLoss(nn.Module):
    """CE + logits KD + inner KD with explicit weights.

    ``kd_form="kl"``: KL(softmax(t/T) || softmax(s/T)) * T^2 (Hinton). ``"mse"``: MSE between raw
    logits (the KPID paper's form; T unused). Call :meth:`attach` once with student and teacher,
    then :meth:`step` per batch; a loss with ``kd_weight == inner_weight == 0`` needs no teacher.
    """

    def __init__(self, ce_weight: float = 1.0, kd_weight: float = 1.0, inner_weight: float = 1.0,
                 temperature: float = 4.0, kd_form: str = "kl", match: str = "kept",
                 label_smoothing: float = 0.0):
        super().__init__()
        if kd_form not in ("kl", "mse"):
            raise ConfigError(f"distill.kd_form={kd_form!r}; allowed values: kl, mse")
        if match not in ("kept", "projection"):
            raise ConfigError(f"distill.match={match!r}; allowed values: kept, projection")
        if temperature <= 0:
            raise ConfigError(f"distill.temperature={temperature} must be > 0")
        self.ce_weight, self.kd_weight, self.inner_weight = float(ce_weight), float(kd_weight), float(inner_weight)
        self.temperature, self.kd_form, self.match = float(temperature), kd_form, match
        self.label_smoothing = float(label_smoothing)
        self.projections = nn.ModuleDict()  # tap name ('.' -> '/') -> 1x1 conv, match="projection" only
        self._index: dict[str, torch.Tensor | None] = {}
        self._s_taps: FeatureTaps | None = None
        self._t_taps: FeatureTaps | None = None
        self.teacher: nn.Module | None = None

    @property
    def needs_teacher(self) -> bool:
        return self.kd_weight > 0 or (self.inner_weight > 0 and bool(self._index))

    # -- wiring ------------------------------------------------------------------------------------
    def attach(self, student: nn.Module, teacher: nn.Module | None, taps: Sequence[str] = (),
               kept: Mapping[str, Sequence[int] | None] | None = None,
               example_input: torch.Tensor | None = None) -> DistillLoss:
        """Hook ``taps`` on both models. ``kept[tap]``: teacher channel index of each student channel
        at that tap (None = unpruned, same width). ``example_input`` (one batch) is needed for
        ``match="projection"`` to size the 1x1 convs."""
        self.detach()
        self.teacher = teacher
        if teacher is not None:
            teacher.eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
        taps = list(taps) if self.inner_weight > 0 and teacher is not None else []
        self._index = {}
        if not taps:
            return self
        self._s_taps, self._t_taps = FeatureTaps(student, taps), FeatureTaps(teacher, taps)
        for tap in taps:
            idx = (kept or {}).get(tap)
            self._index[tap] = None if idx is None else torch.as_tensor(list(idx), dtype=torch.long)
        if self.match == "projection":
            if example_input is None:
                raise ValueError("match='projection' needs example_input to size the projections")
            with torch.no_grad():
                was = student.training
                student.eval()
                student(example_input)
                teacher(example_input)
                student.train(was)
            for tap in taps:
                s_c = self._s_taps.features[tap].shape[1]
                t_c = self._t_taps.features[tap].shape[1]
                key = tap.replace(".", "/")
                if key not in self.projections:
                    conv = nn.Conv2d(s_c, t_c, 1, bias=False)
                    with torch.no_grad():  # start as the "kept" mapping where known, else near-identity
                        conv.weight.zero_()
                        idx = self._index[tap]
                        rows = idx if idx is not None and len(idx) == s_c else torch.arange(min(s_c, t_c))
                        conv.weight[rows, torch.arange(len(rows)), 0, 0] = 1.0
                    self.projections[key] = conv.to(example_input.device)
            self._s_taps.clear()
            self._t_taps.clear()
        return self

    def detach(self) -> None:
        for t in (self._s_taps, self._t_taps):
            if t is not None:
                t.remove()
        self._s_taps = self._t_taps = None

    # -- the loss ----------------------------------------------------------------------------------
    def kd_loss(self, s_logits: torch.Tensor, t_logits: torch.Tensor) -> torch.Tensor:
        if self.kd_form == "mse":
            return F.mse_loss(s_logits.float(), t_logits.float())
        T = self.temperature
        log_p_s = F.log_softmax(s_logits.float() / T, dim=1)
        log_p_t = F.log_softmax(t_logits.float() / T, dim=1)
        return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (T * T)

    def inner_loss(self) -> torch.Tensor:
        assert self._s_taps is not None and self._t_taps is not None
        losses = []
        for tap, idx in self._index.items():
            s = self._s_taps.features[tap].float()
            t = self._t_taps.features[tap].float()
            if self.match == "projection":
                s = self.projections[tap.replace(".", "/")](s)
            elif idx is not None:
                t = t.index_select(1, idx.to(t.device))
            if s.shape != t.shape:
                raise ConfigError(
                    f"inner KD at tap {tap!r}: student features {tuple(s.shape)} vs teacher {tuple(t.shape)}; "
                    "pick taps whose width the pruner records (distill.taps) or use distill.match=projection"
                )
            losses.append(F.mse_loss(s, t))
        return torch.stack(losses).mean()

    def step(self, student: nn.Module, x: torch.Tensor, y: torch.Tensor
             ) -> tuple[torch.Tensor, LossParts, torch.Tensor]:
        """Run teacher (eval, no_grad) and student on ``x``; return (total, parts, student logits)."""
        use_teacher = self.teacher is not None and self.needs_teacher
        t_logits = None
        if use_teacher:
            with torch.no_grad():
                t_logits = self.teacher(x)
        if self._s_taps is not None:
            self._s_taps.clear()
        s_logits = student(x)
        return (*self(s_logits, y, t_logits, use_inner=use_teacher and bool(self._index)), s_logits)

    def forward(self, s_logits: torch.Tensor, y: torch.Tensor, t_logits: torch.Tensor | None = None,
                use_inner: bool = False) -> tuple[torch.Tensor, LossParts]:
        """Total loss and its parts (floats, unweighted) from already computed logits/features."""
        zero = s_logits.new_zeros((), dtype=torch.float32)
        ce = F.cross_entropy(s_logits.float(), y, label_smoothing=self.label_smoothing) if self.ce_weight else zero
        kd = self.kd_loss(s_logits, t_logits) if (self.kd_weight and t_logits is not None) else zero
        inner = self.inner_loss() if (use_inner and self.inner_weight) else zero
        total = self.ce_weight * ce + self.kd_weight * kd + self.inner_weight * inner
        parts = {"loss": float(total.detach()), "ce": float(ce.detach()), "kd": float(kd.detach()),
                 "inner": float(inner.detach())}
        return total, parts
