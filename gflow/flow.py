"""Gradient flow ``d theta/dt = -grad L(theta)`` integrated with diffrax.

Observables are computed inside the solve at the save times (``SaveAt(fn=...)``), so
memory is O(#saves x #observables) unless parameter snapshots are asked for.
Stopping conditions (:mod:`gflow.stops`) are boolean diffrax events, checked at the end of
every accepted step; divergence is an event too, and so is the end of a checkpoint
segment: :meth:`GradientFlow.advance` stops after the step that passes the segment's last
save and returns diffrax's solver and controller state, from which the next call
continues the same sequence of steps. A stop is then located inside its step: the step is
taken again from its start (kept in the controller state) and the condition bisected on
its dense output (:func:`gflow.stops.locate`), so ``t_stop`` and the state there are
accurate to the tolerance, not to a step.
(Why not diffrax's real-valued events: see :mod:`gflow.stops`.)
"""

from __future__ import annotations

from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from . import _status, stops
from ._tree import bcast, tree_finite, tree_norm
from .dynamics import AbstractDynamics, Plan, blank_saves
from .kinks import kink_advance, kink_finish, kink_init
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
            from .progress import bar

            return bar("gradient flow", total=100, unit="%",
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


class GradientFlow(AbstractDynamics):
    """Gradient flow integrated by diffrax.

    Arguments:
        rtol: relative tolerance of the adaptive step-size controller (default 1e-6).
        atol: absolute tolerance of the adaptive step-size controller (default 1e-8).
        solver: a name from :data:`SOLVERS` (default ``"tsit5"``) or a diffrax solver.
        controller: ``"pid"`` (PI control, ``pcoeff=0.4, icoeff=0.3``: robust where the
            ReLU vector field has kinks), ``"i"`` (classic integral controller),
            ``"constant"`` (fixed step ``dt0``), or a diffrax step-size controller, which
            carries its own tolerances and coefficients: ``rtol``, ``atol``, ``pcoeff`` and
            ``icoeff`` are then refused.
        dt0: initial (or, for ``"constant"``, fixed) step; ``None`` picks it automatically.
        max_steps: the solve fails with a clear error beyond this many steps (counted per
            checkpoint segment in a segmented run).
        kinks: integrate a two-layer net with a piecewise-linear activation (relu,
            leaky_relu, abs) as a switched system that locates every sign change of a
            pre-activation and keeps the solver's full order across it
            (:mod:`gflow.kinks`); stats then also count ``num_switches`` and ``num_slides``.
        step_to_saves: end a step exactly at every save time (diffrax's
            ``ClipStepSizeController(step_ts=...)``), so each save is a step's endpoint
            rather than a point of the dense output in a step's interior, which is one to
            two orders of magnitude less accurate (``t_stop`` aside). Costs one or two more
            steps per save; worth it for many-digit comparisons at the save times. Adaptive
            controllers (``"pid"``, ``"i"``) only, and ``kinks=False``.

    Its state between :meth:`advance` calls is diffrax's own (time, parameters, solver
    state, controller state, ``made_jump``) plus the end of the next step, so a run cut
    into segments takes exactly the steps of one run.
    """

    rtol: float | None
    atol: float | None
    solver: Any = eqx.field(static=True)
    controller: Any = eqx.field(static=True)
    dt0: float | None
    max_steps: int = eqx.field(static=True)
    pcoeff: float | None = eqx.field(static=True)
    icoeff: float | None = eqx.field(static=True)
    kinks: bool = eqx.field(static=True)
    step_to_saves: bool = eqx.field(static=True)

    def __init__(self, rtol=None, atol=None, solver="tsit5", controller="pid", dt0=None,
                 max_steps=100_000, pcoeff=None, icoeff=None, kinks=False,
                 step_to_saves=False):
        given = {k: v for k, v in dict(rtol=rtol, atol=atol, pcoeff=pcoeff,
                                       icoeff=icoeff).items() if v is not None}
        if not isinstance(controller, str):
            if given:
                raise ValueError(
                    f"GradientFlow: {sorted(given)} would be ignored with a controller object: "
                    "set them on the controller (e.g. diffrax.PIDController(rtol=..., "
                    "atol=..., pcoeff=..., icoeff=...)).")
            rtol, atol = getattr(controller, "rtol", None), getattr(controller, "atol", None)
        else:
            rtol = 1e-6 if rtol is None else rtol
            atol = 1e-8 if atol is None else atol
            pcoeff = 0.4 if pcoeff is None else pcoeff
            icoeff = 0.3 if icoeff is None else icoeff
        self.rtol, self.atol, self.solver, self.controller = rtol, atol, solver, controller
        self.dt0, self.max_steps, self.pcoeff, self.icoeff = dt0, max_steps, pcoeff, icoeff
        self.kinks, self.step_to_saves = kinks, step_to_saves

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
        if not isinstance(self.controller, str | diffrax.AbstractStepSizeController):
            raise ValueError("controller must be a name or a diffrax step-size controller, "
                             f"got {self.controller!r}.")
        if isinstance(self.controller, str):
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
        if not isinstance(self.step_to_saves, bool):
            raise ValueError(f"step_to_saves must be True or False, got {self.step_to_saves!r}.")
        if self.step_to_saves and (self.kinks or not _adaptive(self.make_controller())):
            raise ValueError("step_to_saves=True needs an adaptive controller ('pid' or 'i', "
                             "or a diffrax.PIDController) and kinks=False.")
        if self.kinks and not isinstance(self.make_solver(), diffrax.AbstractERK):
            raise ValueError("kinks=True needs an explicit Runge-Kutta solver (e.g. 'tsit5', "
                             f"'dopri5', 'dopri8'), got solver={self.solver!r}.")

    @property
    def kind(self) -> str:
        return "gf"

    def describe(self) -> str:
        name, ctrl = (x if isinstance(x, str) else type(x).__name__
                      for x in (self.solver, self.controller))
        kinks = ", kinks=True" if self.kinks else ""
        kinks += ", step_to_saves=True" if self.step_to_saves else ""
        return (f"GradientFlow(solver={name}, controller={ctrl}, rtol={self.rtol}, "
                f"atol={self.atol}{kinks})")

    def vector_field(self, t, y, objective):
        """The right-hand side ``-grad L(y)`` (a subclass may integrate another field on
        the same solver machinery, as :class:`gflow.ModifiedFlow` does)."""
        return jax.tree.map(jnp.negative, objective.grad(y))

    def term(self, problem) -> diffrax.AbstractTerm:
        """The diffrax term integrated: ``ODETerm(vector_field)`` (a subclass may add a
        noise term, as :class:`gflow.SME` does)."""
        return diffrax.ODETerm(self.vector_field)

    def make_solver(self) -> diffrax.AbstractSolver:
        """The diffrax solver."""
        return SOLVERS[self.solver]() if isinstance(self.solver, str) else self.solver

    def make_controller(self, save_ts=None) -> diffrax.AbstractStepSizeController:
        """The diffrax step-size controller; with ``step_to_saves`` and the save times
        ``save_ts``, clipped to step onto them."""
        if self.step_to_saves and save_ts is not None:
            return diffrax.ClipStepSizeController(self.make_controller(), step_ts=save_ts)
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
        solver = self.make_solver()
        if isinstance(solver, diffrax.Euler):  # one evaluation per step, no error estimate
            return num_steps
        tab = getattr(solver, "tableau", None)
        if tab is None:
            return None
        stages = len(tab.c) + 1
        fsal = bool(getattr(tab, "fsal", False))
        if self.dt0 is None and _adaptive(self.make_controller()):  # f0 shared with step 1
            return 2 + num_steps * (stages - 1) if fsal else 2 + num_steps * stages
        return 1 + num_steps * (stages - 1) if fsal else num_steps * stages

    def traced(self) -> GradientFlow:
        """This dynamics with its tolerances and ``dt0`` as arrays, so that a jitted solve
        compiles once for every value of them (Python floats would be static)."""
        fields = [f for f in ("rtol", "atol", "dt0") if getattr(self, f) is not None]
        return eqx.tree_at(lambda d: [getattr(d, f) for f in fields], self,
                           [jnp.asarray(getattr(self, f)) for f in fields])

    # -- the protocol ------------------------------------------------------------------
    def plan(self, ts, t1, *, n, dtype, members=None) -> Plan:
        """The save times themselves (in the solve's dtype); tolerances traced."""
        return Plan(self.traced(), np.asarray(ts).astype(dtype), np.asarray(ts, np.float64))

    def report(self, out, info):
        out["ts"] = info  # the requested float64 times, not their float32 copy
        stats = {k: np.asarray(v) for k, v in out["stats"].items()}
        if "grad_evals" not in stats:  # the kink-aware solve counts its own
            stats["grad_evals"] = self.grad_evals(stats["num_steps"])
        if np.ndim(stats["num_steps"]) == 0:
            stats = {k: None if v is None else int(v) for k, v in stats.items()}
        out["stats"] = stats
        return out

    def init(self, problem, params0):
        if self.kinks:
            return kink_init(self, problem, params0)
        term, solver = self.term(problem), self.make_solver()
        inner = self.make_controller()
        controller = _resumable(self.make_controller(problem.grid), problem.t1)
        objective, t1 = problem.objective, problem.t1
        t0 = jnp.zeros_like(t1)
        dt0, sstate = self.dt0, None
        if dt0 is None and _adaptive(inner):
            dt0, f0 = _initial_step(inner, term, solver, t0, params0, objective)
            sstate = _fsal_state(solver, term, t0, dt0, params0, objective, f0)
        tnext, cstate = controller.init(term, t0, t1, params0, dt0, objective, solver.func,
                                        solver.error_order(term))
        if sstate is None:
            sstate = solver.init(term, t0, jnp.minimum(tnext, t1), params0, objective)
        obs, snaps = blank_saves(problem, params0)
        zero = jnp.zeros((), jnp.int32)
        return {"t": t0, "y": params0, "solver_state": sstate, "controller_state": cstate,
                "made_jump": jnp.asarray(False), "saves": zero,
                "status": jnp.asarray(_status.COMPLETED, jnp.int32), "num_steps": zero,
                "num_accepted_steps": zero, "num_rejected_steps": zero,
                "obs": obs, "snaps": snaps}

    def advance(self, problem, state, until):
        if self.kinks:
            return kink_advance(self, problem, state, until)
        objective, ts, t1 = problem.objective, problem.grid, problem.t1
        stop_loss, stop_grad, cap = problem.stop_loss, problem.stop_grad, stops.loss_cap(problem)
        S = ts.shape[0]
        lo, t0 = state["saves"], state["t"]
        # run until the step that passes save `until - 1` (to t1 for the last segment)
        target = jnp.where(until < S, ts[jnp.clip(until - 1, 0, S - 1)], jnp.inf)
        # saves already recorded are moved to t0 (diffrax wants them in [t0, t1]) and skipped
        rows = jnp.arange(S)
        ts_left = jnp.where(rows < lo, t0, ts)
        t_skip = jnp.where(lo > 0, t0, -jnp.inf)
        shapes = jax.eval_shape(problem.observe, state["y"])

        def save_fn(t, y, args):
            obs = jax.lax.cond(t > t_skip, lambda y: problem.observe(y),
                               lambda y: jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                                                      shapes), y)
            return (obs, y) if problem.save_params else obs

        conds = [lambda t, y, args, **kw: ~jnp.isfinite(args.loss(y))]  # divergence
        codes = [_status.DIVERGED]
        if cap is not None:  # growth (also a divergence)
            conds.append(lambda t, y, args, **kw: args.loss(y) > cap)
            codes.append(_status.DIVERGED)
        if stop_loss is not None:
            conds.append(lambda t, y, args, **kw: args.loss(y) < stop_loss)
            codes.append(_status.STOP_LOSS)
        if stop_grad is not None:
            conds.append(lambda t, y, args, **kw: tree_norm(args.grad(y)) < stop_grad)
            codes.append(_status.STOP_GRAD)
        # the segment's end: after the step past its last save (strictly: diffrax ends a
        # solve whose boolean event holds at t0, and the first save is at t0 = 0)
        conds.append(lambda t, y, args, **kw: t > target)
        codes.append(_status.COMPLETED)

        saveat = diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=ts_left, fn=save_fn),
                                      diffrax.SubSaveAt(t1=True)],
                                solver_state=True, controller_state=True, made_jump=True)
        cstate = state["controller_state"]
        term, solver = self.term(problem), self.make_solver()
        sol = diffrax.diffeqsolve(
            term, solver, t0=t0, t1=t1,
            dt0=_gap(t0, cstate[1]), y0=state["y"], args=objective, saveat=saveat,
            stepsize_controller=_resumable(self.make_controller(ts), t1),
            solver_state=state["solver_state"], controller_state=cstate,
            made_jump=state["made_jump"], max_steps=self.max_steps, throw=False,
            event=diffrax.Event(conds),
            progress_meter=_delayed_tqdm_meter() if problem.progress
            else diffrax.NoProgressMeter(),
        )
        (ts_saved, t_final), (ys_saved, y_final) = sol.ts, sol.ys
        y = jax.tree.map(lambda x: x[-1], y_final)
        ok = sol.result == diffrax.RESULTS.successful
        event = sol.result == diffrax.RESULTS.event_occurred
        mask = sol.event_mask if sol.event_mask is not None else [False] * len(conds)
        status = jnp.where(ok, _status.COMPLETED, _status.SOLVER_FAILED)
        for m, code in reversed(list(zip(mask, codes, strict=True))):
            status = jnp.where(event & m, code, status)
        status = jnp.where(sol.result == diffrax.RESULTS.max_steps_reached, _status.MAX_STEPS,
                           status)
        # a failed solve whose state or loss is non-finite has diverged (the loss is evaluated
        # only then: lax.cond runs one branch, except under vmap)
        failed = ~ok & ~event
        finite = jax.lax.cond(failed, lambda y: jnp.isfinite(objective.loss(y)) & tree_finite(y),
                              lambda y: jnp.asarray(True), y)
        status = jnp.where(failed & ~finite, _status.DIVERGED, status)
        # a stop found at the end of a step of this call: locate it inside the step
        stopped = event & (status != _status.COMPLETED) & (sol.stats["num_accepted_steps"] > 0)
        t_end = t_final[-1]
        t_stop, y = jax.lax.cond(
            stopped, lambda: _locate(problem, term, solver, sol.controller_state[2], t_end, y,
                                     status, cap),
            lambda: (t_end, y))
        obs, snaps = ys_saved if problem.save_params else (ys_saved, None)
        # recorded by this call (not after a located stop)
        new = (rows >= lo) & jnp.isfinite(ts_saved) & (ts_saved <= t_stop)
        merge = lambda buf, x: jax.tree.map(  # noqa: E731
            lambda b, v: jnp.where(bcast(new, v), v, b), buf, x)
        out = state | {
            "t": t_stop, "y": y, "solver_state": sol.solver_state,
            "controller_state": sol.controller_state, "made_jump": sol.made_jump,
            "saves": lo + jnp.sum(new, dtype=jnp.int32), "status": status.astype(jnp.int32),
            "obs": merge(state["obs"], obs)}
        if problem.save_params:
            out["snaps"] = merge(state["snaps"], snaps)
        for k in ("num_steps", "num_accepted_steps", "num_rejected_steps"):
            out[k] = state[k] + jnp.asarray(sol.stats[k], jnp.int32)
        return out

    def finish(self, problem, state):
        if self.kinks:
            return kink_finish(self, problem, state)
        completed = state["status"] == _status.COMPLETED
        return {"obs": state["obs"], "params": state["snaps"], "t_stop": state["t"],
                "params_final": state["y"], "status": state["status"],
                "obs_final": at_stop(problem.observer, state["y"], problem.ctx, completed),
                "stats": {k: state[k] for k in ("num_steps", "num_accepted_steps",
                                                 "num_rejected_steps")}}


