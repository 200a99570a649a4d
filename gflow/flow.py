"""Gradient flow ``d theta/dt = -grad L(theta)`` integrated with diffrax.

Observables are computed inside the solve at the save times (``SaveAt(fn=...)``), so
memory is O(#saves x #observables) unless parameter snapshots are asked for.
Stopping conditions are diffrax events; divergence (non-finite loss) is an event too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import _status
from ._tree import bcast, optional_array, tree_finite, tree_norm
from .kinks import check_kinks, kink_solve
from .observe import at_stop

__all__ = ["SOLVERS", "GradientFlow"]

SOLVERS: dict[str, type] = {
    "tsit5": diffrax.Tsit5,
    "dopri5": diffrax.Dopri5,
    "dopri8": diffrax.Dopri8,
    "bosh3": diffrax.Bosh3,
    "heun": diffrax.Heun,
    "midpoint": diffrax.Midpoint,
    "ralston": diffrax.Ralston,
    "euler": diffrax.Euler,
    "kvaerno5": diffrax.Kvaerno5,
}
_CONTROLLERS = ("pid", "i", "constant")


def _delayed_tqdm_meter():
    """diffrax's tqdm meter, shown only once a solve has run for 2 s."""

    class _DelayedTqdm(diffrax.TqdmProgressMeter):
        @staticmethod
        def _init_bar():
            import tqdm

            return tqdm.tqdm(total=100, unit="%", delay=2.0, desc="gradient flow",
                             bar_format="{desc}: {percentage:.1f}%|{bar}| [{elapsed}<{remaining}]")

        # update() (not refresh()) so that tqdm's delay and mininterval apply
        @staticmethod
        def _step_bar(bar, progress):
            bar.update(round(100 * float(progress), 2) - bar.n)

        @staticmethod
        def _close_bar(bar):
            bar.update(100.0 - bar.n)
            bar.close()

    return _DelayedTqdm()


class GradientFlow(eqx.Module):
    """Gradient flow integrated by diffrax.

    Arguments:
        rtol, atol: tolerances of the adaptive step-size controller.
        solver: a name from :data:`SOLVERS` (default ``"tsit5"``) or a diffrax solver.
        controller: ``"pid"`` (PI control, ``pcoeff=0.4, icoeff=0.3``: robust where the
            ReLU vector field has kinks), ``"i"`` (classic integral controller),
            ``"constant"`` (fixed step ``dt0``), or a diffrax step-size controller.
        dt0: initial (or, for ``"constant"``, fixed) step; ``None`` picks it automatically.
        max_steps: the solve fails with a clear error beyond this many steps.
        kinks: integrate a two-layer net with a piecewise-linear activation (relu,
            leaky_relu, abs) as a switched system that locates every sign change of a
            pre-activation and keeps the solver's full order across it
            (:mod:`gflow.kinks`); stats then also count ``num_switches`` and ``num_slides``.
    """

    rtol: float = 1e-6
    atol: float = 1e-8
    solver: Any = eqx.field(static=True, default="tsit5")
    controller: Any = eqx.field(static=True, default="pid")
    dt0: float | None = None
    max_steps: int = eqx.field(static=True, default=100_000)
    pcoeff: float = eqx.field(static=True, default=0.4)
    icoeff: float = eqx.field(static=True, default=0.3)
    kinks: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        if isinstance(self.solver, str) and self.solver not in SOLVERS:
            raise ValueError(
                f"solver={self.solver!r} is unknown; valid names are {list(SOLVERS)} "
                "or pass a diffrax solver object."
            )
        if not isinstance(self.solver, str | diffrax.AbstractSolver):
            raise ValueError(f"solver must be a name or a diffrax solver, got {self.solver!r}.")
        if isinstance(self.controller, str) and self.controller not in _CONTROLLERS:
            raise ValueError(
                f"controller={self.controller!r} is unknown; valid names are {list(_CONTROLLERS)} "
                "or pass a diffrax step-size controller."
            )
        for name in ("rtol", "atol"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and v > 0):
                raise ValueError(f"{name} must be a number > 0, got {v!r}.")
        if self.controller == "constant" and self.dt0 is None:
            raise ValueError("controller='constant' needs a fixed step: pass dt0=.")
        if self.dt0 is not None and not self.dt0 > 0:
            raise ValueError(f"dt0 must be > 0, got {self.dt0!r}.")
        if not (isinstance(self.max_steps, int) and self.max_steps >= 1):
            raise ValueError(f"max_steps must be an integer >= 1, got {self.max_steps!r}.")
        if not isinstance(self.kinks, bool):
            raise ValueError(f"kinks must be True or False, got {self.kinks!r}.")
        if self.kinks and not isinstance(self._solver(), diffrax.AbstractERK):
            raise ValueError("kinks=True needs an explicit Runge-Kutta solver (e.g. 'tsit5', "
                             f"'dopri5', 'dopri8'), got solver={self.solver!r}.")

    @property
    def kind(self) -> str:
        return "gf"

    def describe(self) -> str:
        name, ctrl = (x if isinstance(x, str) else type(x).__name__
                      for x in (self.solver, self.controller))
        kinks = ", kinks=True" if self.kinks else ""
        return (f"GradientFlow(solver={name}, controller={ctrl}, rtol={self.rtol}, "
                f"atol={self.atol}{kinks})")

    def _solver(self):
        return SOLVERS[self.solver]() if isinstance(self.solver, str) else self.solver

    def _controller(self):
        c = self.controller
        if not isinstance(c, str):
            return c
        if c == "constant":
            return diffrax.ConstantStepSize()
        p, i = (self.pcoeff, self.icoeff) if c == "pid" else (0.0, 1.0)
        return diffrax.PIDController(rtol=self.rtol, atol=self.atol, pcoeff=p, icoeff=i)

    def grad_evals(self, num_steps) -> Any:
        """Gradient evaluations used by ``num_steps`` solver steps (Runge-Kutta tableau),
        plus those of the automatic initial step (:func:`_initial_step`) when it runs: two,
        the first of which is also the first step's first stage."""
        tab = getattr(self._solver(), "tableau", None)
        if tab is None:
            return None
        stages = len(tab.c) + 1
        fsal = bool(getattr(tab, "fsal", False))
        if self.dt0 is None and _adaptive(self._controller()):  # f0 shared with the 1st step
            return 2 + num_steps * (stages - 1) if fsal else 2 + num_steps * stages
        return 1 + num_steps * (stages - 1) if fsal else num_steps * stages

    def _finish(self, out, ts):
        out["ts"] = ts  # the requested float64 times, not their float32 copy
        out["stats"] = {k: np.asarray(v) for k, v in out["stats"].items()}
        if "grad_evals" not in out["stats"]:  # the kink-aware solve counts its own
            out["stats"]["grad_evals"] = self.grad_evals(out["stats"]["num_steps"])
        return out

    def traced(self) -> GradientFlow:
        """This dynamics with its tolerances and ``dt0`` as arrays, so that a jitted solve
        compiles once for every value of them (Python floats would be static)."""
        fields = [f for f in ("rtol", "atol", "dt0") if getattr(self, f) is not None]
        return eqx.tree_at(lambda d: [getattr(d, f) for f in fields], self,
                           [jnp.asarray(getattr(self, f)) for f in fields])

    def _integrate(self, objective, params0, ts, t1, obs_fn: Callable, ctx, *, stop_loss,
                   stop_grad, save_params, progress):
        out = _gf_solve(self.traced(), objective, params0, jnp.asarray(ts), jnp.asarray(t1),
                        obs_fn, ctx,
                        optional_array(stop_loss), optional_array(stop_grad),
                        save_params=save_params, progress=progress)
        out = self._finish(jax.device_get(out), ts)
        out["stats"] = {k: int(v) for k, v in out["stats"].items()}
        return out


