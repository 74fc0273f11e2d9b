"""The names a trial config chooses from, in a module that imports nothing but the standard library.

Checking a config must not import torch (about 1.5 s of CPU): the sweep driver checks every trial a
sweep file can make before it starts, in a process that never builds a model. So the lists live here
and the modules that implement each choice take theirs from here (one list each). The knapsack's
solvers are :data:`kpid_core.engine.knapsack.METHODS` (that module needs only numpy).
"""

from __future__ import annotations

__all__ = ["ALLOCATIONS", "AUGMENTS", "COSTS", "DATASETS", "LINEARIZE_AT", "METRICS", "NORMALIZERS", "ROUND_TO"]

#: How the channels are allocated across groups (:func:`kpid_core.engine.allocation.allocate`).
ALLOCATIONS = ("knapsack", "uniform")
#: How group scores are put on one scale before the knapsack (:func:`~kpid_core.engine.allocation.normalize_scores`).
NORMALIZERS = ("none", "mean", "max", "cost")
#: Where the coupled cost model is linearised for the knapsack's first round.
LINEARIZE_AT = ("current", "uniform")
#: Cost model names: the budget is a fraction of the dense model's cost under the chosen model.
COSTS = ("macs", "params", "latency")
#: Allowed ``round_to`` values (1 = any channel count).
ROUND_TO = (1, 8, 16, 32)
#: The data sets :func:`kpid_core.training.data.build_data` reads.
DATASETS = ("digits", "fashion_mnist", "cifar10", "cifar100", "imagefolder", "synthetic")
#: Training augmentations.
AUGMENTS = ("imagenet", "small", "none")
#: The channel-importance metrics of :mod:`kpid_core.engine.importance`, in its registry's order (a test
#: keeps the two equal).
METRICS = ("l1", "l2", "bn_gamma", "random", "taylor", "taylor_abs", "taylor_sq", "sensitivity")
