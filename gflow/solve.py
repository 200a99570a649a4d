"""The run layer's core: validate a run's inputs, build its :class:`~gflow.dynamics.Problem`,
run a dynamics through the protocol, and turn the output into a :class:`Trajectory`.

``simulate`` (:mod:`gflow.simulate`), checkpointed runs (:mod:`gflow.checkpoint`) and
ensembles (:mod:`gflow.ensemble`) are built from these pieces. A single run is one
compiled call (:func:`solve_run`); a checkpointed run is :func:`solve_start`, then
:func:`solve_segment` once per segment, with the state on the host in between. Both run
the same loop bodies on the same states, so they take the same steps (tested bitwise).
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import _status, inputs
from .data import AbstractData, Dataset
from .dynamics import AbstractDynamics, Problem
from .flow import GradientFlow
from .losses import CLASSIFICATION, get_loss
from .observe import ObsContext, Observer, resolve
from .times import check_t1, resolve_times
from .trajectory import Trajectory

__all__ = ["SimulationError", "Setup", "check_dynamics", "prepare", "raise_for_status", "save_grid",
           "setup", "solve_run", "solve_segment", "solve_start", "to_trajectory"]


class SimulationError(RuntimeError):
    """A run that could not complete: it diverged or the solver failed."""


def _check_positive(v, name):
    if v is None:
        return None
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number > 0, got {v!r}.") from None
    if not v > 0:
        raise ValueError(f"{name} must be a number > 0, got {v!r}.")
    return v


def check_dynamics(dynamics) -> AbstractDynamics:
    """``dynamics`` (default: ``GradientFlow()``), checked to implement the protocol."""
    dynamics = GradientFlow() if dynamics is None else dynamics
    if not isinstance(dynamics, AbstractDynamics):
        raise ValueError(
            "dynamics must be a gflow dynamics -- continuous: GradientFlow(...), "
            "ModifiedFlow(lr, order), AdamFlow(a, b), SME(lr, batch_size, key); discrete: "
            "GD(lr), SGD(lr, batch_size, key), OnlineSGD(...), Optax(optimizer, lr), "
            "Momentum(lr, beta) -- or another gflow.dynamics.AbstractDynamics, got "
            f"{dynamics!r}.")
    return dynamics


def save_grid(dynamics: AbstractDynamics, save, t1: float) -> np.ndarray:
    """The requested save times ((S,) float64) for ``save=`` (``None``: the default)."""
    return resolve_times(dynamics.default_save(t1) if save is None else save, t1)


def prepare(net, params0, data: AbstractData, *, loss, dynamics, observe, probes, stop_loss,
            stop_grad, member_axes: int = 0):
    """Validate the inputs of a run and build its objective, observer and context."""
    if not isinstance(data, AbstractData):
        raise ValueError(f"data must be a gflow.Dataset (or a gflow.population.Population), "
                         f"got {type(data).__name__}.")
    check_dynamics(dynamics)
    loss_fn = get_loss(loss)
    if isinstance(loss, str) and loss in CLASSIFICATION and not data.is_binary():
        raise ValueError(f"loss={loss!r} needs labels in {{-1, +1}}; y has other values.")
    inputs.check_param_leaves(params0)
    if member_axes == 0:
        if isinstance(data, Dataset):
            inputs.check_single_dataset(data)
        net.check_params(params0, d=data.d)
    dtype = jnp.result_type(float)
    params0 = jax.tree.map(lambda x: jnp.asarray(x, dtype), params0)
    inputs.check_finite_params(params0, member_axes)
    if isinstance(data, Dataset):
        inputs.check_loss(loss, loss_fn, data.n, dtype)
    if probes is not None:
        probes = jnp.asarray(probes, dtype)
        if probes.ndim != 2 or probes.shape[-1] != data.d:
            raise ValueError(f"probes must have shape (p, d={data.d}), got {probes.shape}.")
    obs = resolve(observe, has_test=data.has_test, has_probes=probes is not None)
    objective = data.objective(net, loss_fn)
    ctx = ObsContext(objective, params0, data.X_test, data.y_test, probes)
    stop_loss = _check_positive(stop_loss, "stop_loss")
    stop_grad = _check_positive(stop_grad, "stop_grad")
    return objective, params0, Observer(obs), ctx, stop_loss, stop_grad


class Setup(eqx.Module):
    """A single run, ready to go: the dynamics as given (``dynamics``, for ``report``) and
    as planned (``planned``, settings traced), the requested save times ``ts``, the plan's
    host ``info``, the :class:`Problem` and the initial parameters."""

    dynamics: Any
    planned: Any
    ts: np.ndarray
    info: Any
    problem: Problem
    params0: Any


def setup(net, params0, data, *, loss, dynamics, t1, save, observe, probes, stop_loss,
          stop_grad, save_params, progress, diverge_factor=None) -> Setup:
    """Validate the arguments of :func:`gflow.simulate` and plan the run."""
    dynamics = check_dynamics(dynamics)
    diverge_factor = inputs.check_diverge_factor(diverge_factor)
    t1 = check_t1(t1)
    ts = save_grid(dynamics, save, t1)
    objective, params0, observer, ctx, stop_loss, stop_grad = prepare(
        net, params0, data, loss=loss, dynamics=dynamics, observe=observe, probes=probes,
        stop_loss=stop_loss, stop_grad=stop_grad)
    dtype = objective.y.dtype
    plan = dynamics.plan(ts, t1, n=objective.y.shape[0], dtype=dtype)
    scalar = lambda v: None if v is None else jnp.asarray(v, dtype)  # noqa: E731
    problem = Problem(objective, observer, ctx, jnp.asarray(plan.grid), jnp.asarray(t1, dtype),
                      scalar(stop_loss), scalar(stop_grad), scalar(diverge_factor),
                      save_params=save_params, progress=progress)
    return Setup(dynamics, plan.dynamics, ts, plan.info, problem, params0)


@eqx.filter_jit
def solve_run(dynamics, problem: Problem, params0) -> dict:
    """One whole run, ``finish(advance(init(params0), S))``, in one compiled call."""
    state = dynamics.advance(problem, dynamics.init(problem, params0), problem.grid.shape[-1])
    return dynamics.finish(problem, state)


@eqx.filter_jit
def solve_start(dynamics, problem: Problem, params0) -> dict:
    """The dynamics' initial state (compiled once per structure)."""
    return dynamics.init(problem, params0)


