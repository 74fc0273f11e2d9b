"""Measured latency: a per-layer latency table that the knapsack can budget, and paired timing of
whole models.

Method (what :func:`measure_table` does). The model is traced once on one image to list every
conv/linear call with the modules that run right after it on its output — batch/group norms and
parameter-free modules (activations, pooling, dropout, stochastic depth) whose input has the shape of
the previous output — because MACs miss exactly those: norms, activations, squeeze-excitation
pooling and memory-bound depthwise convs. Each call becomes a stand-alone block (a fresh conv/linear
of the same kernel, stride and padding, then fresh norms / copies of the parameter-free modules) at
the call's input size and the table's batch, and is timed at full width and with its prunable output
and input channels halved, in interleaved rounds (every variant once per round, rotating order;
median of the rounds). Per call this fits

    t(cin, cout) = a · cin · cout + b · cout + d        (seconds per batch)

(``a`` from halving the input, ``b`` from halving the output, ``d`` the rest: per-op overhead);
``a, b ≥ 0``. A depthwise conv has ``cin/groups = 1``, so it is linear in its channels. What no
module does (residual additions, the SE multiply, reshapes) is not in the blocks, and blocks timed
alone run with warmer caches than inside the network, so the table is then calibrated on two whole
models timed in interleaved rounds — the dense one and copies with every group cut to 0.7, 0.5 and
0.35 of its channels: ``t(k) = offset + scale · Σ (a·cin·cout + b·cout)`` reproduces the dense time
and fits the copies' measured ratios by least squares (``scale`` clamped to [0.5, 3]). The cost model of :func:`latency_cost` is this sum, in the form of :mod:`kpid_core.engine.cost`,
so the allocation linearises it like the coupled MAC model; a budget is a fraction of the dense
model's calibrated (= measured) latency. ``unmodelled_s`` records what the blocks alone missed.

Timing: CPU with ``time.perf_counter`` at a fixed thread count; CUDA with CUDA events, optionally
under fp16 autocast (AMP) and channels_last, ``cudnn.benchmark`` on. Tables are cached as JSON,
keyed by an architecture hash (layers, their followers, input size), device name, batch, dtype,
thread count, AMP/channels_last, the torch version, the repeats and shortest sample, and the timing
method's version (``TIMING_VERSION``): any change measures a new table.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kpid_core.engine.cost import CostModel
from kpid_core.engine.groups import ChannelGroups, is_depthwise
from kpid_core.engine.timing import (  # re-exported: the table's public API includes its timing names
    TIMING_VERSION,
    LatencySettings,
    Threads,
    Timer,
    device_name,
    paired_latency,
    time_calls,
    time_interleaved,
)
from kpid_core.errors import ConfigError
from kpid_core.files import atomic_write_text, output_dir, storage_errors

__all__ = ["TABLE_FORMAT", "LatencySettings", "LatencyTable", "Timer", "arch_hash", "device_name", "latency_cost",
           "latency_table", "measure_table", "paired_latency", "time_calls", "time_interleaved"]

TABLE_FORMAT = 3
_FOLLOW_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)
_HALF = 0.5
#: Channel fractions of the uniformly cut copies the table is calibrated on (with the dense model).
_REFERENCE_WIDTHS = (0.7, 0.5, 0.35)


# ---- the table -------------------------------------------------------------------------------------
@dataclass
class LatencyTable:
    """Fitted per-call latency ``t = a·cin·cout + b·cout + d`` (seconds per batch), in the order of
    the model's conv/linear calls (``names``), with the key it was measured under."""

    key: dict[str, Any]
    names: list[str]
    a: list[float]
    b: list[float]
    d: list[float]
    full_s: list[float]
    dense_s: float
    unmodelled_s: float
    followers: list[list[str]] = field(default_factory=list)
    seconds: float = 0.0
    scale: float = 1.0
    offset_s: float | None = None
    reference: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"format": TABLE_FORMAT, **asdict(self)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> LatencyTable:
        d = json.loads(text)
        if d.pop("format", None) != TABLE_FORMAT:
            raise ValueError("table format")
        return cls(**d)

    def modelled_s(self) -> float:
        """Modelled latency of the dense model (the sum of the calls' full-width fits)."""
        return float(sum(self.full_s))

    def variable_s(self) -> float:
        """The channel-dependent part of the table at full width (seconds)."""
        return float(sum(self.full_s) - sum(self.d))


