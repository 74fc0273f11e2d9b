"""A steady memory state while models are timed: no garbage left to collect, no collector running, and
(on CPU) glibc's malloc keeping what a forward pass frees.

Garbage first: pruning leaves reference cycles behind (traced copies of the model, their dependency
graphs and tensors) until Python's cyclic collector runs, and timing in their presence measured a
different ratio. Measured on EfficientNet-B0 pruned to about 0.3 of the dense latency (batch 8, 224 px,
one thread), right after a prune the pruned/dense ratio came out at 0.275–0.286, after ``gc.collect()``
at 0.314–0.324 (three alternations), the latter what a benchmark timing the same two networks later
measured; pausing the collector without collecting did not help (0.288–0.300). :func:`steady_memory`
therefore collects first and keeps the collector paused while timing, as :mod:`timeit` does.

The allocator:

Why: with glibc's default settings a buffer above the mmap threshold is returned to the operating
system when it is freed and page-faulted afresh (zeroed by the kernel) on its next allocation; the
threshold itself moves with what the process freed before (glibc raises it, up to 32 MiB, whenever a
mapped buffer is freed). Measured here on ResNet-50 (batch 8, 224 px, one thread): 30,000–40,000 minor
page faults (120–160 MiB) on every forward of the dense model, a count that changed with what the
process had allocated before, and none once the settings below held. The time a model takes then
depends on the process's history: the latency landing, the table and a benchmark timing the same two
networks in different processes disagreed by several percent (bench/BENCHMARKS.latency.md).

:func:`steady_allocator` makes glibc serve every allocation from its heap (``M_MMAP_MAX`` = 0) and
keep freed memory (``M_TRIM_THRESHOLD`` at its largest, 2 GiB) while it is entered, so every timed call after the
first finds its buffers mapped: the model's compute is timed in the state a caching allocator
(jemalloc, tcmalloc, PyTorch's CUDA allocator) gives, whatever ran before. On exit it sets the values
glibc's own dynamic rule settles at after a large free (mmap threshold 32 MiB, trim threshold 64 MiB)
and returns the free heap to the system (``malloc_trim``). Elsewhere (another C library, an allocator
preloaded in glibc's place still answers ``mallopt`` harmlessly, macOS, Windows) it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import platform
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["steady_allocator", "steady_memory"]

# glibc's mallopt parameters (malloc.h) and the values its dynamic mmap threshold reaches.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_MMAP_THRESHOLD_MAX = 32 << 20  # DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems
_MMAP_MAX_DEFAULT = 65536
_INT_MAX = (1 << 31) - 1  # mallopt takes a C int


def _libc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


@contextmanager
def steady_allocator() -> Iterator[bool]:
    """While inside, glibc malloc keeps freed memory and maps nothing per allocation (see the module).

    Yields:
        True where the settings took effect (Linux with glibc), False where nothing was changed.
    """
    libc = _libc()
    ok = libc is not None and bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _INT_MAX))
    try:
        yield ok
    finally:
        if libc is not None:
            libc.mallopt(_M_MMAP_MAX, _MMAP_MAX_DEFAULT)
            libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
            libc.mallopt(_M_TRIM_THRESHOLD, 2 * _MMAP_THRESHOLD_MAX)
            libc.malloc_trim(0)


@contextmanager
def steady_memory(cpu_allocator: bool = True) -> Iterator[None]:
    """Collect garbage, pause Python's cyclic collector and (``cpu_allocator``) hold glibc's malloc steady
    while inside; the collector's previous state is restored on exit.

    Args:
        cpu_allocator: also enter :func:`steady_allocator` (timing on CPU).
    """
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        with steady_allocator() if cpu_allocator else contextlib.nullcontext():
            yield
    finally:
        if was_enabled:
            gc.enable()
