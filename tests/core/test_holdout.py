"""The hold-out split is scikit-learn's ``train_test_split``, item for item, without importing it."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from kpid_core.training.holdout import holdout_split

_CASES = [  # (class sizes, held-out fraction): balanced, skewed, odd remainders, two classes, many
    ([180] * 10, 0.2), ([50, 3, 17, 2, 90], 0.15), ([7, 7, 7], 0.5), ([2, 2], 0.5),
    ([1000, 10], 0.01 + 0.02), ([5] * 40, 0.6), ([33, 34, 35], 0.1 / 0.8),
]


@pytest.mark.parametrize("sizes, frac", _CASES)
@pytest.mark.parametrize("stratified", [True, False])
def test_the_same_split_as_scikit_learn(sizes, frac, stratified):
    labels = np.repeat(np.arange(len(sizes)), sizes)
    for seed in range(4):
        order = np.random.default_rng(seed).permutation(len(labels))  # labels in no particular order
        lab = labels[order]
        idx = np.arange(100, 100 + len(lab))  # items that are not their own positions
        strat = lab if stratified else None
        ours = holdout_split(idx, frac, strat, seed)
        ref = train_test_split(idx, test_size=frac, stratify=strat, random_state=seed)
        for a, b in zip(ours, ref):
            np.testing.assert_array_equal(a, b)


def test_refusals_are_value_errors_as_in_scikit_learn():
    idx = np.arange(10)
    for frac in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="test_fraction"):
            holdout_split(idx, frac, None, 0)
    with pytest.raises(ValueError, match="only 1 member"):
        holdout_split(idx, 0.5, np.array([0] * 9 + [1]), 0)
    with pytest.raises(ValueError, match="one item of each"):
        holdout_split(idx, 0.1, np.array([0, 1] * 5), 0)
