"""Training: the data sets and loaders, inner distillation, the fine-tuning loop, data-parallel
training and the teacher. It may use :mod:`kpid_core.engine`, never the other way round.
Importing this package imports none of its modules (no torch).
"""
