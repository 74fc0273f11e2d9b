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
from kpid_core.prune import (
    PruneResult,
    export_onnx,
    load_pruned,
    output_channels,
    prune_to_budget,
    save_pruned,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "InfeasibleBudgetError",
    "KPIDError",
    "NonFiniteLossError",
    "PruneResult",
    "SpecError",
    "UnknownNameError",
    "__version__",
    "export_onnx",
    "load_pruned",
    "output_channels",
    "prune_to_budget",
    "save_pruned",
]