def gf_solve(dyn: GradientFlow, objective, params0, ts, t1, obs_fn, ctx, stop_loss, stop_grad,
             *, save_params, progress):
    """One gradient-flow solve (pure: jit/vmap/shard it). Returns a dict of arrays."""
    if dyn.kinks:
        check_kinks(objective.net)
        return kink_solve(dyn, objective, params0, ts, t1, obs_fn, ctx, stop_loss, stop_grad,
                          save_params=save_params, progress=progress)
    cond = (stop_loss is not None, stop_grad is not None)
    def vf(t, y, args):
        return jax.tree.map(jnp.negative, args.grad(y))

    def save_fn(t, y, args):
        obs = obs_fn(y, ctx)
        return (obs, y) if save_params else obs

    def diverged(t, y, args, **kw):
        return ~jnp.isfinite(args.loss(y))

    conds = [diverged]
    if cond[0]:
        conds.append(lambda t, y, args, **kw: args.loss(y) < stop_loss)
    if cond[1]:
        def small_grad(t, y, args, **kw):
            g = args.grad(y)
            return tree_norm(g) < stop_grad
        conds.append(small_grad)

    saveat = diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=ts, fn=save_fn),
                                  diffrax.SubSaveAt(t1=True)])
    term, solver, controller, t0 = diffrax.ODETerm(vf), dyn._solver(), dyn._controller(), \
        jnp.zeros_like(t1)
    dt0, solver_state = dyn.dt0, None
    if dt0 is None and _adaptive(controller):
        dt0, f0 = _initial_step(controller, term, solver, t0, params0, objective)
        solver_state = _fsal_state(solver, term, t0, dt0, params0, objective, f0)
    sol = diffrax.diffeqsolve(
        term, solver, t0=t0, t1=t1, dt0=dt0, solver_state=solver_state,
        y0=params0, args=objective, saveat=saveat, stepsize_controller=controller,
        max_steps=dyn.max_steps, throw=False, event=diffrax.Event(conds),
        progress_meter=_delayed_tqdm_meter() if progress else diffrax.NoProgressMeter(),
    )
    (ts_saved, t_final), (ys_saved, y_final_all) = sol.ts, sol.ys
    y_final = jax.tree.map(lambda x: x[-1], y_final_all)
    t_stop = t_final[-1]
    ok = sol.result == diffrax.RESULTS.successful
    event = sol.result == diffrax.RESULTS.event_occurred
    mask = sol.event_mask if sol.event_mask is not None else [False] * len(conds)
    status = jnp.where(ok, _status.COMPLETED, _status.SOLVER_FAILED)
    codes = [_status.DIVERGED] + [_status.STOP_LOSS] * cond[0] + [_status.STOP_GRAD] * cond[1]
    for m, code in reversed(list(zip(mask, codes, strict=True))):
        status = jnp.where(event & m, code, status)
    status = jnp.where(sol.result == diffrax.RESULTS.max_steps_reached, _status.MAX_STEPS, status)
    # a failed solve whose state or loss is non-finite has diverged (the loss is evaluated
    # only then: lax.cond runs one branch, except under vmap)
    failed = ~ok & ~event
    finite = jax.lax.cond(failed, lambda y: jnp.isfinite(objective.loss(y)) & tree_finite(y),
                          lambda y: jnp.asarray(True), y_final)
    status = jnp.where(failed & ~finite, _status.DIVERGED, status)
    obs, params = (ys_saved if save_params else (ys_saved, None))
    # saves after an early stop are filled with inf by diffrax: mark them as missing
    valid = ts_saved <= t_stop
    obs = jax.tree.map(lambda x: jnp.where(bcast(valid, x), x, jnp.nan), obs)
    obs_final = at_stop(obs_fn, y_final, ctx, ok)
    return {
        "obs": obs, "params": params, "t_stop": t_stop, "params_final": y_final,
        "obs_final": obs_final, "status": status,
        "stats": {"num_steps": sol.stats["num_steps"],
                  "num_accepted_steps": sol.stats["num_accepted_steps"],
                  "num_rejected_steps": sol.stats["num_rejected_steps"]},
    }


