"""Claims: what a research setting's paper says, and the experiment's verdict on each.

A research experiment declares its paper's claims in a module-level ``CLAIMS = {id: text}``
(one sentence each, with the citation) and ``CITE``, and its ``run`` states a verdict on every
one of them in ``summary["claims"] = {id: claim(...)}``: the verdict logic lives in the
experiment, ``gflow report`` (:mod:`gflow.report`) only gathers it. Which settings the report
runs at each level is the module's ``REPORT = {"smoke" | "quick" | "full": [(label,
{setting: value})]}``.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["VERDICTS", "check_claims", "claim", "from_bound", "from_keys", "from_law", "tally"]

#: the verdicts a claim can get
VERDICTS = ("holds", "does not hold", "inconclusive")


def claim(verdict: str, why: str, measured: str = "") -> dict:
    """One verdict: ``{"verdict": one of VERDICTS, "why": text, "measured": text}``.

    Args:
        verdict: ``"holds"``, ``"does not hold"`` or ``"inconclusive"``.
        why: the reason, in words, with the numbers it rests on.
        measured: what was measured (number with interval, seeds, sizes).
    """
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}.")
    if not why:
        raise ValueError("why must say why the verdict was reached.")
    return {"verdict": verdict, "why": why, "measured": measured}


def from_bound(bound_verdict: dict, measured: str = "") -> dict:
    """A claim "width ``<= C x^b`` suffices" judged by :func:`gflow.stats.bound_verdict`:
    consistent -> holds (an upper bound: consistent does not show it tight), exceeds -> does
    not hold, else inconclusive."""
    v = {"consistent with the bound": "holds", "exceeds the bound": "does not hold"}.get(
        bound_verdict["verdict"], "inconclusive")
    return claim(v, bound_verdict["why"], measured)


def from_law(summary: dict, tag: str, what: str) -> dict:
    """:func:`from_bound` on the threshold law that :func:`gflow.stats.summary_keys` wrote
    under ``tag``, measured as "``what``: exponent e [lo, hi] over k resolved points". A
    verdict on the successes within the time budget alone (``verdict_<tag>_within_T``, where
    the summary has one) is added to ``why``."""
    lo, hi = summary[f"width_exponent_{tag}_ci"]
    e, k = summary[f"width_exponent_{tag}"], summary[f"width_exponent_{tag}_points"]
    out = from_bound(summary[f"verdict_{tag}"],
                     f"{what}: exponent {e:.2f} [{lo:.2f}, {hi:.2f}] over {k} resolved points")
    if (within := summary.get(f"verdict_{tag}_within_T")) is not None:
        out["why"] += (f"; counting only the successes within the time budget T: "
                       f"{within['verdict']} ({within['why']})")
    return out


def from_keys(summary: dict, keys: dict[str, str], measured: dict | None = None) -> dict:
    """Claims whose verdicts the summary already holds as ``{"verdict", "why"}`` dicts in the
    claims' vocabulary (e.g. :func:`gflow.stats.trend_keys`, :func:`gflow.stats.lead_verdict`):
    ``{claim id: claim(...)}`` for ``keys = {claim id: summary key}``, ``measured`` per id."""
    return {cid: claim(summary[k]["verdict"], summary[k]["why"], (measured or {}).get(cid, ""))
            for cid, k in keys.items()}


def tally(outcomes: Sequence[str], *, holds: str, fails: str, what: str = "seeds",
          measured: str = "") -> dict:
    """A claim judged per seed (or run): does not hold if any outcome is ``fails``, holds if
    every other outcome is ``holds`` and at least one is, else inconclusive (every run gave
    neither, e.g. did not move). ``why`` counts each outcome."""
    counts = {o: list(outcomes).count(o) for o in dict.fromkeys(outcomes)}
    text = ", ".join(f"{n} of {len(outcomes)} {what}: {o}" for o, n in counts.items())
    if counts.get(fails):
        return claim("does not hold", text, measured)
    if counts.get(holds):
        return claim("holds", text, measured)
    return claim("inconclusive", text or f"no {what}", measured)


def check_claims(module, summary: dict) -> list[str]:
    """What is wrong with ``summary["claims"]`` against ``module.CLAIMS`` (empty: nothing):
    every declared claim gets a verdict of :data:`VERDICTS`, and no other is given."""
    declared, given = set(getattr(module, "CLAIMS", {})), summary.get("claims") or {}
    problems = [f"claim {k!r} has no verdict" for k in sorted(declared - set(given))]
    problems += [f"claim {k!r} is not declared in CLAIMS" for k in sorted(set(given) - declared)]
    problems += [f"claim {k!r}: verdict {v.get('verdict')!r} is not one of {VERDICTS}"
                 for k, v in given.items() if v.get("verdict") not in VERDICTS]
    return problems