@dataclass
class _Call:
    name: str
    module: nn.Module
    in_shape: tuple[int, ...]
    followers: list[nn.Module]


def _trace_calls(model: nn.Module, x: torch.Tensor) -> list[_Call]:
    """Every conv/linear call in order, with the modules that follow it on its output."""
    events: list[tuple[str, nn.Module, tuple, tuple]] = []

    def hook(name):
        def record(mod, inp, out) -> None:
            if inp and isinstance(inp[0], torch.Tensor) and isinstance(out, torch.Tensor):
                events.append((name, mod, tuple(inp[0].shape), tuple(out.shape)))
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()
               if n and next(m.children(), None) is None]
    was = model.training
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    calls: list[_Call] = []
    for i, (name, mod, ishape, oshape) in enumerate(events):
        if not isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear)):
            continue
        follow, shape = [], oshape
        for _n, m2, i2, o2 in events[i + 1:]:
            if isinstance(m2, (nn.modules.conv._ConvNd, nn.Linear)) or i2 != shape:
                break
            if not (isinstance(m2, _FOLLOW_TYPES) or next(m2.parameters(recurse=False), None) is None):
                break
            follow.append(m2)
            shape = o2
        calls.append(_Call(name, mod, ishape, follow))
    return calls


def arch_hash(model: nn.Module, input_shape: tuple[int, ...]) -> str:
    """A hash of what the table depends on: every conv/linear call (type, channels, kernel, stride,
    padding, groups, input size) and the modules that follow it.

    Args:
        model: the dense model.
        input_shape: one image's shape (C, H, W).

    Returns:
        16 hex digits.
    """
    calls = _trace_calls(model, torch.zeros(1, *input_shape, device=_device_of(model)))
    desc = [[c.name, repr(c.module), list(c.in_shape[1:]), [repr(f) for f in c.followers]] for c in calls]
    return hashlib.sha256(json.dumps([list(input_shape), desc]).encode()).hexdigest()[:16]


