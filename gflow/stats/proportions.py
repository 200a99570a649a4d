"""Success probability vs a parameter with Wilson or Clopper-Pearson intervals."""

from __future__ import annotations

import dataclasses

import numpy as np

from ._base import Result, check_binary, check_confidence, check_grid

__all__ = ["Proportions", "proportion_interval", "proportions"]

_METHODS = {"wilson": "wilson", "clopper-pearson": "exact", "exact": "exact"}


def proportion_interval(k, n, *, confidence: float = 0.95, method: str = "wilson"):
    """Confidence interval of a binomial proportion ``k / n`` (elementwise).

    ``method``: ``"wilson"`` (score interval) or ``"clopper-pearson"`` (exact; alias
    ``"exact"``), from :meth:`scipy.stats.binomtest.proportion_ci`.

    Returns:
        ``(lo, hi)``, arrays of the broadcast shape of ``k`` and ``n``.
    """
    confidence = check_confidence(confidence)
    if method not in _METHODS:
        raise ValueError(f"method={method!r} is unknown; valid values are {list(_METHODS)}.")
    k, n = np.broadcast_arrays(np.asarray(k), np.asarray(n))
    if not (np.all(k == np.round(k)) and np.all(n == np.round(n))):
        raise ValueError("k and n must be whole numbers (successes and trials).")
    if np.any(n < 1) or np.any(k < 0) or np.any(k > n):
        raise ValueError("need n >= 1 trials and 0 <= k <= n successes.")
    import scipy.stats  # here, not at import: it takes longer to import than all of gflow

    lo, hi = np.empty(k.shape), np.empty(k.shape)
    for i in np.ndindex(k.shape):
        ci = scipy.stats.binomtest(int(k[i]), int(n[i])).proportion_ci(confidence, _METHODS[method])
        lo[i], hi[i] = ci.low, ci.high
    return lo, hi


@dataclasses.dataclass(frozen=True)
class Proportions(Result):
    """Success frequency per grid value: ``p = successes / trials`` in ``[lo, hi]``."""

    grid: tuple[float, ...]
    successes: tuple[int, ...]
    trials: tuple[int, ...]
    p: tuple[float, ...]
    lo: tuple[float, ...]
    hi: tuple[float, ...]
    confidence: float
    method: str


def proportions(success, grid, *, confidence: float = 0.95, method: str = "wilson"
                ) -> Proportions:
    """Success probability vs a parameter, with intervals (see :func:`proportion_interval`).

    Arguments:
        success: ``(seeds, grid)`` booleans (or 0/1).
        grid: the parameter, ``(grid,)``.
    """
    s = check_binary(success, 2, "success", "(seeds, grid)")
    g = check_grid(grid, s.shape[1])
    k = s.sum(axis=0)
    n = np.full_like(k, s.shape[0])
    lo, hi = proportion_interval(k, n, confidence=confidence, method=method)
    return Proportions(tuple(g.tolist()), tuple(k.tolist()), tuple(n.tolist()),
                       tuple((k / n).tolist()), tuple(lo.tolist()), tuple(hi.tolist()),
                       confidence, method)

