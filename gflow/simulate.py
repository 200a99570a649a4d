"""``simulate``: one entry point for every dynamics, returning one :class:`Trajectory`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import _status, inputs
from . import checkpoint as _checkpoint
from .checkpoint import check_memory
from .data import Dataset
from .discrete import _Discrete
from .flow import GradientFlow
from .losses import CLASSIFICATION, get_loss
from .objective import Objective
from .observe import ObsContext, Observer, resolve
from .times import LogTimes, check_t1, resolve_times
from .trajectory import Trajectory

__all__ = ["SimulationError", "simulate"]


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


def default_save(dynamics, t1: float) -> LogTimes:
    """``LogTimes(100)``, or one save per iterate when a discrete run has fewer steps."""
    if not isinstance(dynamics, _Discrete):
        return LogTimes(100)
    lr = dynamics.lr if callable(dynamics.lr) else float(np.max(dynamics.lr))
    return LogTimes(min(100, len(dynamics._step_times(t1, lr))))


def prepare(net, params0, data: Dataset, *, loss, dynamics, observe, probes, stop_loss,
            stop_grad, member_axes: int = 0):
    """Validate the inputs of a run and build its objective, observer and context."""
    if not isinstance(data, Dataset):
        raise ValueError(f"data must be a gflow.Dataset, got {type(data).__name__}.")
    if not isinstance(dynamics, GradientFlow | _Discrete):
        raise ValueError(
            "dynamics must be gflow.GradientFlow(...), gflow.GD(lr), gflow.SGD(lr, batch_size, "
            f"key=...) or gflow.Optax(optimizer, lr), got {dynamics!r}."
        )
    loss_fn = get_loss(loss)
    if isinstance(loss, str) and loss in CLASSIFICATION and not data.is_binary():
        raise ValueError(f"loss={loss!r} needs labels in {{-1, +1}}; y has other values.")
    inputs.check_param_leaves(params0)
    if member_axes == 0:
        inputs.check_single_dataset(data)
        net.check_params(params0, d=data.d)
    dtype = jnp.result_type(float)
    params0 = jax.tree.map(lambda x: jnp.asarray(x, dtype), params0)
    inputs.check_finite_params(params0, member_axes)
    inputs.check_loss(loss, loss_fn, data.n, dtype)
    if probes is not None:
        probes = jnp.asarray(probes, dtype)
        if probes.ndim != 2 or probes.shape[-1] != data.d:
            raise ValueError(f"probes must have shape (p, d={data.d}), got {probes.shape}.")
    obs = resolve(observe, has_test=data.has_test, has_probes=probes is not None)
    objective = Objective(net, loss_fn, data.X, data.y)
    ctx = ObsContext(objective, params0, data.X_test, data.y_test, probes)
    stop_loss = _check_positive(stop_loss, "stop_loss")
    stop_grad = _check_positive(stop_grad, "stop_grad")
    return objective, params0, Observer(obs), ctx, stop_loss, stop_grad


def simulate(
    net,
    params0,
    data: Dataset,
    *,
    loss: str | Callable = "squared",
    dynamics=None,
    t1: float,
    save: Any = None,
    observe: Sequence[str | Callable] | dict = ("loss",),
    stop_loss: float | None = None,
    stop_grad: float | None = None,
    probes=None,
    save_params: bool = False,
    throw: bool = True,
    progress: bool = False,
) -> Trajectory:
    """Train ``net`` from ``params0`` on ``data`` and record observables on one time axis.

    Arguments:
        net: a network, e.g. :class:`gflow.TwoLayer`.
        params0: its initial parameters (``gflow.init.*``).
        data: a :class:`gflow.Dataset`.
        loss: ``"squared"``, ``"logistic"``, ``"exponential"`` or a per-sample ``(f, y) -> (n,)``.
        dynamics: ``gflow.GradientFlow(...)`` (default), ``gflow.GD(lr)``,
            ``gflow.SGD(lr, batch_size, key=)`` or ``gflow.Optax(optimizer, lr)``.
        t1: final time (> 0). Discrete dynamics run ``round(t1 / lr)`` steps.
        save: ``gflow.LogTimes(n)``, ``gflow.LinTimes(n)`` or an array of times in [0, t1];
            default ``LogTimes(100)`` (at most one save per step for discrete dynamics).
        observe: observable names (see :mod:`gflow.observe`) or callables ``fn(params, ctx)``.
        stop_loss, stop_grad: stop once the loss / gradient norm falls below these.
        probes: (p, d) inputs for the ``"output"`` observable.
        save_params: also keep parameter snapshots at the save times (memory heavy).
        throw: raise :class:`SimulationError` on divergence or solver failure; if ``False``
            return the trajectory up to the failure, with ``traj.status`` saying why.
        progress: show a progress bar (after 2 s).

    Inside ``with gflow.checkpoint.checkpointing(DIR)`` (as under ``gflow run``) the call
    is checkpointed: see :func:`gflow.checkpoint.simulate_resumable`.

    Returns:
        A :class:`Trajectory`. Save times after an early stop are dropped and the stop
        point itself is appended, so ``traj.times[-1] == traj.t_stop``.
    """
    ck = _checkpoint.active()
    if ck is not None:  # inside `with gflow.checkpoint.checkpointing(DIR)` (gflow run)
        return _checkpoint.simulate_resumable(
            ck.next_path(".npz"), net, params0, data, every=ck.every,
            every_seconds=ck.every_seconds, keep=True, loss=loss, dynamics=dynamics, t1=t1,
            save=save, observe=observe, stop_loss=stop_loss, stop_grad=stop_grad,
            probes=probes, save_params=save_params, throw=throw, progress=progress)
    dynamics = GradientFlow() if dynamics is None else dynamics
    t1 = check_t1(t1)
    ts = resolve_times(default_save(dynamics, t1) if save is None else save, t1)
    objective, params0, observer, ctx, stop_loss, stop_grad = prepare(
        net, params0, data, loss=loss, dynamics=dynamics, observe=observe, probes=probes,
        stop_loss=stop_loss, stop_grad=stop_grad)
    check_memory(observer, params0, ctx, len(ts), save_params=save_params,  # refuse early
                 dynamics=dynamics)
    out = dynamics._integrate(objective, params0, ts, t1, observer, ctx, stop_loss=stop_loss,
                              stop_grad=stop_grad, save_params=save_params, progress=progress)
    traj = _to_trajectory(out, params0, dynamics, observer)
    if throw:
        raise_for_status(traj)
    return traj


def _to_trajectory(out, params0, dynamics, observer: Observer) -> Trajectory:
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
    status = traj.status
    if status == "diverged":
        raise SimulationError(
            f"the run diverged at t={traj.t_stop:.6g} (loss or parameters became non-finite). "
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
            f"gradient flow reached max_steps={steps} at t={traj.t_stop:.6g} before t1.{stall} "
            "Loosen rtol/atol, raise GradientFlow(max_steps=...), try another solver (e.g. "
            "solver='dopri5' or a stiff one such as 'kvaerno5'), or enable float64 "
            "(jax.config.update('jax_enable_x64', True)). For a two-layer net with relu, "
            "leaky_relu or abs, GradientFlow(kinks=True) keeps the solver's order across "
            "activation switches and needs far fewer steps at tight tolerances."
        )
    if status == "solver_failed":
        raise SimulationError(
            f"the solver failed at t={traj.t_stop:.6g} (step size collapsed, or with "
            "kinks=True more samples held on one neuron's kink than its input dimension allows: "
            "degenerate data). Loosen rtol/atol, try another solver, or enable float64."
        )
