"""The median of a per-seed measurement with a percentile-bootstrap interval over seeds, and a
verdict on which side of a threshold such an interval lies."""

from __future__ import annotations

import numpy as np

from ._base import check_confidence, check_resamples, percentile, seed_indices

__all__ = ["median_interval", "side_verdict"]


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


def side_verdict(interval, threshold: float, *, above: bool = True) -> str:
    """A claim "the quantity lies above (``above``) or below ``threshold``" judged by an
    interval ``[estimate, lo, hi]`` (as :func:`median_interval` returns it): ``"holds"`` if
    the whole interval lies on the claimed side, ``"does not hold"`` if it lies on the other
    side, else (it contains the threshold, or is NaN) ``"inconclusive"``."""
    _, lo, hi = (float(v) for v in interval)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "inconclusive"
    if (lo > threshold) if above else (hi < threshold):
        return "holds"
    if (hi < threshold) if above else (lo > threshold):
        return "does not hold"
    return "inconclusive"
