"""Cost models: what the budget counts (MACs, parameters or measured latency) as a function of the
kept channel counts.

Every model here has the same form as the exact MAC model of :mod:`kpid_core.engine.groups`: for each
conv/linear call ``L`` (plus, for ``params``, each normalisation layer) with ``cin_L`` input channels
per group and ``cout_L`` output channels, both affine in the kept counts ``k``,

    cost(k) = Σ_L coef_L · cin_L · cout_L + lin_in_L · cin_L + lin_out_L · cout_L  +  const

so the allocation linearises and repairs it exactly as it does for MACs (the marginal, removal and
addition costs below are exact differences of this quadratic). ``macs`` is the MAC model itself
(integer arithmetic, so results are identical to the allocation before cost models existed),
``params`` counts weights, biases and norm parameters, ``latency`` uses a per-layer table measured on
a device (:mod:`kpid_core.engine.latency_table`). :func:`blocked` re-expresses any of them in blocks of
``round_to`` channels, so that kept counts come out as multiples of 8/16/32.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from kpid_core.choices import COSTS, ROUND_TO
from kpid_core.engine.groups import ChannelGroups
from kpid_core.errors import ConfigError, UnknownNameError

__all__ = ["COSTS", "ROUND_TO", "CostModel", "blocked", "check_cost", "check_round_to", "mac_cost", "params_cost"]


def check_cost(cost: Any) -> str:
    """Validate a cost model name.

    Args:
        cost: one of :data:`COSTS`.

    Returns:
        ``cost``. Raises UnknownNameError naming the allowed values otherwise.
    """
    if cost not in COSTS:
        raise UnknownNameError(f"unknown cost {cost!r}; allowed values: {', '.join(COSTS)}")
    return cost


def check_round_to(round_to: Any) -> int:
    """Validate ``round_to``.

    Args:
        round_to: one of :data:`ROUND_TO`.

    Returns:
        ``round_to`` as an int. Raises ConfigError naming the allowed values otherwise.
    """
    if isinstance(round_to, bool) or round_to not in ROUND_TO:
        raise ConfigError(f"round_to must be one of {', '.join(map(str, ROUND_TO))}, got {round_to!r}")
    return int(round_to)


@dataclass
class CostModel:
    """A cost that is quadratic in the kept counts (see the module docstring).

    ``A``/``B`` (rows × groups) give each row's input/output channel multiplicity per kept unit of a
    group, ``A0``/``B0`` the channels no group controls; ``sizes`` is each group's number of units
    (channels, or blocks of channels after :func:`blocked`); ``steps`` the channels per unit.
    Integer coefficients (``macs``, ``params``) are summed exactly as integers.
    """

    name: str
    unit: str
    sizes: np.ndarray
    A: np.ndarray
    B: np.ndarray
    A0: np.ndarray
    B0: np.ndarray
    coef: np.ndarray
    lin_in: np.ndarray | None = None
    lin_out: np.ndarray | None = None
    const: float | int = 0
    steps: np.ndarray | None = None

    def channels(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(cin/groups, cout) per row at kept counts ``k`` (one count per group, in units)."""
        k = np.asarray(k, dtype=np.int64)
        return self.A0 + self.A @ k, self.B0 + self.B @ k

    def total(self, k: np.ndarray | None = None) -> int | float:
        """The cost at kept counts ``k`` (None = the dense model).

        Args:
            k: kept units per group, or None.

        Returns:
            An int for integer models (MACs, params), else a float.
        """
        cin, cout = self.channels(self.sizes if k is None else k)
        out = np.sum(self.coef * cin * cout)
        if self.lin_in is not None:
            out = out + np.dot(self.lin_in, cin) + np.dot(self.lin_out, cout)
        out = out + self.const
        return int(out) if np.issubdtype(np.asarray(out).dtype, np.integer) else float(out)

    def _linear(self, k: np.ndarray) -> np.ndarray:
        cin, cout = self.channels(k)
        lin = self.A.T @ (self.coef * cout) + self.B.T @ (self.coef * cin)
        if self.lin_in is not None:
            lin = lin + self.A.T @ self.lin_in + self.B.T @ self.lin_out
        return lin

    def marginal(self, k: np.ndarray) -> np.ndarray:
        """∂cost/∂k_g at ``k`` (float array, cost per unit of each group)."""
        return self._linear(k).astype(np.float64)

    def removal(self, k: np.ndarray) -> np.ndarray:
        """Exact cost saved by removing one more unit from each group: cost(k) − cost(k − e_g)."""
        return self._linear(k) - (self.A * self.B).T @ self.coef

    def addition(self, k: np.ndarray) -> np.ndarray:
        """Exact cost added by keeping one more unit in each group: cost(k + e_g) − cost(k)."""
        return self._linear(k) + (self.A * self.B).T @ self.coef

    def per_channel(self, k: np.ndarray | None = None) -> np.ndarray:
        """Marginal cost per channel (not per unit) of each group at ``k`` (default dense)."""
        m = self.marginal(self.sizes if k is None else k)
        return m / (self.steps if self.steps is not None else 1)