def _adaptive(controller) -> bool:
    return isinstance(controller, diffrax.PIDController)


def _initial_step(controller: diffrax.PIDController, term, solver, t0, y0, args):
    """``(dt0, f0)``: the first step size from Hairer's rule (Hairer, Norsett & Wanner,
    *Solving ODEs I*, II.4, as diffrax, torchdiffeq and SciPy's ``solve_ivp`` write it; two
    vector-field evaluations) and the vector field ``f0`` at ``(t0, y0)``.

    diffrax 0.7 never applies its own copy of the rule inside ``diffeqsolve``: the term
    reaching the controller is wrapped (``WrapTerm``), fails an ``isinstance(terms,
    ODETerm)`` test, and every solve would start with ``dt0 = 0.01`` whatever the time scale
    of the problem.
    """
    order = controller.error_order
    order = solver.error_order(term) if order is None else order
    rtol, atol, norm = controller.rtol, controller.atol, controller.norm
    scale = jax.tree.map(lambda y: atol + rtol * jnp.abs(y), y0)
    scaled = lambda v: jax.tree.map(jnp.divide, v, scale)  # noqa: E731
    f0 = term.vf(t0, y0, args)
    d0, d1 = norm(scaled(y0)), norm(scaled(f0))
    tiny = (d0 < 1e-5) | (d1 < 1e-5)
    h0 = jnp.where(tiny, 1e-6, 0.01 * d0 / jnp.where(tiny, 1.0, d1))
    f1 = term.vf(t0 + h0, jax.tree.map(lambda y, f: y + h0 * f, y0, f0), args)
    d2 = norm(scaled(jax.tree.map(jnp.subtract, f1, f0))) / h0
    dmax = jnp.maximum(d1, d2)
    h1 = jnp.where(dmax <= 1e-15, jnp.maximum(1e-6, h0 * 1e-3),
                   (0.01 / jnp.where(dmax <= 1e-15, 1.0, dmax)) ** (1 / order))
    dt0 = jnp.minimum(100 * h0, h1).astype(jnp.result_type(t0))
    return jax.lax.stop_gradient(dt0), f0


def _fsal_state(solver, term, t0, dt0, y0, args, f0):
    """The solver state of a first-same-as-last Runge-Kutta solver (diffrax's ``(first_step,
    f0)``) holding the ``f0`` already computed, so the first step does not evaluate it
    again; ``None`` (the solver's own start) for any other solver."""
    state = solver.init(term, t0, t0 + dt0, y0, args)
    if (isinstance(solver, diffrax.AbstractRungeKutta) and isinstance(state, tuple)
            and len(state) == 2 and jax.tree.structure(state[1]) == jax.tree.structure(f0)):
        return jnp.asarray(False), f0
    return None


_gf_solve = eqx.filter_jit(gf_solve)
