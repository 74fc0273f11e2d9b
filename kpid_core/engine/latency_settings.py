"""The settings of a latency measurement (device, batch, threads, repeats, landing), with their
defaults and checks, in a module that imports no torch: the trial config, the ``prune`` command's
options and :mod:`kpid_core.engine.timing` all take their defaults from :class:`LatencySettings`.
"""

from __future__ import annotations

from dataclasses import dataclass

from kpid_core.errors import ConfigError

__all__ = ["LatencySettings"]


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass(frozen=True)
class LatencySettings:
    """Where and how latency is measured.

    Args:
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        batch: images per forward.
        threads: torch intra-op threads while timing (CPU).
        amp: fp16 autocast (CUDA only).
        channels_last: channels_last memory format (CUDA only in practice).
        repeats: interleaved timing rounds (the median is taken).
        min_sample_s: each timing sample repeats the call until it lasts this long (seconds).
        cache_dir: where tables are cached; None = ``$KPID_CACHE_DIR/latency`` or
            ``~/.cache/kpid/latency``.
        land_rounds: a latency budget is landed on measured latency with at most this many
            re-prunes at corrected table budgets (:mod:`kpid_core.engine.landing`); 0 = the table's
            allocation as it is.
        land_tolerance: landing stops once the measured ratio is within this fraction of the budget.
        land_repeats: interleaved dense/pruned rounds per landing measurement (median); while the
            measurement is too noisy to tell whether it is within ``land_tolerance``, blocks of as
            many rounds are added, three blocks at most (:func:`kpid_core.engine.landing.measured_ratio`).
    """

    device: str = "cpu"
    batch: int = 8
    threads: int = 1
    amp: bool = False
    channels_last: bool = False
    repeats: int = 5
    cache_dir: str | None = None
    min_sample_s: float = 0.02
    land_rounds: int = 3
    land_tolerance: float = 0.02
    land_repeats: int = 9

    def check(self) -> LatencySettings:
        """Validate every field (ConfigError naming it); returns self."""
        if not (self.device in ("cpu", "cuda") or str(self.device).startswith("cuda:")):
            raise ConfigError(f"latency device {self.device!r}: allowed values are cpu, cuda, cuda:N")
        if str(self.device).startswith("cuda") and not _cuda_available():
            raise ConfigError(f"latency device {self.device!r}: CUDA is not available here; allowed: cpu")
        for name in ("batch", "threads", "repeats", "land_repeats"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"latency {name} must be a whole number >= 1, got {v!r}")
        if isinstance(self.land_rounds, bool) or not isinstance(self.land_rounds, int) or self.land_rounds < 0:
            raise ConfigError(f"latency land_rounds must be a whole number >= 0, got {self.land_rounds!r}")
        if isinstance(self.land_tolerance, bool) or not (isinstance(self.land_tolerance, (int, float))
                                                         and 0 < self.land_tolerance < 1):
            raise ConfigError(f"latency land_tolerance must be in (0, 1), got {self.land_tolerance!r}")
        if not (isinstance(self.min_sample_s, (int, float)) and 0 < self.min_sample_s <= 10):
            raise ConfigError(f"latency min_sample_s must be in (0, 10] seconds, got {self.min_sample_s!r}")
        return self

    @property
    def dtype(self) -> str:
        return "float16-autocast" if self.amp else "float32"
