"""Plain-words verdicts on a trend (does ``y`` grow or fall with ``x``?) and on a paired lead
over time (is method A ahead of method B, and for how long?)."""

from __future__ import annotations

import numpy as np

from .laws import PowerLaw
from .proportions import proportion_interval
from .verdict import bound_verdict

__all__ = ["TREND_VERDICTS", "paired_lead", "trend_verdict"]

#: the possible verdicts of :func:`trend_verdict`
TREND_VERDICTS = ("holds", "does not hold", "inconclusive")


def trend_verdict(law: PowerLaw, sign: int) -> dict:
    """Whether ``y`` grows (``sign=+1``) or falls (``sign=-1``) with ``x``, from the exponent
    of a fitted power law: ``"holds"`` if its interval lies on the claimed side of 0,
    ``"does not hold"`` if on the other side, ``"inconclusive"`` if it contains 0 or the fit's
    flags block a verdict (as :func:`gflow.stats.bound_verdict` against exponent 0).

    Returns:
        ``{"verdict": one of TREND_VERDICTS, "why": text}``.
    """
    if sign not in (1, -1):
        raise ValueError(f"sign must be +1 (grows) or -1 (falls), got {sign!r}.")
    v = bound_verdict(law, 0.0)
    above = {"exceeds the bound": True, "consistent with the bound": False}.get(v["verdict"])
    if above is None:
        return {"verdict": "inconclusive", "why": v["why"]}
    holds = above == (sign == 1)
    return {"verdict": "holds" if holds else "does not hold", "why": v["why"]}


def paired_lead(a, b, *, confidence: float = 0.95) -> dict:
    """Is ``a`` below ``b`` (lower is better) at each time, over paired seeds?

    Arguments:
        a: ``(seeds, times)`` measurements of method A (NaN: not measured, e.g. diverged).
        b: ``(seeds, times)`` of method B, paired with ``a`` by seed.
        confidence: of the Wilson interval of ``P(a < b)`` per time.

    Returns:
        ``{"k", "n", "lo", "hi", "ahead", "behind", "lead_until"}``: per time the seeds with
        ``a < b`` (``k``) out of those where both are finite (``n``), the interval, whether A
        is ahead (``lo > 1/2``) or behind (``hi < 1/2``); ``lead_until`` is the last index of
        the run of times, from the first, at which A is ahead (-1 if not ahead at the first).
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"a and b must be paired (seeds, times) arrays, got {a.shape} and "
                         f"{b.shape}.")
    both = np.isfinite(a) & np.isfinite(b)
    k, n = np.sum(both & (a < b), 0), np.sum(both, 0)
    lo, hi = proportion_interval(k, np.maximum(n, 1), confidence=confidence)
    lo, hi = np.where(n > 0, lo, 0.0), np.where(n > 0, hi, 1.0)
    ahead = lo > 0.5
    lead = int(np.argmin(ahead)) - 1 if not ahead.all() else ahead.size - 1
    return {"k": k, "n": n, "lo": lo, "hi": hi, "ahead": ahead, "behind": hi < 0.5,
            "lead_until": lead}
