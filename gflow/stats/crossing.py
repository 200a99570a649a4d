"""The parameter at which success crosses a level: isotonic fit, log-grid interpolation,
bootstrap over seeds."""

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
    percentile,
    seed_indices,
)

__all__ = ["Crossing", "all_succeed", "crossing", "crossing_from_resamples", "isotonic",
           "log_crossings"]


def isotonic(freq: np.ndarray) -> np.ndarray:
    """Non-decreasing least-squares fit along the last axis of equally weighted frequencies
    ``(..., G)``, batched: ``fit_i = max_{j<=i} min_{k>=i} mean(freq[j..k])`` (the min-max form
    of pool-adjacent-violators; equal to ``scipy.optimize.isotonic_regression`` per row, which
    solves one problem per call where this solves thousands of bootstrap resamples at once)."""
    G = freq.shape[-1]
    c = np.concatenate([np.zeros(freq.shape[:-1] + (1,)), np.cumsum(freq, axis=-1)], axis=-1)
    j, k = np.arange(G)[:, None], np.arange(G)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (c[..., None, 1:] - c[..., :G, None]) / (k - j + 1)  # [..., j, k]
    mean = np.where(k >= j, mean, np.inf)
    right = np.minimum.accumulate(mean[..., ::-1], axis=-1)[..., ::-1]  # min over k >= i
    right = np.where(j <= k, right, -np.inf)  # now indexed [..., j, i]; keep j <= i
    return right.max(axis=-2)


