"""The median of a per-seed measurement with a percentile-bootstrap interval over seeds."""

from __future__ import annotations

import numpy as np

from ._base import check_confidence, check_resamples, percentile, seed_indices

__all__ = ["median_interval"]


def median_interval(values, *, confidence: float = 0.95, n_resamples: int = 2000,
                    seed: int = 0) -> list[float]:
    """``[median, lo, hi]`` of per-seed ``values`` ``(seeds,)`` (NaN entries, e.g. runs that
    never reached the event, are left out; all NaN gives NaNs): the median over seeds and
    its percentile-bootstrap interval, resampling seeds (the independent unit). With few
    seeds the interval is coarse: with 3 it is about the range of the values, and a
    single seed gives the value itself as its interval (no spread measured)."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    confidence, B = check_confidence(confidence), check_resamples(n_resamples)
    if v.size == 0:
        return [float("nan")] * 3
    boot = np.median(v[seed_indices(np.random.default_rng(seed), B, v.size)], axis=1)
    lo, hi = percentile(boot, confidence)
    return [float(np.median(v)), float(lo), float(hi)]
