"""The steady CPU memory state under which models are timed: with glibc, a forward pass with large
activations page-faults them afresh on every call outside ``steady_allocator`` and (nearly) not inside
it; the settings are put back on exit; ``time_interleaved`` times under it, after the garbage is
collected and with the collector paused. Counts page faults, never times."""

from __future__ import annotations

import gc
import subprocess
import sys
import weakref

import pytest

from kpid_core.engine import steady_memory
from kpid_core.engine.steady_memory import steady_allocator
from kpid_core.engine.timing import LatencySettings, Timer, time_interleaved

GLIBC = steady_memory._libc() is not None


# Run in a fresh interpreter: what glibc does with a freed buffer depends on what the process freed
# before (a test that timed models earlier in the same worker changes it).
_SCRIPT = """
import resource, torch
from torch import nn
from kpid_core.engine.steady_memory import steady_allocator

def faults(model, x):  # minor page faults of three forward calls after three untimed ones
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(3):
            model(x)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1)).eval()
x = torch.randn(8, 3, 256, 256)  # activations of 8 x 16 x 256 x 256 floats: 32 MiB each
outside = faults(model, x)
with steady_allocator() as ok:
    inside = faults(model, x)
print(ok, outside, inside)
"""


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's; elsewhere steady_allocator changes nothing")
def test_a_forward_pass_stops_page_faulting_inside():
    out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=120, check=True)
    ok, outside, inside = out.stdout.split()
    assert ok == "True"
    # 32 MiB is at glibc's largest mmap threshold: mapped anew on every call by default
    assert int(outside) >= 3 * 4096, outside  # at least a fresh 16 MiB a call
    assert int(inside) * 10 <= int(outside), (inside, outside)


def test_the_settings_are_put_back_on_exit_even_after_an_error(monkeypatch):
    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append(("mallopt", param, value))
            return 1

        def malloc_trim(self, pad):
            calls.append(("malloc_trim", pad))
            return 1

    monkeypatch.setattr(steady_memory, "_libc", FakeLibc)
    with pytest.raises(RuntimeError), steady_allocator() as ok:
        assert ok is True
        assert calls == [("mallopt", -4, 0), ("mallopt", -1, (1 << 31) - 1)]  # no mmap, no trimming
        raise RuntimeError("a timed model failed")
    assert calls[2:] == [("mallopt", -4, 65536), ("mallopt", -3, 32 << 20), ("mallopt", -1, 64 << 20),
                         ("malloc_trim", 0)]  # glibc's defaults for mmap, its settled thresholds, trimmed


@pytest.mark.skipif(GLIBC, reason="on glibc the settings do take effect (the test above)")
def test_without_glibc_nothing_changes():
    with steady_allocator() as ok:
        assert ok is False


def test_time_interleaved_times_cpu_calls_under_the_steady_allocator(monkeypatch):
    entered = []

    class Spy:
        def __enter__(self):
            entered.append(True)
            return True

        def __exit__(self, *exc):
            entered.append(False)

    monkeypatch.setattr(steady_memory, "steady_allocator", Spy)
    seen = []

    def call():
        seen.append(list(entered))

    time_interleaved([call], repeats=2, timer=Timer(LatencySettings(device="cpu")), warmup=1, min_sample_s=0.0)
    assert seen and all(s == [True] for s in seen)  # every call ran inside the block
    assert entered == [True, False]  # and it was left afterwards


def test_timing_starts_with_the_garbage_collected_and_the_collector_paused():
    collected = []

    class Cycle:  # garbage only the cyclic collector frees
        def __init__(self):
            self.me = self
            weakref.finalize(self, collected.append, "freed")

    gc.enable()
    gc.disable()  # so that nothing collects the cycle before the timing does
    try:
        Cycle()
        state = []
        time_interleaved([lambda: state.append((list(collected), gc.isenabled()))], repeats=1,
                         timer=Timer(LatencySettings(device="cpu")), warmup=0, min_sample_s=0.0)
    finally:
        gc.enable()
    assert state and all(s == (["freed"], False) for s in state)
    with steady_memory.steady_memory(cpu_allocator=False):
        assert not gc.isenabled()
    assert gc.isenabled()  # the collector's state is put back