def first_crossing(fit: np.ndarray, logg: np.ndarray, level: float) -> np.ndarray:
    """Log-parameter where the non-decreasing ``fit (..., G)`` first reaches ``level``, linear
    in ``logg``; ``-inf`` if it starts at or above it, ``+inf`` if it never gets there."""
    above = fit >= level - 1e-12  # frequencies are multiples of 1/seeds; absorb rounding
    i = np.argmax(above, axis=-1)
    ok = above.any(axis=-1)
    ip = np.clip(i - 1, 0, None)
    f0 = np.take_along_axis(fit, ip[..., None], -1)[..., 0]
    f1 = np.take_along_axis(fit, i[..., None], -1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.clip((level - f0) / (f1 - f0), 0.0, 1.0)
    out = logg[ip] + frac * (logg[i] - logg[ip])
    out = np.where(i == 0, -np.inf, out)
    return np.where(ok, out, np.inf)


def log_crossings(success: np.ndarray, logg: np.ndarray, level: float) -> np.ndarray:
    """``success (..., seeds, G)`` -> log crossing ``(...)``."""
    return first_crossing(isotonic(success.mean(axis=-2)), logg, level)


@dataclasses.dataclass(frozen=True)
class Crossing(Result):
    """The grid parameter at which success first reaches ``level`` (isotonic fit, interpolated
    in log grid), with its bootstrap interval ``[lo, hi]`` over seeds.

    ``censored``: ``"none"``; ``"above"`` (never reached on the grid: ``estimate`` is NaN and
    ``bound``, the largest grid value, is a lower bound); ``"below"`` (reached already at the
    smallest grid value ``bound``, an upper bound). ``lo = 0`` / ``hi = inf`` mean the interval
    leaves the grid. ``budget_binding``: runs that ran out of time (``budget=``), had they
    succeeded, would move the estimate to ``optimistic``; the measured crossing then reflects
    the time budget rather than the parameter. ``grid_limited``: the seeds do not place the
    crossing more finely than one grid cell (success jumps across it), so ``[lo, hi]`` is that
    cell and the within-cell position of ``estimate`` is the interpolation's, not the data's;
    refine the grid there. ``resolved``: neither censored nor budget-bound.
    """

    level: float
    estimate: float
    lo: float
    hi: float
    censored: str
    bound: float
    budget_binding: bool
    optimistic: float
    grid_limited: bool
    n_seeds: int
    n_resamples: int
    confidence: float
    method: str = "isotonic fit, linear in log grid; percentile bootstrap over seeds"

    @property
    def resolved(self) -> bool:
        return self.censored == "none" and not self.budget_binding


def _grid_cell(lo: float, hi: float, logg: np.ndarray):
    """The grid cell ``(g_i, g_{i+1}]`` holding ``[lo, hi]`` (log) if no grid value lies
    strictly inside ``(lo, hi)``, else None. A crossing exactly at a grid value ``g_{i+1}``
    lies in the cell below it: success was under the level at ``g_i``."""
    if not (np.isfinite(lo) and np.isfinite(hi)) or np.any((logg > lo) & (logg < hi)):
        return None
    below = logg[logg < lo]
    return float(below.max() if below.size else lo), float(logg[logg >= hi].min())


def crossing_from_resamples(level, s, b, g, logb, confidence, B, rng) -> Crossing:
    """The crossing of ``s (seeds, G)`` from its bootstrap replicates ``logb (B,)``; where the
    replicates do not leave one grid cell, widens the interval to that cell and redraws
    ``logb`` (in place) uniformly in it."""
    logg = np.log(g)
    est = float(log_crossings(s, logg, level))
    opt = float(log_crossings(s | b, logg, level))
    lo, hi = percentile(logb, confidence)
    cell = _grid_cell(lo, hi, logg) if np.isfinite(est) else None
    if cell is not None:
        lo, hi = cell
        logb[:] = rng.uniform(lo, hi, size=logb.shape)
    cens = "above" if est == np.inf else ("below" if est == -np.inf else "none")
    bound = {"above": g[-1], "below": g[0]}.get(cens, math.nan)
    return Crossing(
        level=float(level), estimate=math.exp(est) if cens == "none" else math.nan,
        lo=math.exp(lo), hi=math.exp(hi), censored=cens, bound=float(bound),
        budget_binding=bool(b.any()) and opt != est, optimistic=math.exp(opt) if
        np.isfinite(opt) else (0.0 if opt < 0 else math.inf),
        grid_limited=cell is not None, n_seeds=int(s.shape[0]), n_resamples=B,
        confidence=confidence)


def crossing(success, grid, *, level: float = 0.5, budget=None, confidence: float = 0.95,
             n_resamples: int = 2000, seed: int = 0) -> Crossing:
    """The parameter at which success crosses ``level``, with a bootstrap interval over seeds.

    Arguments:
        success: ``(seeds, grid)`` booleans: run succeeded.
        grid: ``(grid,)`` increasing positive parameter values (e.g. widths).
        level: success probability to cross (0.5, 0.9, ...).
        budget: optional ``(seeds, grid)`` booleans, True where a failed run stopped because
            its time budget ran out (so it might have succeeded with more time).
        confidence, n_resamples, seed: the bootstrap's level, size and random seed.
    """
    s = check_binary(success, 2, "success", "(seeds, grid)")
    g, b = check_grid(grid, s.shape[1]), check_budget(budget, s)
    level, confidence = check_level(level), check_confidence(confidence)
    B = check_resamples(n_resamples)
    rng = np.random.default_rng(seed)
    logb = log_crossings(s[seed_indices(rng, B, s.shape[0])], np.log(g), level)
    return crossing_from_resamples(level, s, b, g, logb, confidence, B, rng)



def all_succeed(success, grid) -> np.ndarray:
    """The smallest grid value (last axis of ``success``) at which every seed (the axis
    before it) succeeded, NaN where there is none: ``(..., seeds, grid) -> (...)``. The
    plain, interval-free threshold; :func:`crossing` gives one at any level with an
    interval."""
    ok = np.all(np.asarray(success) > 0.5, axis=-2)
    w = np.asarray(grid, dtype=float)[np.argmax(ok, axis=-1)]
    return np.where(np.any(ok, axis=-1), w, np.nan)