def _locate(problem, term, solver, last, t_end, y_end, status, cap):
    """``(t_stop, y_stop)``: where the condition that stopped the run (``status``) is met
    inside its last step, ``last = (t_a, y_a)`` to ``(t_end, y_end)``: the step is taken
    again (one more step's gradients; the same step up to rounding) and the condition
    bisected on its dense output."""
    t_a, y_a = last
    sstate = solver.init(term, t_a, t_end, y_a, problem.objective)
    _, _, dense, _, _ = solver.step(term, t_a, t_end, y_a, problem.objective, sstate,
                                    made_jump=False)
    interp = solver.interpolation_cls(t0=t_a, t1=t_end, **dense)
    c = stops.crossing(problem, status, cap)
    t_stop = stops.locate(lambda t: c(interp.evaluate(t)), t_a, t_end)
    y_stop = jax.lax.cond(t_stop < t_end, lambda: interp.evaluate(t_stop), lambda: y_end)
    return t_stop, y_stop


def _gap(t0, t1):
    """A step ``d`` with ``t0 + d == t1`` exactly (``t1 - t0`` rounds; one of it and its
    two neighbours adds back to ``t1``): diffrax restarts a solve at ``t0 + dt0``."""
    d = t1 - t0
    up, down = jnp.nextafter(d, jnp.inf), jnp.nextafter(d, -jnp.inf)
    return jnp.where(t0 + d == t1, d, jnp.where(t0 + up == t1, up, down))


