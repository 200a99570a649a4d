"""A plain-words verdict on a sufficient-size bound ``y <= C x^b`` from a measured power law."""

from __future__ import annotations

import math

import numpy as np

from .laws import PowerLaw

__all__ = ["VERDICTS", "bound_verdict", "law_keys", "over_seeds", "summary_keys"]

#: the possible verdicts of :func:`bound_verdict`
VERDICTS = ("consistent with the bound", "exceeds the bound", "inconclusive")

# flags after which the fitted exponent does not describe the measured thresholds
_BLOCKING = ("fewer_than_3_points", "lower_bound_above_fit", "upper_bound_below_fit",
             "bootstrap_censored")


def bound_verdict(law: PowerLaw, bound: float) -> dict:
    """Compare a measured threshold law with an upper bound of shape ``x^bound`` (constants
    unknown, so only exponents are compared).

    ``"exceeds the bound"``: the exponent's interval lies above ``bound`` (the threshold grows
    faster than the bound allows at large ``x``); ``"consistent with the bound"``: it lies at
    or below it; ``"inconclusive"`` otherwise, or when points the fit leaves out could change
    it (a censored point off the fit, too few resolved points, budget-bound points, a
    bootstrap that leaves the grid). A consistent exponent does not show the bound is tight.

    Returns:
        ``{"verdict": one of VERDICTS, "why": text}``.
    """
    if not isinstance(law, PowerLaw):
        raise ValueError(f"law must be a gflow.stats.PowerLaw, got {type(law).__name__}.")
    if not (isinstance(bound, int | float) and math.isfinite(bound)):
        raise ValueError(f"bound must be a finite exponent, got {bound!r}.")
    ci = f"exponent {law.exponent:.2f}, {law.confidence:.0%} interval [{law.lo:.2f}, {law.hi:.2f}]"
    budget = sum(c == "budget" for c in law.censored)
    blocking = [f for f in law.flags if f in _BLOCKING]
    caveats = [f for f in law.flags if f not in _BLOCKING]
    if not math.isfinite(law.exponent) or blocking or budget:
        why = blocking + ([f"{budget} budget-bound point(s)"] if budget else [])
        return {"verdict": "inconclusive", "why": f"{ci}; " + ", ".join(why)}
    tail = f" (caveats: {', '.join(caveats)})" if caveats else ""
    if law.lo > bound:
        return {"verdict": "exceeds the bound", "why": f"{ci} lies above {bound:g}{tail}"}
    if law.hi <= bound:
        return {"verdict": "consistent with the bound",
                "why": f"{ci} lies at or below {bound:g}{tail}"}
    return {"verdict": "inconclusive", "why": f"{ci} contains {bound:g}{tail}"}


def summary_keys(tag: str, law: PowerLaw, bound: float) -> dict:
    """Flat summary.json keys of a :func:`gflow.stats.threshold_law` result: the exponent with
    its interval (``width_exponent_<tag>``, ``..._ci``), the resolved points and flags, the
    threshold per ``x`` with its interval and kind (``"none"``, ``"above"``/``"below"``:
    censored, ``"budget"``: the time budget moves it) and the verdict against ``bound``."""
    xs = [f"{x:.4g}" for x in law.x]
    pts = law.points
    kinds = ["budget" if c.budget_binding and c.censored == "none" else c.censored for c in pts]
    return {f"width_exponent_{tag}": law.exponent, f"width_exponent_{tag}_ci": [law.lo, law.hi],
            f"width_exponent_{tag}_points": law.n_points,
            f"width_exponent_{tag}_flags": list(law.flags),
            f"width_at_{tag}": dict(zip(xs, (c.estimate for c in pts), strict=True)),
            f"width_at_{tag}_ci": dict(zip(xs, ([c.lo, c.hi] for c in pts), strict=True)),
            f"width_at_{tag}_censored": dict(zip(xs, kinds, strict=True)),
            f"verdict_{tag}": bound_verdict(law, bound)}


def law_keys(tag: str, law: PowerLaw, bounds=()) -> dict:
    """Flat summary.json keys of any :class:`PowerLaw` (a threshold in samples, width, ...):
    ``<tag>_exponent`` and ``<tag>_ci``, ``<tag>_flags``, every point (``<tag>_x``,
    ``<tag>_y``, ``<tag>_censored``) and, per exponent ``b`` in ``bounds``,
    ``verdict_<tag>_vs_<b>``: :func:`bound_verdict` as one line of text."""
    out = {f"{tag}_exponent": law.exponent, f"{tag}_ci": [law.lo, law.hi],
           f"{tag}_flags": list(law.flags), f"{tag}_x": list(law.x), f"{tag}_y": list(law.y),
           f"{tag}_censored": list(law.censored)}
    for b in bounds:
        out[f"verdict_{tag}_vs_{b:.3g}"] = "{verdict}: {why}".format(**bound_verdict(law, b))
    return out


def over_seeds(values, axis: int = 0) -> dict:
    """``{"median", "min", "max"}`` of ``values`` over its seed ``axis``, as nested lists for
    summary.json (NaN wherever a seed has no value: a missing run is never hidden)."""
    v = np.asarray(values, dtype=float)
    return {f.__name__: f(v, axis=axis).tolist() for f in (np.median, np.min, np.max)}
