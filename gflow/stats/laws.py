"""Power laws ``y ~ C x^alpha`` with bootstrap intervals, censored points and flags."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ._base import (
    Result,
    check_binary,
    check_budget,
    check_confidence,
    check_grid,
    check_level,
    check_resamples,
    check_x,
    percentile,
    seed_indices,
)
from .crossing import Crossing, crossing_from_resamples, log_crossings

__all__ = ["FLAGS", "PowerLaw", "loglog_fit", "loglog_slope", "power_law", "threshold_law"]

#: what each flag of a :class:`PowerLaw` means
FLAGS = {
    "fewer_than_3_points": "fewer than 3 resolved (uncensored, not budget-bound) points",
    "x_range_under_decade": "the resolved points span less than a factor 10 in x",
    "y_range_under_grid_step": "the resolved thresholds span less than one grid step: the grid "
                               "cannot resolve the exponent",
    "interval_spans_candidates": "the interval contains every candidate exponent",
    "lower_bound_above_fit": "a censored point's lower bound lies above the fitted law",
    "upper_bound_below_fit": "a censored point's upper bound lies below the fitted law",
    "bootstrap_censored": "more resamples than one tail of the interval ((1 - confidence) / 2) "
                          "put a fitted point off the grid; the interval, from the others, is "
                          "conditional on them",
}


@dataclasses.dataclass(frozen=True)
class PowerLaw(Result):
    """``y ~ prefactor * x^exponent`` fitted by least squares in log-log on the resolved points,
    ``exponent`` in ``[lo, hi]`` at ``confidence``.

    ``x, y, censored`` list *every* point (``y`` of a censored point is its bound, NaN if it has
    none; ``censored`` is ``"none"``, ``"above"`` (lower bound), ``"below"`` (upper bound) or
    ``"budget"`` (on the grid, but the time budget moves it; whether a bound is budget-bound
    too is in ``points[i].budget_binding``)); ``n_points`` counts the resolved points behind
    the fit, ``n_seeds`` the seeds per
    point; ``flags`` name what the data cannot resolve (:data:`FLAGS`), empty if nothing;
    ``points`` holds the per-point :class:`Crossing` of a :func:`threshold_law`.
    """

    exponent: float
    lo: float
    hi: float
    prefactor: float
    confidence: float
    n_points: int
    n_seeds: int
    n_resamples: int
    x: tuple[float, ...]
    y: tuple[float, ...]
    censored: tuple[str, ...]
    flags: tuple[str, ...]
    candidates: tuple[float, ...]
    method: str
    points: tuple[Crossing, ...] = ()

    @property
    def resolved(self) -> bool:
        return not self.flags


def _slopes(u: np.ndarray, v: np.ndarray):
    """OLS slope and intercept of ``v (..., P)`` on ``u (P,)``."""
    du = u - u.mean()
    slope = (v * du).sum(axis=-1) / (du**2).sum()
    return slope, v.mean(axis=-1) - slope * u.mean()


def _power_law(x, y, censored, budget_bound, logboot, *, confidence, candidates, n_seeds,
               B, method, grid=None, points=()) -> PowerLaw:
    """Fit, interval and flags, given point values ``y (P,)`` (estimate, or the bound of a
    censored point), per-point kinds, and bootstrap replicates ``logboot (B, P)`` (or None)."""
    use = np.array([c == "none" and not bb for c, bb in zip(censored, budget_bound, strict=True)])
    y = np.asarray(y, float)
    u, v = np.log(x), np.log(y)
    n, flags = int(use.sum()), []
    if n < 3:
        flags.append("fewer_than_3_points")
    if n < 2 or np.ptp(u[use]) == 0:
        slope = icpt = lo = hi = math.nan
    else:
        slope, icpt = (float(t) for t in _slopes(u[use], v[use]))
        if logboot is None:  # no seed-level data: t interval of the OLS slope
            if n > 2:
                import scipy.stats  # here, not at import (slow to import)

                r = scipy.stats.linregress(u[use], v[use])
                t = scipy.stats.t.ppf(0.5 + confidence / 2, n - 2)
                lo, hi = slope - t * r.stderr, slope + t * r.stderr
            else:
                lo, hi = -math.inf, math.inf
        else:
            vb = logboot[:, use]
            fin = np.all(np.isfinite(vb), axis=1)
            if (1.0 - fin.mean()) > (1.0 - confidence) / 2:
                flags.append("bootstrap_censored")
            sb = _slopes(u[use], vb[fin])[0] if fin.any() else np.array([math.nan])
            lo, hi = (float(t) for t in percentile(sb, confidence))
        if np.ptp(u[use]) < math.log(10.0):
            flags.append("x_range_under_decade")
        if grid is not None and np.ptp(v[use]) < np.max(np.diff(np.log(grid))):
            flags.append("y_range_under_grid_step")
        if len(candidates) >= 2 and all(lo <= c <= hi for c in candidates):
            flags.append("interval_spans_candidates")
        fit = icpt + slope * u
        for kind, name, wrong in (("above", "lower_bound_above_fit", np.greater),
                                  ("below", "upper_bound_below_fit", np.less)):
            sel = np.array([c == kind for c in censored]) & np.isfinite(v)
            if np.any(wrong(v[sel], fit[sel])):
                flags.append(name)
    return PowerLaw(
        exponent=float(slope), lo=float(lo), hi=float(hi),
        prefactor=math.exp(icpt) if np.isfinite(icpt) else math.nan, confidence=confidence,
        n_points=n, n_seeds=int(n_seeds), n_resamples=B, x=tuple(x.tolist()), y=tuple(y.tolist()),
        censored=tuple("budget" if (c == "none" and bb) else c
                       for c, bb in zip(censored, budget_bound, strict=True)),
        flags=tuple(flags), candidates=tuple(float(c) for c in candidates), method=method,
        points=tuple(points))


def _candidates(c) -> tuple[float, ...]:
    c = () if c is None else tuple(c)
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in c):
        raise ValueError(f"candidates must be finite exponents, e.g. (2, 8), got {c!r}.")
    return tuple(float(v) for v in c)


def threshold_law(x, success, grid, *, level: float = 0.5, budget=None, candidates=None,
                  confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> PowerLaw:
    """Power law of the success threshold: ``crossing(x) ~ C x^alpha``.

    Arguments:
        x: ``(points,)`` positive setting per point (e.g. ``1/gamma`` or ``n``).
        success: ``(points, seeds, grid)`` booleans; the same seed index at different points
            may share randomness (resampling draws seed indices jointly across points).
        grid: ``(grid,)`` the swept parameter (e.g. widths).
        level, budget: as in :func:`crossing` (``budget`` shaped like ``success``).
        candidates: exponents of competing theories (e.g. ``(2, 8)``); flagged if the interval
            contains them all.

    Returns:
        A :class:`PowerLaw` whose ``points`` are the per-point :class:`Crossing` (bounds and
        intervals from the same bootstrap resamples that give the exponent's interval).
    """
    s = check_binary(success, 3, "success", "(points, seeds, grid)")
    P, S, G = s.shape
    xs, g, b = check_x(x, P), check_grid(grid, G), check_budget(budget, s)
    level, confidence = check_level(level), check_confidence(confidence)
    B = check_resamples(n_resamples)
    cands = _candidates(candidates)
    rng = np.random.default_rng(seed)
    logboot = log_crossings(s[:, seed_indices(rng, B, S)], np.log(g), level).T  # (B, P)
    pts = [crossing_from_resamples(level, s[p], b[p], g, logboot[:, p], confidence, B, rng)
           for p in range(P)]
    y = [c.estimate if c.censored == "none" else c.bound for c in pts]
    return _power_law(xs, y, [c.censored for c in pts], [c.budget_binding for c in pts],
                      logboot, confidence=confidence, candidates=cands, n_seeds=S, B=B,
                      grid=g, points=pts,
                      method=f"OLS of log crossing ({level:g}) on log x; percentile bootstrap "
                             f"over seeds")


def power_law(x, values, *, censored=None, candidates=None, confidence: float = 0.95,
              n_resamples: int = 2000, seed: int = 0) -> PowerLaw:
    """Power law of a per-seed measurement's median: ``median_seeds(values)(x) ~ C x^alpha``.

    Arguments:
        x: ``(points,)`` positive settings.
        values: ``(points, seeds)`` positive measurements (e.g. time to epsilon).
        censored: optional ``(points, seeds)`` booleans, True where the value is only a lower
            bound (the run hit its budget before the event; give the budget as the value).
            A point whose median is a censored value is itself a lower bound
            (``censored="above"``).
    """
    vals = np.asarray(values, dtype=float)
    if vals.ndim != 2 or vals.shape[1] < 1:
        raise ValueError(f"values must have shape (points, seeds), got {vals.shape}.")
    if not (np.all(np.isfinite(vals)) and np.all(vals > 0)):
        raise ValueError("values must be finite and positive (give a censored run its budget "
                         "and mark it in censored=).")
    P, S = vals.shape
    xs, cands = check_x(x, P), _candidates(candidates)
    confidence, B = check_confidence(confidence), check_resamples(n_resamples)
    if censored is None:
        cen = np.zeros(vals.shape, bool)
    else:
        cen = np.asarray(censored)
        if cen.shape != vals.shape or cen.dtype != bool:
            raise ValueError(f"censored must be booleans shaped like values {vals.shape}.")
    logv = np.where(cen, np.inf, np.log(vals))  # a lower bound sorts above everything

    def stat(lv):
        return np.median(lv, axis=-1)

    idx = seed_indices(np.random.default_rng(seed), B, S)
    logboot = stat(logv[:, idx]).T  # (B, P)
    est = stat(logv)
    kinds = ["above" if e == np.inf else "none" for e in est]
    # the median with censored values at their bound: a lower bound on the true median
    y = np.exp(np.where(est == np.inf, stat(np.log(vals)), est))
    return _power_law(xs, y, kinds, [False] * P, logboot, confidence=confidence,
                      candidates=cands, n_seeds=S, B=B,
                      method="OLS of log median over seeds on log x; percentile bootstrap over "
                             "seeds")


def loglog_fit(x, y, *, censored=None, candidates=None, confidence: float = 0.95) -> PowerLaw:
    """Power law through plain points ``y (points,)`` (no seeds to resample): least squares in
    log-log with the OLS t interval (infinite with 2 points). ``censored``: optional
    ``(points,)`` booleans, True where ``y`` is a lower bound; such points are carried, not fitted.
    """
    xs = check_x(x)
    ys = np.asarray(y, dtype=float)
    if ys.shape != xs.shape or not (np.all(np.isfinite(ys)) and np.all(ys > 0)):
        raise ValueError(f"y must be finite positive values shaped like x {xs.shape}.")
    cen = np.zeros(xs.shape, bool) if censored is None else np.asarray(censored, bool)
    if cen.shape != xs.shape:
        raise ValueError(f"censored must be booleans shaped like x {xs.shape}.")
    kinds = ["above" if c else "none" for c in cen]
    return _power_law(xs, ys, kinds, [False] * xs.size, None,
                      confidence=check_confidence(confidence), candidates=_candidates(candidates),
                      n_seeds=1, B=0, method="OLS of log y on log x; t interval")



def loglog_slope(x, y) -> float:
    """The exponent of :func:`loglog_fit` through the points with finite positive ``x`` and
    ``y`` (the others dropped); NaN with fewer than 2 distinct ``x`` left."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if np.unique(x[keep]).size < 2:
        return float("nan")
    return float(loglog_fit(x[keep], y[keep]).exponent)