class _Resumable(diffrax.AbstractStepSizeController):
    """A step-size controller whose state also holds the end of the next step, as
    ``diffeqsolve`` clips it (a solve continued from a saved state, ``dt0`` = that end
    minus ``t0``, then takes exactly the steps of one uninterrupted solve) and the start
    ``(t, y)`` of the last accepted step."""

    controller: Any
    t1: Any
    floor: Any  # 100 ulps below t1, where diffeqsolve rounds the end of a step to t1

    def wrap(self, direction):
        return type(self)(self.controller.wrap(direction), self.t1, self.floor)

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        tnext, state = self.controller.init(terms, t0, t1, y0, dt0, args, func, error_order)
        return tnext, (state, jnp.minimum(tnext, t1), (t0, y0))

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order,
                        controller_state):
        keep, tprev, tnext, jump, state, result = self.controller.adapt_step_size(
            t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state[0])
        # diffeqsolve's clipping: within 100 ulps of t1, to t1 (halfway after a rejection)
        end = self.t1
        tprev_c = jnp.minimum(tprev, end)
        clipped = jnp.where(tnext > self.floor,
                            jnp.where(keep, end, tprev_c + 0.5 * (end - tprev_c)), tnext)
        # the start of the last accepted step, where a stop inside it is located from
        last = jax.tree.map(lambda a, b: jnp.where(keep, a, b), (t0, y0), controller_state[2])
        return keep, tprev, tnext, jump, (state, clipped, last), result


class _ResumableAdaptive(_Resumable, diffrax.AbstractAdaptiveStepSizeController):
    """:class:`_Resumable` of an adaptive controller: diffrax reads its tolerances (for
    the root finder of implicit solvers)."""

    @property
    def rtol(self):
        return self.controller.rtol

    @property
    def atol(self):
        return self.controller.atol

    @property
    def norm(self):
        return self.controller.norm


def _resumable(controller, t1) -> _Resumable:
    floor = t1
    for _ in range(100):
        floor = jnp.nextafter(floor, -jnp.inf)
    adaptive = isinstance(controller, diffrax.AbstractAdaptiveStepSizeController)
    return (_ResumableAdaptive if adaptive else _Resumable)(controller, t1, floor)


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


