"""The dynamics protocol: what GF, GD, SGD, optax (and any new dynamics) implement.

A dynamics is an ``eqx.Module`` deriving from :class:`AbstractDynamics` (in the style of
diffrax's ``AbstractSolver``). Its life in a run, host side first, then pure (traced)::

    dyn, grid, info = dynamics.plan(ts, t1, n=n, dtype=dtype)     # host: the save grid
    state = dyn.init(problem, params0)                            # pure
    state = dyn.advance(problem, state, until)                    # pure, repeatable
    out = dyn.finish(problem, state)                              # pure
    out = dynamics.report(jax.device_get(out), info)              # host: times, stats

``advance`` records the saves ``state["saves"] ... until - 1`` (a dynamics whose steps do
not end at save points, such as an adaptive solver, may record more: those its last step
passed) and stops there. ``simulate`` is one ``advance`` with ``until = S`` (every save);
a checkpointed run is the same calls with ``until`` at each segment's end and the state
written in between; ensembles ``vmap`` (and shard) ``finish(advance(init(...), S))``. So a
new dynamics is one module with one class: the run layer (:mod:`gflow.solve`,
:mod:`gflow.checkpoint`, :mod:`gflow.ensemble`) knows only this protocol.

The state is a dict of arrays (a pytree, written to checkpoints leaf by leaf) that holds
at least ``"saves"`` (int scalar: saves recorded so far), ``"status"`` (a code of
:mod:`gflow._status`, ``COMPLETED`` while the run goes on) and ``"obs"`` / ``"snaps"``:
the save buffers of :func:`blank_saves`, (S, ...) per observable, filled by
:func:`record`.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from .objective import Objective
from .observe import ObsContext, Observer
from .times import LogTimes

__all__ = ["AbstractDynamics", "Plan", "Problem", "blank", "blank_saves", "record"]


class Problem(eqx.Module):
    """Everything a run needs besides the dynamics' own settings and ``params0``.

    ``grid``: (S,) the save targets in the dynamics' own units (times for gradient flow,
    step indices for discrete dynamics), from :meth:`AbstractDynamics.plan`; ``t1``: the
    final time; ``stop_loss`` / ``stop_grad``: scalars or ``None``; ``diverge_factor``:
    scalar or ``None``, the run diverges once its loss exceeds this multiple of the loss
    at ``ctx.params0`` (:mod:`gflow.stops`).
    """

    objective: Objective
    observer: Observer
    ctx: ObsContext
    grid: Array
    t1: Array
    stop_loss: Array | None = None
    stop_grad: Array | None = None
    diverge_factor: Array | None = None
    save_params: bool = eqx.field(static=True, default=False)
    progress: bool = eqx.field(static=True, default=False)

    def observe(self, params) -> dict[str, Array]:
        """The observables at ``params``."""
        return self.observer(params, self.ctx)


class Plan(NamedTuple):
    """What :meth:`AbstractDynamics.plan` returns: ``dynamics`` (with its numeric settings
    as arrays, so one compiled program serves every value of them), ``grid`` ((S,) or, per
    member, (M, S): the :attr:`Problem.grid`) and ``info`` (host data for ``report``)."""

    dynamics: Any
    grid: np.ndarray
    info: Any


class AbstractDynamics(eqx.Module):
    """Base class of every dynamics: implement the abstract methods below."""

    @abc.abstractmethod
    def describe(self) -> str:
        """A one-line description (kept in the trajectory)."""

    @abc.abstractmethod
    def plan(self, ts: np.ndarray, t1: float, *, n: int, dtype,
             members: int | None = None) -> Plan:
        """Host side, before compiling: the save grid for the requested times ``ts``
        ((S,) float64 in [0, t1]), for ``n`` samples; ``members``: the ensemble size, when
        settings may differ per member."""

    @abc.abstractmethod
    def report(self, out: dict, info) -> dict:
        """Host side: ``finish``'s output (numpy) with the save times ``"ts"`` ((S,) or
        (M, S) float64), ``"t_stop"`` and ``"stats"`` (name -> int or (M,) array) filled in
        and saves after a stop marked as missing (NaN)."""

    @abc.abstractmethod
    def init(self, problem: Problem, params0) -> dict:
        """The state at the start (see the module docstring for its required entries)."""

    @abc.abstractmethod
    def advance(self, problem: Problem, state: dict, until) -> dict:
        """Run on until at least the saves below ``until`` (an int scalar, traced) are
        recorded, or the run stops; ``until = S`` runs to the end (``t1``)."""

    @abc.abstractmethod
    def finish(self, problem: Problem, state: dict) -> dict:
        """The run's output: ``obs`` (name -> (S, ...)), ``params`` (snapshots or
        ``None``), ``params_final``, ``obs_final`` (observables at the stop point),
        ``status`` and the dynamics' own entries for ``report``."""

    def default_save(self, t1: float):
        """Save times when ``save=None``."""
        return LogTimes(100)

    #: fields that may differ between the members of one ensemble (a sweep stacks them)
    member_fields: ClassVar[tuple[str, ...]] = ()


def blank(shape, dtype) -> Array:
    """An unwritten save: NaN for floating dtypes, 0 otherwise."""
    fill = jnp.nan if jnp.issubdtype(dtype, jnp.inexact) else 0
    return jnp.full(shape, fill, dtype)


def blank_saves(problem: Problem, params0) -> tuple[dict, Any]:
    """``(obs, snaps)``: empty save buffers, (S, ...) per observable and, with
    ``save_params``, per parameter leaf (else ``None``)."""
    S = problem.grid.shape[0]
    shapes = jax.eval_shape(problem.observe, params0)
    obs = jax.tree.map(lambda s: blank((S, *s.shape), s.dtype), shapes)
    snaps = None
    if problem.save_params:
        snaps = jax.tree.map(lambda x: blank((S, *jnp.shape(x)), jnp.result_type(x)), params0)
    return obs, snaps


def record(buffers, i, values, on=True):
    """``buffers`` with row ``i`` set to ``values`` where ``on`` (traced scalars)."""
    return jax.tree.map(lambda b, x: b.at[i].set(jnp.where(on, x, b[i])), buffers, values)
