"""Fixtures for the engine tests.

Until ``kpid_core.engine.knapsack`` lands (another helper writes it), a tiny greedy stand-in with the
same signature is installed so the engine can be exercised; the real module wins when present.
"""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest
import torch
from torch import nn


def _greedy_solve(values, weights, capacity, method="dp", required=None):
    values, weights = np.asarray(values, float), np.asarray(weights, float)
    mask = np.zeros(len(values), bool) if required is None else np.asarray(required, bool).copy()
    room = capacity - weights[mask].sum()
    ratio = np.where(weights > 0, values / np.maximum(weights, 1e-300), np.inf)
    for i in np.argsort(-ratio, kind="stable"):
        if not mask[i] and weights[i] <= room:
            mask[i] = True
            room -= weights[i]
    return mask


if importlib.util.find_spec("kpid_core.engine.knapsack") is None:  # pragma: no cover - temporary stand-in
    _mod = types.ModuleType("kpid_core.engine.knapsack")
    _mod.solve = _greedy_solve
    sys.modules["kpid_core.engine.knapsack"] = _mod


class TinyNet(nn.Module):
    """conv-bn-relu → residual pair → depthwise → linear head: every group kind, in 200 parameters."""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.c1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.expand = nn.Conv2d(8, 12, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(12)
        self.dw = nn.Conv2d(12, 12, 3, padding=1, groups=12, bias=False)
        self.bn3 = nn.BatchNorm2d(12)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(12, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn0(self.stem(x)))
        x = torch.relu(x + self.bn1(self.c1(x)))
        x = torch.relu(self.bn2(self.expand(x)))
        x = torch.relu(self.bn3(self.dw(x)))
        return self.fc(self.pool(x).flatten(1))


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return TinyNet()