@eqx.filter_jit
def solve_segment(dynamics, problem: Problem, state: dict, until) -> tuple[dict, dict]:
    """``(state, out)``: the state after advancing to save ``until`` and the run's output
    at that point (``finish``)."""
    state = dynamics.advance(problem, state, until)
    return state, dynamics.finish(problem, state)


def to_trajectory(out: dict, params0, dynamics, observer: Observer) -> Trajectory:
    """The :class:`Trajectory` of one run from its reported output."""
    status = _status.NAMES[int(out["status"])]
    t_stop = float(out["t_stop"])
    times = np.asarray(out["ts"], dtype=np.float64)
    obs = {k: np.asarray(v) for k, v in out["obs"].items()}
    params = out["params"]
    if status != "completed":
        # keep the saves reached before the stop, then the stop point itself
        keep = times < t_stop * (1 - 1e-12) if t_stop > 0 else np.zeros_like(times, bool)
        times = np.append(times[keep], t_stop)
        obs = {k: np.concatenate([v[keep], np.asarray(out["obs_final"][k])[None]])
               for k, v in obs.items()}
        if params is not None:
            params = jax.tree.map(lambda x, f: np.concatenate([x[keep], np.asarray(f)[None]]),
                                  params, out["params_final"])
    return Trajectory(
        times=times, observables=obs, params0=jax.device_get(params0),
        params_final=out["params_final"], params=params, stats=dict(out["stats"]),
        status=status, t_stop=t_stop, dynamics=dynamics.describe(),
        obs_dims={k: o.dims for k, o in observer.observables.items()},
    )


def raise_for_status(traj: Trajectory) -> None:
    """Raise :class:`SimulationError` if the run diverged or its solver failed."""
    status = str(traj.status)
    t_stop = float(traj.t_stop)
    if status == "diverged":
        raise SimulationError(
            f"the run diverged at t={t_stop:.6g} (loss or parameters became non-finite, or "
            "the loss exceeded diverge_factor x its initial value). "
            "Lower the learning rate, rescale the data or init, or use throw=False to get "
            "the trajectory up to that time."
        )
    if status == "max_steps":
        steps = int(traj.stats.get("num_steps", 0))
        rejected = int(traj.stats.get("num_rejected_steps", 0))
        stall = ""
        if rejected > steps // 2:
            stall = (f" The step size collapsed ({rejected} of {steps} steps rejected): the flow "
                     "may blow up there (check loss/param_norm with throw=False), or the vector "
                     "field is discontinuous (ReLU kinks).")
        raise SimulationError(
            f"gradient flow reached max_steps={steps} at t={t_stop:.6g} before t1.{stall} "
            "Loosen rtol/atol, raise GradientFlow(max_steps=...), try another solver (e.g. "
            "solver='dopri5' or a stiff one such as 'kvaerno5'), or enable float64 "
            "(jax.config.update('jax_enable_x64', True)). For a two-layer net with relu, "
            "leaky_relu or abs, GradientFlow(kinks=True) keeps the solver's order across "
            "activation switches and needs far fewer steps at tight tolerances."
        )
    if status == "solver_failed":
        raise SimulationError(
            f"the solver failed at t={t_stop:.6g} (step size collapsed, or with "
            "kinks=True more samples held on one neuron's kink than its input dimension allows: "
            "degenerate data). Loosen rtol/atol, try another solver, or enable float64."
        )
