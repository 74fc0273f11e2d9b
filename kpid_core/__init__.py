"""KPID core: Knapsack Pruning with Inner Distillation as a library (no Ray inside)."""

from kpid_core import module_aliases
from kpid_core.errors import (
    ConfigError,
    DataError,
    InfeasibleBudgetError,
    KPIDError,
    NonFiniteLossError,
    SpecError,
    UnknownNameError,
)

# The modules that moved into kpid_core.engine and kpid_core.training keep their old flat paths
# (kpid_core.macs, kpid_core.data, ...) as aliases of the same module objects, imported lazily.
module_aliases.install()

# The pruning API is re-exported lazily: `import kpid_core.errors` (every CLI's error handling, the
# analysis package) must not pay for importing torch, torch-pruning and torchvision.
_LAZY = {
    name: "kpid_core.prune"
    for name in ("PruneResult", "export_onnx", "load_pruned", "output_channels", "prune_to_budget", "save_pruned")
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kpid_core' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)

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
