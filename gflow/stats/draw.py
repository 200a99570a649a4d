"""Drawing :mod:`gflow.stats` results with matplotlib: points, intervals, censored markers, fit."""

from __future__ import annotations

import numpy as np

from .laws import PowerLaw
from .proportions import Proportions

__all__ = ["draw"]


def draw(ax, result, *, label: str | None = None, color=None):
    """Draw a :class:`PowerLaw` (points with intervals, the fit over the resolved range;
    lower bounds as up-triangles, upper bounds as down-triangles, budget-bound points as hollow
    squares) or a :class:`Proportions` curve (frequencies with their intervals) on ``ax``."""
    if isinstance(result, Proportions):
        g, p = np.array(result.grid), np.array(result.p)
        err = np.array([p - np.array(result.lo), np.array(result.hi) - p])
        ax.errorbar(g, p, yerr=err, fmt="o-", capsize=3, color=color,
                    label=label or f"success ({result.method} {result.confidence:.0%})")
        ax.set_xscale("log")
        ax.set_ylim(-0.03, 1.03)
        return ax
    if not isinstance(result, PowerLaw):
        raise ValueError(f"draw takes a PowerLaw or Proportions, got {type(result).__name__}.")
    x, y = np.array(result.x), np.array(result.y)
    kinds = np.array(result.censored)
    line = None
    ok = kinds == "none"
    if result.points:
        lo = np.array([c.lo for c in result.points])
        hi = np.array([c.hi for c in result.points])
        fin = y[np.isfinite(y)]  # interval ends off the grid (0, inf): drawn to 3x the data
        lo = np.maximum(lo, fin.min() / 3 if fin.size else 0.0)
        hi = np.minimum(hi, fin.max() * 3 if fin.size else 0.0)
        err = np.array([y - lo, hi - y])
        err = np.where(np.isfinite(err) & (err >= 0), err, 0.0)
        line = ax.errorbar(x[ok], y[ok], yerr=err[:, ok], fmt="o", capsize=3, color=color)
    else:
        line = ax.errorbar(x[ok], y[ok], fmt="o", color=color)
    color = line[0].get_color()
    markers = {"above": ("^", "lower bound (censored)"), "below": ("v", "upper bound (censored)"),
               "budget": ("s", "time budget binding")}
    for kind, (mk, text) in markers.items():
        sel = (kinds == kind) & np.isfinite(y)
        if sel.any():
            face = "none" if kind == "budget" else color
            ax.plot(x[sel], y[sel], mk, color=color, markerfacecolor=face, linestyle="none",
                    label=text)
    if np.isfinite(result.exponent):
        xr = np.geomspace(x[ok].min(), x[ok].max(), 50)
        text = (f"slope {result.exponent:.2f} [{result.lo:.2f}, {result.hi:.2f}], "
                f"{result.n_points} pts x {result.n_seeds} seeds")
        if result.flags:
            text += " (" + ", ".join(result.flags) + ")"
        ax.plot(xr, result.prefactor * xr**result.exponent, "-", color=color,
                label=f"{label}: {text}" if label else text)
    ax.set_xscale("log")
    ax.set_yscale("log")
    return ax
