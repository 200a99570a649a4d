"""Stopping conditions of a run, and where inside a step of gradient flow they are met.

A run stops, in this order of precedence, when

- its loss or parameters become non-finite, or its loss exceeds ``diverge_factor`` times
  the loss at ``params0`` (status ``diverged``);
- its loss falls below ``stop_loss`` (``stop_loss``);
- its gradient norm falls below ``stop_grad`` (``stop_grad``).

Discrete dynamics check every iterate: the stop is the first iterate that meets a
condition, which is exact (:mod:`gflow.discrete`). Gradient flow checks at the end of
every accepted step (:func:`status_at`) and then locates the crossing inside that step on
the step's dense output (:func:`crossing`, :func:`locate`): ``t_stop`` is then accurate to
the solver's tolerance rather than to a step, and the state at ``t_stop`` is the dense
output there.

Why not diffrax's own real-valued events with an optimistix root finder: with a root
finder, diffrax evaluates the final state of *every* event-ended solve on the last step's
interpolant, the boolean end of a checkpoint segment included; that moves a segment's end
off the step's endpoint by rounding, and a run cut into segments would no longer take the
steps of one run. And ``optx.Bisection`` stops only once ``|c| < atol`` as well, in the
time's units whatever the units of ``c`` (a loss, a gradient norm).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from . import _status
from ._tree import tree_finite, tree_norm

__all__ = ["crossing", "loss_cap", "locate", "status_at"]


def loss_cap(problem):
    """``diverge_factor * L(params0)`` (scalar), or ``None`` without a growth criterion."""
    if problem.diverge_factor is None:
        return None
    return problem.diverge_factor * problem.objective.loss(problem.ctx.params0)


def status_at(problem, y, cap=None):
    """The status code (int32 scalar) of a run whose state is ``y``: ``COMPLETED`` while no
    condition holds. ``cap``: :func:`loss_cap`."""
    objective = problem.objective
    loss = objective.loss(y)
    st = jnp.where(jnp.isfinite(loss) & tree_finite(y), _status.COMPLETED, _status.DIVERGED)
    go = lambda st: st == _status.COMPLETED  # noqa: E731
    if cap is not None:
        st = jnp.where(go(st) & (loss > cap), _status.DIVERGED, st)
    if problem.stop_loss is not None:
        st = jnp.where(go(st) & (loss < problem.stop_loss), _status.STOP_LOSS, st)
    if problem.stop_grad is not None:
        small = tree_norm(objective.grad(y)) < problem.stop_grad
        st = jnp.where(go(st) & small, _status.STOP_GRAD, st)
    return st.astype(jnp.int32)


def crossing(problem, status, cap=None):
    """``y -> c(y)``: the condition that stopped the run (``status``, traced) as a real
    number, > 0 before its crossing and <= 0 from it on: ``L - stop_loss``,
    ``|grad L| - stop_grad`` or ``cap - L`` (a non-finite value counts as crossed); ``+1``
    for any other status, which :func:`locate` then leaves at the end of the step."""
    objective = problem.objective
    branches, codes = [lambda y: jnp.ones((), objective.y.dtype)], [None]
    if cap is not None:
        branches.append(lambda y: cap - objective.loss(y))
        codes.append(_status.DIVERGED)
    if problem.stop_loss is not None:
        branches.append(lambda y: objective.loss(y) - problem.stop_loss)
        codes.append(_status.STOP_LOSS)
    if problem.stop_grad is not None:
        branches.append(lambda y: tree_norm(objective.grad(y)) - problem.stop_grad)
        codes.append(_status.STOP_GRAD)
    index = jnp.zeros((), jnp.int32)
    for i, code in enumerate(codes[1:], 1):
        index = jnp.where(status == code, i, index)

    def c(y):
        v = jax.lax.switch(index, branches, y)
        return jnp.where(jnp.isfinite(v), v, -1).astype(objective.y.dtype)

    return c


def locate(c, lo, hi):
    """The time in ``[lo, hi]`` where ``c(t)`` crosses 0, for ``c(lo) > 0 >= c(hi)``: the
    upper end of a bracket halved until it is a few ulps of ``hi`` wide, so the returned
    time meets the condition (``c <= 0`` there).

    Bisection, not a faster root finder: it needs neither derivatives (``|grad L|`` has
    none where the flow has kinks) nor a tolerance on ``c`` (whose units differ per
    condition), and it runs once per run. One halving per bit of the mantissa (+ 2) takes
    any bracket from ``[0, hi]`` down to rounding of ``hi``; the accuracy of ``t_stop`` is
    then that of the dense output, i.e. of the solver's tolerance. The loss decreases
    along gradient flow, so its crossing in a step is unique; the gradient norm need not:
    of several crossings inside one step bisection finds one, and a dip below the level
    and back between two step ends is not seen.
    """
    dtype = jnp.result_type(hi)
    halvings = jnp.finfo(dtype).nmant + 3

    def halve(_, b):
        a, b_ = b
        mid = a + 0.5 * (b_ - a)
        above = c(mid) > 0
        return jnp.where(above, mid, a), jnp.where(above, b_, mid)

    return jax.lax.fori_loop(0, halvings, halve, (jnp.asarray(lo, dtype),
                                                  jnp.asarray(hi, dtype)))[1]
