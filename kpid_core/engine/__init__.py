"""The pruning engine: MAC counts, channel groups, importance, the knapsack, allocation, surgery, the
pruned-model spec, export, cost models and latency tables.

No module here imports :mod:`kpid_core.training` (nor ``trial``, ``baseline`` or ``progressive``):
the engine prunes a model without knowing how it is trained (``tests/test_imports.py`` keeps this).
Importing this package imports none of its modules (no torch).
"""
