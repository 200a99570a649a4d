"""``simulate``: one entry point for every dynamics, returning one :class:`Trajectory`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax

from . import checkpoint, context
from .data import Dataset
from .memory import check_memory
from .solve import SimulationError, raise_for_status, setup, solve_run, to_trajectory
from .trajectory import Trajectory

__all__ = ["SimulationError", "simulate"]


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
    diverge_factor: float | None = None,
    probes=None,
    save_params: bool = False,
    throw: bool = True,
    progress: bool = False,
) -> Trajectory:
    """Train ``net`` from ``params0`` on ``data`` and record observables on one time axis.

    Arguments:
        net: a network, e.g. :class:`gflow.TwoLayer`.
        params0: its initial parameters (``gflow.init.*``).
        data: a :class:`gflow.Dataset`, or a :class:`gflow.population.Population` (the
            exact population loss of a teacher; ``loss="squared"``).
        loss: ``"squared"``, ``"logistic"``, ``"exponential"`` or a per-sample ``(f, y) -> (n,)``.
        dynamics: ``gflow.GradientFlow(...)`` (default), ``gflow.GD(lr)``,
            ``gflow.SGD(lr, batch_size, key=)``, ``gflow.Optax(optimizer, lr)``,
            ``gflow.Momentum(lr, beta)`` or any :class:`gflow.dynamics.AbstractDynamics`.
        t1: final time (> 0). Discrete dynamics run ``round(t1 / lr)`` steps.
        save: ``gflow.LogTimes(n)``, ``gflow.LinTimes(n)`` or an array of times in [0, t1];
            default ``LogTimes(100)`` (at most one save per step for discrete dynamics).
        observe: observable names (see :mod:`gflow.observe`) or callables ``fn(params, ctx)``.
        stop_loss: stop once the loss falls below this. Under gradient flow the crossing
            is located inside the solver's step (``t_stop`` accurate to the tolerance);
            discrete dynamics stop at the first iterate below.
        stop_grad: stop once the gradient norm falls below this (located as ``stop_loss``).
        diverge_factor: a number > 1, or ``None`` (default: off): the run also diverges
            (status ``"diverged"``, at the first iterate / the located time) once its loss
            exceeds ``diverge_factor`` x its initial loss. Non-finite values always count
            as divergence. Off by default because growth relative to the initial loss is
            not divergence in general: a run started near a minimum (initial loss near 0)
            or at the edge of stability (catapults) can legitimately grow its loss by
            orders of magnitude and then converge. For GD/SGD at a learning rate that may
            be too large, ``1e6`` is a generous choice.
        probes: (p, d) inputs for the ``"output"`` observable.
        save_params: also keep parameter snapshots at the save times (memory heavy).
        throw: raise :class:`SimulationError` on divergence or solver failure; if ``False``
            return the trajectory up to the failure, with ``traj.status`` saying why.
        progress: show a progress bar (after 2 s).

    Inside ``with gflow.checkpoint.checkpointing(DIR)`` (as under ``gflow run``) the call
    is checkpointed: see :func:`gflow.checkpoint.simulate_resumable`; it returns the same.

    Returns:
        A :class:`Trajectory`. Save times after an early stop are dropped and the stop
        point itself is appended, so ``traj.times[-1] == traj.t_stop``.
    """
    ck = context.active()
    if ck is not None:  # inside `with gflow.checkpoint.checkpointing(DIR)` (gflow run)
        return checkpoint.simulate_resumable(
            ck.next_path(".npz"), net, params0, data, every=ck.every,
            every_seconds=ck.every_seconds, keep=True, loss=loss, dynamics=dynamics, t1=t1,
            save=save, observe=observe, stop_loss=stop_loss, stop_grad=stop_grad,
            probes=probes, save_params=save_params, throw=throw, progress=progress,
            diverge_factor=diverge_factor)
    st = setup(net, params0, data, loss=loss, dynamics=dynamics, t1=t1, save=save,
               observe=observe, probes=probes, stop_loss=stop_loss, stop_grad=stop_grad,
               save_params=save_params, progress=progress, diverge_factor=diverge_factor)
    problem = st.problem
    check_memory(problem.observer, st.params0, problem.ctx, len(st.ts),  # refuse early
                 save_params=save_params, dynamics=st.dynamics)
    out = solve_run(st.planned, problem, st.params0)
    out = st.dynamics.report(jax.device_get(out), st.info)
    traj = to_trajectory(out, st.params0, st.dynamics, problem.observer)
    if throw:
        raise_for_status(traj)
    return traj
