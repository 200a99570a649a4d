"""Plain-words verdicts on a trend (does ``y`` grow or fall with ``x``?) and on a paired lead
over time (is method A ahead of method B, and for how long?)."""

from __future__ import annotations

import numpy as np

from .laws import PowerLaw
from .proportions import proportion_interval
from .verdict import bound_verdict

__all__ = ["TREND_VERDICTS", "lead_text", "lead_verdict", "paired_lead", "trend_keys",
           "trend_verdict"]

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


def trend_keys(tag: str, x, values, sign: int) -> dict:
    """Flat summary.json keys of a trend claim on per-seed ``values`` ``(points, seeds)``
    over ``x``: the :func:`gflow.stats.power_law` exponent (``<tag>_exponent``, ``..._ci``,
    ``..._flags``) and :func:`trend_verdict` (``verdict_<tag>``). Points where some seed's
    value is not positive cannot enter a power law: they are listed
    (``<tag>_points_dropped_nonpositive``), and fewer than 2 points left is inconclusive."""
    from .laws import power_law

    x, values = np.asarray(x, float), np.asarray(values, float)
    ok = np.all(values > 0, axis=1)
    out = {f"{tag}_points_dropped_nonpositive": [float(v) for v in x[~ok]]}
    if ok.sum() < 2:
        return out | {f"verdict_{tag}": {"verdict": "inconclusive",
                                         "why": "fewer than 2 points positive in every seed"}}
    law = power_law(x[ok], values[ok])
    return out | {f"{tag}_exponent": law.exponent, f"{tag}_exponent_ci": [law.lo, law.hi],
                  f"{tag}_flags": list(law.flags), f"verdict_{tag}": trend_verdict(law, sign)}


def lead_verdict(lead: dict, times, *, what: str = "A ahead of B", unit: str = "step") -> dict:
    """A claim "A does better than B" judged by a :func:`paired_lead` result at the last of
    ``times``: ``"holds"`` if A is ahead there, ``"does not hold"`` if behind, else
    ``"inconclusive"``; ``why`` is :func:`lead_text`."""
    v = "holds" if lead["ahead"][-1] else "does not hold" if lead["behind"][-1] else \
        "inconclusive"
    return {"verdict": v, "why": f"at the last saved {unit}: {v}; " + lead_text(
        lead, times, what=what, unit=unit)}


def lead_text(lead: dict, times, *, what: str = "A ahead of B", unit: str = "step") -> str:
    """A :func:`paired_lead` result in words: at how many of ``times`` A is ahead / behind,
    and until which time its lead from the first time lasts."""
    times = np.asarray(times)
    lasts = (f"its lead from the first saved {unit} lasts until {unit} "
             f"{times[lead['lead_until']]:g}" if lead["lead_until"] >= 0
             else f"no lead at the first saved {unit}")
    return (f"{what} (Wilson lower bound of P(A < B) over {int(np.max(lead['n']))} paired seeds "
            f"> 1/2) at {int(lead['ahead'].sum())} of {lead['ahead'].size} saved {unit}s, "
            f"behind at {int(lead['behind'].sum())}; {lasts}")
