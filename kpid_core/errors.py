"""Typed errors. Every error a user can cause derives from :class:`KPIDError`; command-line entry
points print ``error: <message>`` on one line and exit with code 2 for these, never a traceback."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "InfeasibleBudgetError",
    "KPIDError",
    "NonFiniteLossError",
    "SpecError",
    "StorageError",
    "UnknownNameError",
    "UnsupportedModelError",
]


class KPIDError(Exception):
    """Base class for errors caused by input (config, files, arguments), not by bugs."""


class ConfigError(KPIDError, ValueError):
    """A config key or value is invalid; the message names the field and the allowed values."""


class UnknownNameError(ConfigError, KeyError):
    """An unknown model, metric, dataset or method name; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would otherwise wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class UnsupportedModelError(ConfigError):
    """A model whose structure the engine cannot prune (e.g. a vision transformer, a strided channel slice);
    the message names the model and the operation."""


class InfeasibleBudgetError(KPIDError, ValueError):
    """The MAC budget is below what the per-group floor (``min_keep``) allows."""

    def __init__(self, message: str, min_budget: float):
        super().__init__(message)
        self.min_budget = min_budget

    def __reduce__(self):
        # copy and pickle rebuild it with both arguments (Ray pickles a trial's exception and Tune
        # copies it; with ``args`` alone the copy failed and hid this error behind a TypeError)
        return type(self), (str(self), self.min_budget)


class SpecError(KPIDError):
    """A pruned-model spec, checkpoint or artifact file is missing, truncated or tampered with."""


class DataError(KPIDError):
    """A dataset directory is missing or not in the expected layout."""


class NonFiniteLossError(KPIDError, FloatingPointError):
    """Training produced a NaN/Inf loss; the trial stops with this status."""


class StorageError(KPIDError):
    """An output path cannot be created or written: permissions, a read-only or full disk, a quota.
    The message names the path and the option it came from; what was written before stays."""