def _device_of(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def table_key(model: nn.Module, input_shape: tuple[int, ...], settings: LatencySettings) -> dict[str, Any]:
    """The cache key of a table (see the module docstring)."""
    return {"arch": arch_hash(model, input_shape), "input": list(input_shape), "device": device_name(settings.device),
            "batch": settings.batch, "dtype": settings.dtype, "threads": settings.threads, "amp": settings.amp,
            "channels_last": settings.channels_last, "torch": torch.__version__, "repeats": settings.repeats,
            "min_sample_s": settings.min_sample_s, "timing": TIMING_VERSION}


def _block(call: _Call, cin: int, cout: int) -> nn.Module:
    m = call.module
    if isinstance(m, nn.Linear):
        layer: nn.Module = nn.Linear(cin, cout, bias=m.bias is not None)
    else:
        dw = is_depthwise(m)
        groups = cin if dw else m.groups  # a grouped conv's widths are multiples of its groups
        layer = type(m)(cin, cout if not dw else cin, m.kernel_size, m.stride, m.padding, m.dilation, groups,
                        m.bias is not None)
    out_c = cin if isinstance(m, nn.modules.conv._ConvNd) and is_depthwise(m) else cout
    follow = []
    for f in call.followers:
        if isinstance(f, nn.modules.batchnorm._BatchNorm):
            follow.append(type(f)(out_c, eps=f.eps, momentum=f.momentum, affine=f.affine))
        elif isinstance(f, nn.GroupNorm):
            follow.append(nn.GroupNorm(math.gcd(f.num_groups, out_c), out_c, eps=f.eps, affine=f.affine))
        else:
            follow.append(copy.deepcopy(f))
    return nn.Sequential(layer, *follow)


def _half(n: int, step: int) -> int:
    """About :data:`_HALF` of ``n`` channels, a multiple of ``step`` (a grouped conv's groups), at least ``step``."""
    return max(step, round(n * _HALF / step) * step)


def _fit(t1: float, t_in: float | None, t_out: float | None, c: int, c_h: int, o: int, o_h: int
         ) -> tuple[float, float, float]:
    """(a, b, d) of ``t = a·cin·cout + b·cout + d`` from the full-width time and the halved ones."""
    a = max((t1 - t_in) / (o * (c - c_h)), 0.0) if t_in is not None else 0.0
    b = max((t1 - t_out) / (o - o_h) - a * c, 0.0) if t_out is not None else 0.0
    if t_in is not None and t_out is None:  # output fixed (the classifier): all of it is per input channel
        b = 0.0
    var = a * c * o + b * o
    if var > t1 > 0:  # noise: never model more than was measured
        a, b, var = a * t1 / var, b * t1 / var, t1
    return a, b, t1 - var


def measure_table(model: nn.Module, groups: ChannelGroups, settings: LatencySettings,
                  log: Callable[[str], None] | None = None) -> LatencyTable:
    """Time every conv/linear call of ``model`` with its followers (see the module docstring).

    Args:
        model: the dense model (not modified).
        groups: its channel groups (which channel dims of each call are prunable).
        settings: device, batch, threads, AMP, channels_last, repeats.
        log: optional progress callback (one line per 10 calls).

    Returns:
        The fitted table (not cached; see :func:`latency_table`).
    """
    settings.check()
    t_start = time.perf_counter()
    input_shape = tuple(groups.input_shape)
    calls = _trace_calls(model, torch.zeros(1, *input_shape, device=_device_of(model)))
    if [c.name for c in calls] != [lay.name for lay in groups.layers]:
        raise RuntimeError("internal: the latency trace and the MAC trace list different conv/linear calls")
    timer = Timer(settings)
    a, b, d, full = [], [], [], []
    with Threads(settings.threads):
        for i, (call, lay) in enumerate(zip(calls, groups.layers)):
            c, o = lay.in_channels, lay.out_channels
            dw = lay.groups > 1 and lay.groups == c  # depthwise: its channels are its input's
            step = lay.groups if lay.groups > 1 and not dw else 1  # a grouped conv keeps its groups
            p_in = bool(groups.A[i].any()) and not dw
            p_out = bool(groups.B[i].any())
            c_h, o_h = _half(c, step), _half(o, step)
            shape = (settings.batch, *call.in_shape[1:])
            variants = [(c, o)] + ([(c_h, o)] if p_in and c_h < c else []) + ([(c, o_h)] if p_out and o_h < o else [])
            fns = []
            for ci, co in variants:
                if dw:  # depthwise: the channels are its input's
                    ci = co
                fns.append(timer.prepare(_block(call, ci, co), (shape[0], ci, *shape[2:])))
            med = [statistics.median(s) for s in time_interleaved(fns, settings.repeats, timer,
                                                                  min_sample_s=settings.min_sample_s)]
            t_in = med[1] if len(variants) > 1 and variants[1][0] != c else None
            t_out = med[-1] if len(variants) > 1 and variants[-1][1] != o else None
            cin_eff = 1 if dw else c // step  # the cost model's cin is per group (cin / groups)
            ai, bi, di = _fit(med[0], t_in, t_out, cin_eff, c_h // step if t_in is not None else cin_eff, o, o_h)
            a.append(ai)
            b.append(bi)
            d.append(di)
            full.append(med[0])
            if log is not None and (i + 1) % 10 == 0:
                log(f"latency table: {i + 1}/{len(calls)} layers ({time.perf_counter() - t_start:.0f} s)")
        table = LatencyTable(table_key(model, input_shape, settings), [c.name for c in calls], a, b, d, full, 0.0,
                             0.0, [[type(f).__name__ for f in c.followers] for c in calls])
        _calibrate(table, model, groups, settings, timer)
    table.seconds = time.perf_counter() - t_start
    return table


def _calibrate(table: LatencyTable, model: nn.Module, groups: ChannelGroups, settings: LatencySettings,
               timer: Timer) -> None:
    """Fit the table to whole-model measurements: the dense model and copies with every group cut
    to :data:`_REFERENCE_WIDTHS` of its channels, timed in interleaved rounds. Stand-alone blocks
    miss what runs between them (residual additions, the SE multiply) and run with warmer caches
    than inside the network, so the table's channel-dependent part is rescaled (``scale``, least
    squares over the references' paired ratios) and its constant replaced (``offset_s``) so that
    ``t(k) = offset_s + scale · variable(k)`` reproduces the dense time exactly."""
    from kpid_core.engine.groups import find_groups
    from kpid_core.engine.surgery import remove_channels

    x = torch.zeros(1, *groups.input_shape, device=_device_of(model))
    shape = (settings.batch, *groups.input_shape)
    fns, counts = [timer.prepare(copy.deepcopy(model), shape)], []
    for w in _REFERENCE_WIDTHS:
        net = copy.deepcopy(model)
        g2 = find_groups(net, x)
        k = np.maximum(1, np.round(w * g2.sizes)).astype(np.int64)
        remove_channels(net, g2, {g.key: list(range(int(n))) for g, n in zip(g2, k)})
        fns.append(timer.prepare(net, shape))
        counts.append(k)
    # one-shot whole-model ratios steer the whole table: more rounds than a block gets
    samples = time_interleaved(fns, max(2 * settings.repeats, 5), timer, min_sample_s=settings.min_sample_s)
    t1 = statistics.median(samples[0])
    ratios = [statistics.median(s / d for d, s in zip(samples[0], ref)) for ref in samples[1:]]
    raw = latency_cost(groups, table)
    d_sum, v1 = float(np.sum(table.d)), table.variable_s()
    gaps = [v1 - (raw.total(k) / 1e6 - d_sum) for k in counts]  # V(dense) − V(reference), > 0
    den = sum(g * g for g in gaps)
    scale = t1 * sum((1 - r) * g for r, g in zip(ratios, gaps)) / den if den > 0 else 1.0
    scale = float(min(max(scale, 0.5), 3.0))  # beyond these the measurement, not the table, is off
    table.dense_s, table.unmodelled_s = t1, t1 - table.modelled_s()
    table.scale, table.offset_s = scale, t1 - scale * v1
    table.reference = {}
    for w, r, g in zip(_REFERENCE_WIDTHS, ratios, gaps):
        table.reference.update({f"w{w}_measured_ratio": r, f"w{w}_table_ratio": (v1 - g + d_sum) / table.modelled_s(),
                                f"w{w}_calibrated_ratio": (table.offset_s + scale * (v1 - g)) / t1})


def _cache_dir(settings: LatencySettings) -> Path:
    if settings.cache_dir:
        return Path(settings.cache_dir)
    root = os.environ.get("KPID_CACHE_DIR")
    return Path(root) / "latency" if root else Path.home() / ".cache" / "kpid" / "latency"


def latency_table(model: nn.Module, groups: ChannelGroups, settings: LatencySettings,
                  log: Callable[[str], None] | None = None) -> LatencyTable:
    """The cached table for ``model`` under ``settings``, measured (and cached) when there is none.

    A cached file is used only if its stored key equals the current key (architecture hash, input
    size, device name, batch, dtype, threads, AMP, channels_last, torch version, repeats, shortest
    sample, timing version); a corrupt or stale file is measured again and replaced.

    Args:
        model: the dense model.
        groups: its channel groups.
        settings: the measurement settings (``cache_dir`` where tables live).
        log: optional progress callback.

    Returns:
        The table.
    """
    settings.check()
    key = table_key(model, tuple(groups.input_shape), settings)
    path = _cache_dir(settings) / (hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24] + ".json")
    if path.is_file():
        try:
            table = LatencyTable.from_json(path.read_text())
            if table.key == key:
                return table
        except (OSError, ValueError, TypeError):
            pass
    what = "latency.cache_dir (prune --cache-dir)"
    output_dir(path.parent, what)  # before minutes of measuring: a cache that cannot be made or written fails now
    table = measure_table(model, groups, settings, log)
    with storage_errors(what, path.parent):
        atomic_write_text(path, table.to_json())
    return table


def latency_cost(groups: ChannelGroups, table: LatencyTable) -> CostModel:
    """The table as a cost model over ``groups`` (microseconds per batch).

    Args:
        groups: the channel groups of the model the table was measured on.
        table: its latency table.

    Returns:
        A float cost model: ``total()`` is the modelled dense latency in µs.
    """
    if table.names != [lay.name for lay in groups.layers]:
        raise ConfigError("latency table does not match the model's layers (measured on another architecture?)")
    us = 1e6
    scale = table.scale if table.offset_s is not None else 1.0
    a = np.asarray(table.a) * us * scale
    b = np.asarray(table.b) * us * scale
    const = table.offset_s if table.offset_s is not None else float(np.sum(table.d))
    zero = np.zeros(len(a))
    return CostModel("latency", "modelled latency", groups.sizes.copy(), groups.A, groups.B, groups.A0, groups.B0,
                     a, zero, b, const * us)
