"""Seeded hold-out splits, stratified by label: scikit-learn's ``train_test_split`` in numpy alone.

Every trial, Ray worker and CLI that builds its data splits it; importing scikit-learn for that (it
pulls in scipy and pandas) cost ~1.3 s of CPU per process. This is the same algorithm — the sizes of
``_validate_shuffle_split``, ``ShuffleSplit`` / ``StratifiedShuffleSplit`` and ``_approximate_mode`` of
scikit-learn 1.9, one ``numpy.random.RandomState`` drawn from in the same order — so the splits are the
ones scikit-learn makes (tests/core/test_holdout.py compares them where scikit-learn is installed),
and they no longer change with its version.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["holdout_split"]


def holdout_split(idx: np.ndarray, test_fraction: float, stratify: np.ndarray | None,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``idx`` into (rest, held out), as ``train_test_split(idx, test_size=test_fraction,
    stratify=stratify, random_state=seed)`` does.

    Args:
        idx: the items to split (a 1-D array).
        test_fraction: the held-out fraction, in (0, 1); ``ceil(test_fraction * len(idx))`` items.
        stratify: one label per item of ``idx`` (each class then keeps its share on both sides; every
            class needs two members), or None for a plain seeded shuffle.
        seed: the ``RandomState`` seed.

    Returns:
        ``(idx[rest], idx[held_out])``, each in the shuffled order scikit-learn returns.

    Raises:
        ValueError: a fraction outside (0, 1), a side left empty, or (stratified) a class with fewer
            than two members or more classes than either side can hold.
    """
    idx = np.asarray(idx)
    n = len(idx)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction} should be in (0, 1)")
    n_test = math.ceil(test_fraction * n)
    n_train = n - n_test
    if n_train <= 0:
        raise ValueError(f"{n} items with test_fraction={test_fraction} leave nothing on the other side")
    rng = np.random.RandomState(seed)
    if stratify is None:
        perm = rng.permutation(n)
        return idx[perm[n_test:n_test + n_train]], idx[perm[:n_test]]
    train, test = _stratified(np.asarray(stratify), n_train, n_test, rng)
    return idx[train], idx[test]


def _stratified(y: np.ndarray, n_train: int, n_test: int, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    classes, y_indices, class_counts = np.unique(y, return_inverse=True, return_counts=True)
    if class_counts.min() < 2:
        raise ValueError("the least populated class has only 1 member (stratifying needs 2)")
    if n_train < len(classes) or n_test < len(classes):
        raise ValueError(f"both sides must hold one item of each of the {len(classes)} classes "
                         f"(sizes {n_train} and {n_test})")
    class_indices = np.split(np.argsort(y_indices.ravel(), kind="stable"), np.cumsum(class_counts)[:-1])
    n_i = _approximate_mode(class_counts, n_train, rng)
    t_i = _approximate_mode(class_counts - n_i, n_test, rng)
    train: list = []
    test: list = []
    for i in range(len(classes)):
        members = class_indices[i].take(rng.permutation(class_counts[i]), mode="clip")
        train.extend(members[:n_i[i]])
        test.extend(members[n_i[i]:n_i[i] + t_i[i]])
    return rng.permutation(train), rng.permutation(test)


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """How many of ``n_draws`` come from each class: the floored proportional shares, the rest given to
    the largest remainders (ties broken by ``rng``)."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            floored[rng.choice(inds, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)
