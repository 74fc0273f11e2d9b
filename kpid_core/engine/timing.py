"""Timing models on a device: a timer (``time.perf_counter`` at a fixed thread count on
CPU; CUDA events on GPU, optionally under fp16 autocast and channels_last), interleaved rounds that
spread load drifts over every variant alike, and the paired dense-vs-pruned latency a trial reports.
The settings they take (:class:`LatencySettings`) live in :mod:`kpid_core.engine.latency_settings`,
which imports no torch, and are re-exported here.
:mod:`kpid_core.engine.latency_table` builds its per-layer table on these (and re-exports them).
"""

from __future__ import annotations

import copy
import math
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kpid_core.engine.latency_settings import LatencySettings
from kpid_core.engine.steady_memory import steady_memory

__all__ = ["TIMING_VERSION", "LatencySettings", "Threads", "Timer", "device_name", "paired_latency", "paired_samples", "time_calls",
           "time_interleaved"]

#: The timing method's version, part of a latency table's cache key: 2 = each sample follows one untimed
#: call of the same model (``time_interleaved``'s ``settle``); 3 = timing under
#: :func:`~kpid_core.engine.steady_memory.steady_memory`. Tables timed by another version are stale.
TIMING_VERSION = 3


def device_name(device: str) -> str:
    """A human and cache-key name of the timing device: the GPU's name, or the CPU model.

    Args:
        device: ``cpu`` or ``cuda[:N]``.

    Returns:
        e.g. ``"cuda: NVIDIA H200"`` or ``"cpu: Intel(R) Xeon(R) ... x86_64"``.
    """
    if str(device).startswith("cuda"):
        return f"cuda: {torch.cuda.get_device_name(torch.device(device))}"
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu: {model or platform.processor() or 'unknown'} {platform.machine()}".strip()


# ---- timing ----------------------------------------------------------------------------------------
class Timer:
    """Puts models on the settings' device and times calls (perf_counter on CPU, CUDA events on GPU).

    Args:
        settings: the :class:`LatencySettings`.
    """

    def __init__(self, settings: LatencySettings):
        self.s = settings
        self.device = torch.device(settings.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

    def prepare(self, model: nn.Module, input_shape: tuple[int, ...]) -> Callable[[], None]:
        """A no-argument function that runs ``model`` once on a random batch of ``input_shape``.

        Args:
            model: the module (moved to the device, eval mode; not copied).
            input_shape: the full input shape, batch first.

        Returns:
            The call.
        """
        model = model.eval().to(self.device)
        x = torch.randn(*input_shape, device=self.device)
        if self.s.channels_last and x.dim() == 4:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        amp = self.s.amp and self.device.type == "cuda"

        def call() -> None:
            with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.float16, enabled=amp):
                model(x)

        return call

    def time(self, fn: Callable[[], None], n: int) -> float:
        """Seconds per call, averaged over ``n`` back-to-back calls."""
        return time_calls(fn, n, self.device)


def time_calls(fn: Callable[[], None], n: int, device: torch.device) -> float:
    """Seconds per call of ``fn``, averaged over ``n`` back-to-back calls: CUDA events on a CUDA
    ``device`` (the queue is drained before reading them), ``time.perf_counter`` elsewhere.

    Args:
        fn: the call to time (e.g. one forward pass).
        n: how many calls.
        device: where ``fn`` runs.

    Returns:
        The mean seconds per call.
    """
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(n):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1e3 / n
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


class Threads:
    """Context manager: torch runs ``n`` intra-op threads inside, its previous count after.

    Args:
        n: threads while inside.
    """

    def __init__(self, n: int):
        self.n, self.old = n, torch.get_num_threads()

    def __enter__(self):
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.old)