def mac_cost(groups: ChannelGroups) -> CostModel:
    """The exact MAC model of ``groups`` (one image) as a cost model.

    Args:
        groups: the traced channel groups.

    Returns:
        A cost model whose :meth:`~CostModel.total` equals ``groups.macs(k)``.
    """
    return CostModel("macs", "MACs", groups.sizes.copy(), groups.A, groups.B, groups.A0, groups.B0, groups.coef)


def params_cost(groups: ChannelGroups) -> CostModel:
    """Parameter count as a cost model: conv/linear weights (bilinear), biases and the per-channel
    parameters of every other module a group prunes (norms: linear), the rest constant.

    Args:
        groups: the traced channel groups (bound to the dense model).

    Returns:
        A cost model whose dense total equals ``count_params`` of the model.
    """
    from kpid_core.engine.macs import count_params

    model = groups.model
    modules = dict(model.named_modules())
    seen: set[str] = set()
    coef, lin_out = [], []
    for lay in groups.layers:
        first = lay.name not in seen  # a layer called twice owns its weights once
        seen.add(lay.name)
        m = modules[lay.name]
        coef.append(int(np.prod(lay.kernel or (1,))) if first else 0)
        lin_out.append(1 if first and getattr(m, "bias", None) is not None else 0)
    # rows for the other modules that groups prune on their output side (norms, PReLU, ...)
    extra: dict[str, np.ndarray] = {}
    chans: dict[str, int] = {}
    layer_names = {lay.name for lay in groups.layers}
    for gi, g in enumerate(groups.groups):
        for mem in g.members:
            if mem.module in layer_names or mem.dim != "out":
                continue
            mod = modules[mem.module]
            n = sum(p.numel() for p in mod.parameters(recurse=False))
            c = _channels_of(mod)
            if not n or not c:
                continue
            row = extra.setdefault(mem.module, np.zeros(len(groups.groups), dtype=np.int64))
            row[gi] += len(mem.idxs) // g.size
            chans[mem.module] = c
    names = list(extra)
    n_l = len(groups.layers)
    B_extra = np.array([extra[n] for n in names], dtype=np.int64).reshape(len(names), len(groups.groups))
    A = np.vstack([groups.A, np.zeros_like(B_extra)])
    B = np.vstack([groups.B, B_extra])
    A0 = np.concatenate([groups.A0, np.ones(len(names), dtype=np.int64)])
    B0 = np.concatenate([groups.B0, np.array([chans[n] for n in names], dtype=np.int64) - B_extra @ groups.sizes])
    per_ch = [sum(p.numel() for p in modules[n].parameters(recurse=False)) // chans[n] for n in names]
    cm = CostModel("params", "params", groups.sizes.copy(), A, B, A0, B0,
                   np.concatenate([np.array(coef, dtype=np.int64), np.zeros(len(names), dtype=np.int64)]),
                   np.zeros(n_l + len(names), dtype=np.int64),
                   np.concatenate([np.array(lin_out, dtype=np.int64), np.array(per_ch, dtype=np.int64)]))
    cm.const = int(count_params(model)) - cm.total()
    return cm


def _channels_of(mod: nn.Module) -> int:
    for attr in ("num_features", "num_channels", "num_parameters"):
        v = getattr(mod, attr, None)
        if isinstance(v, int) and v > 0:
            return v
    w = getattr(mod, "weight", None)
    return int(w.shape[0]) if w is not None and w.dim() >= 1 else 0


def blocked(cost: CostModel, step: int, unit_channels: np.ndarray | None = None) -> CostModel:
    """``cost`` in units of ``step`` channels: a group whose size is a multiple of ``step`` keeps a
    multiple of ``step`` channels; other groups stay per channel (their sizes allow no such count).

    Args:
        cost: a per-channel (or per-unit) cost model.
        step: channels per unit (1 returns ``cost`` unchanged).
        unit_channels: channels in each of a group's units (:attr:`ChannelGroups.unit_channels`:
            1 per channel, G for a grouped conv's tied units, 0 when its units differ in size); a
            group of u-channel units keeps a multiple of ``step / gcd(step, u)`` units. None = 1.

    Returns:
        A new cost model with ``sizes`` in units and ``steps`` the channels per unit of each group;
        its totals equal ``cost``'s at ``k_channels = steps · k_units``.
    """
    if step == 1:
        return cost
    per = np.ones(len(cost.sizes), dtype=np.int64) if unit_channels is None else np.asarray(unit_channels)
    need = np.array([step // math.gcd(step, int(u)) if u > 0 else 0 for u in per], dtype=np.int64)
    steps = np.array([n if n > 0 and s % n == 0 else 1 for n, s in zip(need, cost.sizes)], dtype=np.int64)
    out = copy.copy(cost)
    return dataclasses.replace(out, sizes=cost.sizes // steps, A=cost.A * steps[None, :], B=cost.B * steps[None, :],
                               steps=steps)
