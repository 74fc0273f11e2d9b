"""KPID core: Knapsack Pruning with Inner Distillation as a library (no Ray inside)."""

from kpid_core.errors import (
    ConfigError,
    DataError,
    InfeasibleBudgetError,
    KPIDError,
    NonFiniteLossError,
    SpecError,
    UnknownNameError,
)

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "KPIDError",
    "ConfigError",
    "UnknownNameError",
    "InfeasibleBudgetError",
    "SpecError",
    "DataError",
    "NonFiniteLossError",
]
