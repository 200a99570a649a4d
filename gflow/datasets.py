"""Real data sets as :class:`gflow.data.Dataset` objects (synthetic generators live in
:mod:`gflow.data`): scikit-learn's digits as a binary task."""

from __future__ import annotations

import jax
import numpy as np

from .data import Dataset

__all__ = ["digits"]


def digits(key, *, test_fraction: float = 0.3) -> Dataset:
    """scikit-learn's digits as a binary task: ``y = +1`` for digits >= 5, ``-1`` for < 5.

    A random train/test split (``key``); features standardized with the training mean and
    standard deviation, then every input scaled to unit norm. ``meta["digit"]`` holds the
    original labels of the training split.
    """
    from sklearn.datasets import load_digits

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}.")
    X, digit = load_digits(return_X_y=True)
    perm = np.asarray(jax.random.permutation(key, X.shape[0]))
    n_test = int(round(test_fraction * X.shape[0]))
    te, tr = perm[:n_test], perm[n_test:]
    mu, sd = X[tr].mean(0), X[tr].std(0)
    Z = (X - mu) / np.where(sd > 0, sd, 1.0)
    Z = Z / np.linalg.norm(Z, axis=1, keepdims=True)
    y = np.where(digit >= 5, 1.0, -1.0)
    return Dataset(Z[tr], y[tr], Z[te], y[te], meta={"digit": digit[tr]})
