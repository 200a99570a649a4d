"""Edge-of-stability measures on saved trajectories (Cohen, Kaur, Li, Kolter & Talwalkar, ICLR
2021, arXiv 2103.00065).

Full-batch GD with step ``lr`` is stable on a quadratic only while the sharpness ``S`` (the
top Hessian eigenvalue, :mod:`gflow.curvature`) stays below ``2/lr``. On neural nets the
sharpness rises under training (progressive sharpening) until it reaches ``2/lr``, then
hovers at or just above it while the loss keeps falling over long windows but not step by
step. These functions turn saved sharpness and loss series ``(..., saves)`` (one save per GD
step for the step-to-step measures) into those quantities:

- :func:`first_crossing`: the first save at which ``S >= 2/lr``;
- :func:`edge_measures`: per run, where it crossed, the sharpness relative to ``2/lr`` after
  the crossing (median, fraction within a band), the fraction of steps after it at which the
  loss rose, and the loss's fall over that window;
- :func:`running_mean`: GD's loss averaged over its oscillations (a centred window), the
  quantity the central flow (:class:`gflow.CentralFlow`) predicts;
- :func:`relative_gap`: ``|a - b| / |b|`` per save, e.g. a flow's loss against GD's average;
- :func:`param_distance`: the distance between two runs' saved parameters, per save;
- :func:`central_loss_along`: the central flow's predicted GD loss ``L + tr(X)/lr`` at
  parameters saved by any run, after the fact (one compiled program for every lr). The
  in-solve observable :func:`gflow.central_flow.CentralLoss` traces lr too; this is for
  parameters already saved (a finished run's, or another dynamics' iterates) without
  solving again.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["central_loss_along", "edge_measures", "first_crossing", "param_distance",
           "relative_gap", "running_mean"]


def first_crossing(sharpness, threshold) -> np.ndarray:
    """Index of the first save with ``sharpness >= threshold`` along the last axis, -1 where
    it never gets there (NaN saves, e.g. after a divergence, never count). Shape: the
    leading axes of ``sharpness``; ``threshold`` broadcasts against them."""
    s = np.asarray(sharpness, dtype=float)
    thr = np.asarray(threshold, dtype=float)[..., None]
    above = np.nan_to_num(s, nan=-np.inf) >= thr
    return np.where(above.any(-1), np.argmax(above, axis=-1), -1)


def edge_measures(sharpness, loss, lr: float, *, band: float = 0.1) -> dict:
    """Edge-of-stability measures of GD runs saved at every step.

    Arguments:
        sharpness: ``(runs, steps)`` the sharpness at every step.
        loss: ``(runs, steps)`` the training loss at the same steps.
        lr: GD's step; the edge is ``2/lr``.
        band: relative half-width of the band around ``2/lr`` counted as "at the edge".

    Returns:
        a dict of ``(runs,)`` arrays: ``crossed`` (bool), ``cross_step`` (first index with
        ``S >= 2/lr``, -1 if none), ``ratio_median`` (median of ``S lr / 2`` from the
        crossing on), ``in_band`` (fraction of those steps with ``|S lr / 2 - 1| <= band``),
        ``loss_rises`` (fraction of the steps from the crossing on at which the loss rose),
        ``loss_ratio`` (last loss over the loss at the crossing), ``steps_after`` (saves
        from the crossing on); NaN where a run never crossed.
    """
    if not band > 0:
        raise ValueError(f"band must be > 0, got {band!r}.")
    s, L = np.atleast_2d(np.asarray(sharpness, float)), np.atleast_2d(np.asarray(loss, float))
    if s.shape != L.shape:
        raise ValueError(f"sharpness and loss must have the same (runs, steps) shape, got "
                         f"{s.shape} and {L.shape}.")
    edge = 2.0 / lr
    cross = first_crossing(s, edge)
    out = {k: np.full(s.shape[0], np.nan) for k in
           ("ratio_median", "in_band", "loss_rises", "loss_ratio", "steps_after")}
    for r, c in enumerate(cross):
        if c < 0:
            continue
        ratio, lo = s[r, c:] / edge, L[r, c:]
        ratio, lo = ratio[np.isfinite(ratio)], lo[np.isfinite(lo)]
        out["ratio_median"][r] = np.median(ratio)
        out["in_band"][r] = np.mean(np.abs(ratio - 1) <= band)
        out["loss_rises"][r] = np.mean(np.diff(lo) > 0) if lo.size > 1 else np.nan
        out["loss_ratio"][r] = lo[-1] / lo[0]
        out["steps_after"][r] = ratio.size
    return {"crossed": cross >= 0, "cross_step": cross, **out}


def running_mean(x, window: int) -> np.ndarray:
    """The mean of ``x`` over a centred window of ``window`` saves along the last axis
    (shorter, still centred as far as it goes, near the ends): GD's loss averaged over its
    oscillations. ``window = 1`` returns ``x``."""
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1:
        raise ValueError(f"window must be an integer >= 1, got {window!r}.")
    x = np.asarray(x, dtype=float)
    if window == 1:
        return x
    n = x.shape[-1]
    c = np.concatenate([np.zeros(x.shape[:-1] + (1,)), np.cumsum(x, axis=-1)], axis=-1)
    i = np.arange(n)
    lo, hi = np.maximum(i - window // 2, 0), np.minimum(i + (window - 1) // 2 + 1, n)
    return (c[..., hi] - c[..., lo]) / (hi - lo)


def relative_gap(a, b) -> np.ndarray:
    """``|a - b| / |b|`` elementwise (e.g. a flow's predicted loss against GD's running
    mean)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.abs(a - b) / np.abs(b)


def param_distance(a, b, lead: int = 2) -> np.ndarray:
    """``|a - b|`` (Euclidean, over every leaf) of two parameter pytrees saved along a
    trajectory, per entry of their ``lead`` leading axes (e.g. ``(members, saves)`` of
    ensembles run with ``save_params=True``; ``lead=1`` for one run's saves)."""
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    if len(la) != len(lb):
        raise ValueError(f"a and b must have the same structure, got {len(la)} and {len(lb)} "
                         "leaves.")
    sq = [np.sum((np.asarray(x, float) - np.asarray(y, float)).reshape(
        np.shape(x)[:lead] + (-1,)) ** 2, -1) for x, y in zip(la, lb, strict=True)]
    return np.sqrt(sum(sq))


@eqx.filter_jit
def _central_loss(flow, net, loss, X, y, params):
    from .objective import Objective

    def member(X, y, p):
        obj = Objective(net, loss, X, y)
        return jax.lax.map(lambda q: flow.predicted_loss(obj, q), p)

    return jax.vmap(member)(X, y, params)


def central_loss_along(lr: float, net, loss, X, y, params, **flow) -> np.ndarray:
    """:meth:`gflow.CentralFlow.predicted_loss` (``L + tr(X)/lr``) at saved parameters.

    Arguments:
        lr: GD's step.
        net: the net.
        loss: the loss name or per-sample callable.
        X: ``(members, n, d)`` each member's inputs.
        y: ``(members, n)`` its targets.
        params: parameters with leading ``(members, saves)`` axes (``traj.params`` of an
            ensemble run with ``save_params=True``).
        **flow: the other arguments of :class:`gflow.CentralFlow` (``k``, ``iters``,
            ``edge_rate``, ...), which must match the flow that was run.

    Returns:
        ``(members, saves)``; one compiled program serves every ``lr`` (it is traced).
    """
    from .central_flow import CentralFlow

    cf = CentralFlow(jnp.asarray(lr, jnp.result_type(float)), **flow)
    return np.asarray(_central_loss(cf, net, loss, X, y, params))