def time_interleaved(fns: list[Callable[[], None]], repeats: int, timer: Timer, warmup: int = 2,
                     min_sample_s: float = 0.02, settle: int = 1) -> list[list[float]]:
    """Per function, ``repeats`` samples (seconds per call). Each round times every function once,
    starting at a rotating offset, so load drifts hit all alike; a sample repeats the call until it
    lasts at least ``min_sample_s``, and follows ``settle`` untimed calls of the same function, so that
    it measures the model as a process running only it would (see below).

    Why ``settle``: on CPU the first call after another model's pays for that model's memory state.
    Measured on ResNet-50 (batch 8, 224 px, glibc malloc): a forward of the dense model page-faults
    about 45,000 fresh pages every call, a pruned one none when it runs twice in a row but about
    2,500 right after the dense one; timed one call per sample (a large model's sample is one
    call), the switch moved the pruned/dense ratio by 1–3 % from one ordering to another.
    The rounds run under :func:`~kpid_core.engine.steady_memory.steady_memory`: garbage collected
    first, the collector paused, and on CPU glibc's malloc held steady, which removes those page
    faults altogether (the settle call keeps caches warm on every device).

    Args:
        fns: calls from :meth:`Timer.prepare`.
        repeats: rounds.
        timer: the timer.
        warmup: untimed calls of each function first.
        min_sample_s: the shortest sample.
        settle: untimed calls of a function right before each of its samples.

    Returns:
        ``samples[i]`` for ``fns[i]``.
    """
    with steady_memory(cpu_allocator=timer.device.type == "cpu"):
        for fn in fns:
            for _ in range(warmup):
                fn()
        if timer.device.type == "cuda":
            torch.cuda.synchronize()
        reps = [max(1, math.ceil(min_sample_s / max(timer.time(fn, 1), 1e-6))) for fn in fns]
        out: list[list[float]] = [[] for _ in fns]
        for r in range(repeats):
            for j in range(len(fns)):
                i = (j + r) % len(fns)
                for _ in range(settle):
                    fns[i]()
                out[i].append(timer.time(fns[i], reps[i]))
    return out


def paired_samples(dense: nn.Module, pruned: nn.Module, input_shape: tuple[int, ...], settings: LatencySettings,
                   repeats: int, enough: Callable[[list[float], list[float]], bool] | None = None,
                   max_blocks: int = 1) -> tuple[list[float], list[float]]:
    """Seconds per call of a dense and a pruned model (copies; the models stay where they are), timed
    in blocks of ``repeats`` interleaved rounds: after each block ``enough(dense_samples,
    pruned_samples)`` may end the measurement, at most ``max_blocks`` blocks.

    Args:
        dense: the dense model.
        pruned: the pruned model.
        input_shape: one image's shape (C, H, W).
        settings: device, batch, threads, AMP, channels_last, min_sample_s.
        repeats: rounds a block.
        enough: whether the samples so far suffice; None: one block.
        max_blocks: blocks at most.

    Returns:
        ``(dense samples, pruned samples)``, one of each per round.
    """
    settings.check()
    timer = Timer(settings)
    shape = (settings.batch, *input_shape)
    d: list[float] = []
    p: list[float] = []
    with Threads(settings.threads):
        fns = [timer.prepare(copy.deepcopy(m), shape) for m in (dense, pruned)]
        for block in range(max_blocks):
            bd, bp = time_interleaved(fns, repeats, timer, warmup=2 if block == 0 else 0,
                                      min_sample_s=settings.min_sample_s)
            d += bd
            p += bp
            if enough is None or enough(d, p):
                break
    return d, p


def paired_latency(dense: nn.Module, pruned: nn.Module, input_shape: tuple[int, ...],
                   settings: LatencySettings) -> dict[str, Any]:
    """Latency of a dense and a pruned model timed in interleaved pairs (copies are timed; the
    models are left where they were).

    Args:
        dense: the dense model.
        pruned: the pruned model.
        input_shape: one image's shape (C, H, W).
        settings: device, batch, threads, AMP, channels_last, repeats.

    Returns:
        ``latency_dense_ms`` and ``latency_ms`` (medians per batch, milliseconds), ``latency_ratio``
        (median over rounds of t_pruned / t_dense), ``latency_batch``, ``latency_device`` (named).
    """
    d, p = paired_samples(dense, pruned, input_shape, settings, settings.repeats)
    return {"latency_dense_ms": statistics.median(d) * 1e3, "latency_ms": statistics.median(p) * 1e3,
            "latency_ratio": statistics.median(b / a for a, b in zip(d, p)), "latency_batch": settings.batch,
            "latency_device": device_name(settings.device)}
