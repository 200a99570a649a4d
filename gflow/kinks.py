"""Kink-aware gradient flow: GF of piecewise-linear two-layer nets as a switched system.

For ``f(x) = c sum_j a_j sigma(w_j . x + b_j)`` with ``sigma`` piecewise linear (``relu``,
``leaky_relu``, ``abs``: slope ``s-`` below 0 and ``s+`` above), the gradient jumps whenever
a pre-activation ``z_ij = w_j . x_i + b_j`` changes sign, and a standard adaptive solver drops
to first order at every such switch. Between switches the flow is that of the
*frozen-pattern* net ``f_S(x_i) = c sum_j a_j S_ij z_ij`` with fixed slopes ``S_ij``: a
polynomial vector field, on which a Runge-Kutta method keeps its full order. So the flow
is integrated as a switched system (:func:`kink_init`, :func:`kink_advance`, used by
``gflow.GradientFlow(kinks=True)``):

1. **Step** the frozen-pattern flow with the solver's own error control (diffrax solver
   and step-size controller objects, called step by step).
2. **Locate** switches for free: the solver's dense output is a polynomial in ``t``
   (degree 4 for Tsit5 and Dopri5) and ``z_ij`` is linear in the parameters, so each
   ``z_ij(t)`` along the step is a polynomial, recovered exactly from the dense output at
   ``degree + 1`` points. The earliest sign change over all pairs (a grid of ``GRID``
   sub-intervals, also watching for a dip below 0 and back inside one, then safeguarded
   Newton steps on the polynomial) costs no gradient evaluation.
3. **Switch**: an accepted step that contains a switch is cut there (the dense output gives
   the state), the pair's slope flips, and integration restarts (one gradient evaluation to
   renew the first stage, one to check the pair's new side). A step holds at most one
   switch, so the number of steps is about ``#switches + #steps of a smooth flow``: the
   tolerance sets the accuracy, not the kinks.
4. **Slide**: when the flows on both sides of ``z_ij = 0`` push back onto it (a Filippov
   sliding mode: the neuron's kink sticks to a data point), the pair is held on the kink
   with the slope in ``[s-, s+]`` that keeps ``dz_ij/dt = 0`` -- a small linear solve per
   neuron over its sliding samples (at most ``d + 1``) -- until that slope leaves
   ``[s-, s+]``, which is located like a switch. Plain solvers approximate this solution
   by chattering across the kink.

Every mode conserves ``a_j^2 - |w_j|^2 - b_j^2`` exactly (the frozen-pattern net is
1-homogeneous in ``(a_j, w_j, b_j)``), so its drift measures the integration error.
"""

from __future__ import annotations

from typing import NamedTuple

import diffrax
import jax
import jax.numpy as jnp

from . import _status, stops
from ._tree import bcast
from .dynamics import blank_saves, record
from .nets import two_layer_parts
from .observe import at_stop

__all__ = ["GRID", "PIECEWISE_LINEAR", "check_kinks", "kink_advance", "kink_finish",
           "kink_init"]

#: activations (linear on each side of 0) that the kink-aware mode integrates
PIECEWISE_LINEAR: tuple[str, ...] = ("relu", "leaky_relu", "abs")

#: sub-intervals per step on which sign changes of each z_ij(t) are first bracketed
GRID = 16
_NEWTON = 10  # safeguarded Newton steps that refine a root inside a grid interval
_ULPS = 64  # multiples of the machine epsilon below which a value is rounding noise
_OFF, _ON, _SLIDE = 0, 1, 2
# degree of each solver's dense output (a polynomial in t); others: 7, sampled at 8 points
_DEGREE = {diffrax.Tsit5: 4, diffrax.Dopri5: 4, diffrax.Dopri8: 7, diffrax.Bosh3: 3}


class Modes(NamedTuple):
    """Which side of its kink each pair is on, and each neuron's sliding samples.

    ``mode`` (n, m): 0 below the kink, 1 above, 2 held on it (sliding); ``order`` (m, k):
    for each neuron the indices of (at most k) sliding samples, with ``valid`` (m, k)
    marking the real ones. Recomputed only when the pattern changes.
    """

    mode: jax.Array
    order: jax.Array
    valid: jax.Array


def check_kinks(net) -> None:
    """Raise ``ValueError`` unless the kink-aware mode can integrate ``net``."""
    base, _ = two_layer_parts(net)
    if base is None:
        raise ValueError("GradientFlow(kinks=True) integrates two-layer nets (gflow.TwoLayer) "
                         f"on a dataset; got {type(net).__name__}. Use kinks=False for it.")
    if base.activation.name not in PIECEWISE_LINEAR:
        raise ValueError(
            f"GradientFlow(kinks=True) needs a piecewise-linear activation "
            f"{list(PIECEWISE_LINEAR)}, got {base.activation.name!r}; smooth activations "
            "have no kinks: use kinks=False.")


class _Pattern:
    """The frozen-pattern net of ``objective`` and the slopes that hold sliding pairs."""

    def __init__(self, objective):
        self.obj = objective
        self.net, self.mask = two_layer_parts(objective.net)
        # the activation's slopes below and above 0
        fn, one = self.net.activation.fn, jnp.ones((), objective.X.dtype)
        self.lo, self.hi = -fn(-one), fn(one)
        X = objective.X
        self.X = X
        n, d = X.shape
        m = self.net.width
        # a neuron can slide on at most d + bias samples at once (z_ij = 0 for independent x_i)
        self.k = min(n, d + (1 if self.net.bias else 0))
        self.n, self.m = n, m

    def z(self, params):
        """Pre-activations, shape (n, m)."""
        return self.net.preactivations(params, self.X)

    def z_scale(self, params):
        """``|w_j| |x_i| + |b_j|``, shape (n, m): the size of the terms summed in ``z_ij``."""
        scale = jnp.linalg.norm(self.X, axis=1)[:, None] * jnp.linalg.norm(params.W, axis=1)
        return scale if params.b is None else scale + jnp.abs(params.b)

    def output(self, params, S):
        h = self.z(params) * S
        if self.mask is not None:
            h = h * self.mask
        return self.obj.net.prefactor * (h @ params.a)

    def loss(self, params, S):
        return jnp.mean(self.obj.loss_fn(self.output(params, S), self.obj.y))

    def modes(self, mode) -> Modes:
        sliding = (mode == _SLIDE).T
        order = jnp.argsort(~sliding, axis=1, stable=True)[:, :self.k]  # (m, k)
        return Modes(mode.astype(jnp.int8), order, jnp.take_along_axis(sliding, order, axis=1))

    def base_slopes(self, mode):
        mid = 0.5 * (self.lo + self.hi)
        return jnp.where(mode == _ON, self.hi, jnp.where(mode == _OFF, self.lo, mid))

    def slopes(self, params, modes: Modes):
        """Slopes (n, m) of every pair; a sliding pair's keeps its ``dz/dt = 0``."""
        base = self.base_slopes(modes.mode)
        return jax.lax.cond(jnp.any(modes.valid), lambda: self._hold(params, base, modes),
                            lambda: base)

    def _hold(self, params, base, modes: Modes):
        # dz_ij/dt = -(c a_j / n) sum_l l'_l S_lj K_il with K_il = x_i.x_l (+1 with a bias),
        # l'_l the loss derivative at sample l. For each neuron j, dz_ij/dt = 0 on its sliding
        # samples i fixes u_l = l'_l S_lj there: K_SS u_S = -sum_{l not in S} K_Sl l'_l S_lj.
        X = self.X
        sliding, order, valid = modes.mode == _SLIDE, modes.order, modes.valid
        f = self.output(params, base)
        g = jax.grad(lambda f_: jnp.sum(self.obj.loss_fn(f_, self.obj.y)))(f)  # (n,)
        known = jnp.where(sliding, 0.0, base) * g[:, None]  # (n, m)
        bias = 1.0 if self.net.bias else 0.0
        r = X @ (X.T @ known) + bias * jnp.sum(known, 0)  # (n, m): sum_l K_il known_lj
        k = self.k
        Xs = X[order]  # (m, k, d)
        K = jnp.einsum("mkd,mld->mkl", Xs, Xs) + bias
        both = valid[:, :, None] & valid[:, None, :]
        eye = jnp.eye(k, dtype=K.dtype)
        K = jnp.where(both, K, eye)
        rhs = jnp.where(valid, -jnp.take_along_axis(r.T, order, axis=1), 0.0)
        u = jnp.linalg.solve(K, rhs[..., None])[..., 0]  # (m, k)
        gs = g[order]
        S_sub = jnp.where(valid & (gs != 0), u / jnp.where(gs != 0, gs, 1.0),
                          0.5 * (self.lo + self.hi))
        cols = jnp.broadcast_to(jnp.arange(self.m)[:, None], order.shape)
        held = base.at[order, cols].set(jnp.where(valid, S_sub, base[order, cols]))
        return jnp.where(sliding, held, base)

    def vector_field(self, t, params, modes: Modes):
        S = jax.lax.stop_gradient(self.slopes(params, modes))
        g = jax.grad(self.loss)(params, S)
        g = self.obj.mask_grad(params, g)
        return jax.tree.map(jnp.negative, g)

    def alpha(self, params, modes: Modes):
        """Where each pair's slope sits in ``[s-, s+]`` (0: off side, 1: on side)."""
        return (self.slopes(params, modes) - self.lo) / (self.hi - self.lo)


def _horner(Q, s):
    """``sum_k Q[k] s^k`` over the leading axis of ``Q``."""
    acc = Q[-1]
    for c in Q[-2::-1]:
        acc = acc * s + c
    return acc


def _refine(Q, a, b):
    """Root in ``[a, b]`` of polynomials with ``q(a) >= 0 > q(b)``: Newton steps, falling
    back to bisection where a step leaves the bracket (converges for simple and multiple
    roots; ``_NEWTON`` iterations reach float64 resolution from a grid interval)."""
    dQ = Q[1:] * jnp.arange(1, Q.shape[0], dtype=Q.dtype).reshape((-1,) + (1,) * (Q.ndim - 1))

    def step(_, c):
        a, b, x = c
        qx = _horner(Q, x)
        a, b = jnp.where(qx >= 0, x, a), jnp.where(qx >= 0, b, x)
        xn = x - qx / _horner(dQ, x)
        inside = (xn >= a) & (xn <= b)
        return a, b, jnp.where(inside, xn, 0.5 * (a + b))

    qa, qb = _horner(Q, a), _horner(Q, b)
    x0 = jnp.clip(a + (b - a) * qa / (qa - qb), a, b)  # the secant point
    x0 = jnp.where(jnp.isfinite(x0), x0, 0.5 * (a + b))
    return jax.lax.fori_loop(0, _NEWTON, step, (a, b, x0))[2]


def _first_root(Q, active, noise=0.0):
    """Earliest downward crossing of ``-noise`` in ``s`` in ``(0, 1]`` of each active
    polynomial.

    ``Q``: (deg + 1, n, m) coefficients in the step's normalised time ``s``; ``noise``
    (broadcasting to (n, m)): the rounding level of the values, below which a pair that sits
    on its kink (just switched, or leaving a sliding mode tangentially) is not taken to
    cross it. Returns the crossing ``s`` per pair (``inf`` where none). Sign changes are
    bracketed on a grid of
    ``GRID`` intervals; a dip below 0 between two non-negative grid values (a crossing and
    its reversal inside one interval) is caught where the tangents at the interval's ends
    meet below 0, and located through the minimum (the root of ``q'``). Roots are refined
    by safeguarded Newton steps on the polynomial.
    """
    Q = Q.at[0].add(noise)
    deg = Q.shape[0] - 1
    dt = Q.dtype
    sg = jnp.linspace(0.0, 1.0, GRID + 1, dtype=dt)
    powers = jnp.arange(deg + 1, dtype=dt)
    V = sg[:, None] ** powers
    dV = jnp.concatenate([jnp.zeros((GRID + 1, 1), dt), powers[1:] * V[:, :-1]], axis=1)
    q = jnp.einsum("gk,knm->gnm", V, Q)
    dq = jnp.einsum("gk,knm->gnm", dV, Q)

    dQ = Q[1:] * powers[1:, None, None]

    def first(mask):
        has = jnp.any(mask, axis=0)
        k = jnp.argmax(mask, axis=0)
        return has, sg[k], sg[k + 1]

    # a plain sign change
    has1, a, b = first((q[:-1] >= 0) & (q[1:] < 0) & active)
    root = jnp.where(has1, _refine(Q, a, b), jnp.inf)
    # a dip: q >= 0 at both ends, falling then rising, tangents meeting below 0
    h = 1.0 / GRID
    slope_gap = dq[:-1] - dq[1:]
    x = (q[1:] - q[:-1] - dq[1:] * h) / jnp.where(slope_gap < 0, slope_gap, -1.0)
    low = q[:-1] + dq[:-1] * jnp.clip(x, 0.0, h)
    dip = ((q[:-1] >= 0) & (q[1:] >= 0) & (dq[:-1] < 0) & (dq[1:] > 0) & (low < 0)
           & active)

    def dips():
        has2, a2, b2 = first(dip)
        s_min = _refine(-dQ, a2, b2)  # where q' turns from < 0 to > 0
        below = has2 & (_horner(Q, s_min) < 0)
        return jnp.minimum(root, jnp.where(below, _refine(Q, a2, s_min), jnp.inf))

    return jax.lax.cond(jnp.any(dip), dips, lambda: root)


class _Setup:
    """What a kink-aware solve of ``problem`` needs besides its state (built at trace
    time, identically by :func:`kink_init`, :func:`kink_advance` and :func:`kink_finish`)."""

    def __init__(self, dyn, problem):
        self.problem = problem
        self.pat = _Pattern(problem.objective)
        self.solver = dyn.make_solver()
        self.ctrl = dyn.make_controller()
        self.term = diffrax.ODETerm(self.pat.vector_field)
        self.deg = _DEGREE.get(type(self.solver), 7)
        stages = len(self.solver.tableau.c) + 1
        self.fsal = bool(getattr(self.solver.tableau, "fsal", False))
        self.evals_per_step = stages - 1 if self.fsal else stages
        self.err_order = self.solver.error_order(self.term)
        self.dtype = dtype = jnp.result_type(float)
        self.t1 = jnp.asarray(problem.t1, dtype)
        self.ts = jnp.asarray(problem.grid, dtype)
        self.cap = stops.loss_cap(problem)
        # the samples that give each z_ij(t) as a polynomial of degree deg on the step
        self.s_pts = jnp.linspace(0.0, 1.0, self.deg + 1, dtype=dtype)
        self.vinv = jnp.linalg.inv(self.s_pts[:, None] ** jnp.arange(self.deg + 1, dtype=dtype))

    def do_saves(self, carry, t_a, t_b, y_b, interp):
        """Record the save points in ``(t_a, t_b]`` (``t_a = -inf``: from the start);
        ``carry = (saves, obs, snaps)``."""
        ts, K, problem = self.ts, self.ts.shape[0], self.problem

        def cond(c):
            i = c[0]
            return (i < K) & (ts[jnp.minimum(i, K - 1)] <= t_b)

        def body(c):
            i, ob, pb = c
            ti = ts[i]
            y = jax.tree.map(lambda a, b: jnp.where(ti >= t_b, b, a),
                             interp(jnp.clip(ti, t_a, t_b)), y_b)
            ob = record(ob, i, problem.observe(y))
            if problem.save_params:
                pb = record(pb, i, y)
            return i + 1, ob, pb

        return jax.lax.while_loop(cond, body, carry)


def kink_init(dyn, problem, params0) -> dict:
    """The state of a kink-aware solve at ``t = 0`` (the saves at ``t <= 0`` recorded)."""
    check_kinks(problem.objective.net)
    k = _Setup(dyn, problem)
    pat, dtype = k.pat, k.dtype
    t0 = jnp.zeros((), dtype)
    z0 = pat.z(params0)
    modes0 = pat.modes(jnp.where(z0 > 0, _ON, _OFF))
    dt0 = None if dyn.dt0 is None else jnp.asarray(dyn.dt0, dtype)
    t_next, cstate = k.ctrl.init(k.term, t0, k.t1, params0, dt0, modes0, k.solver.func,
                                 k.err_order)
    sstate = k.solver.init(k.term, t0, t_next, params0, modes0)
    obs, snaps = blank_saves(problem, params0)
    i, obs, snaps = k.do_saves((jnp.zeros((), jnp.int32), obs, snaps), -jnp.inf, t0, params0,
                               lambda t: params0)
    count0 = jnp.zeros((), jnp.int32)
    return dict(t=t0, y=params0, modes=modes0, h=t_next - t0, sstate=sstate, cstate=cstate,
                jump=jnp.asarray(False), saves=i, obs=obs, snaps=snaps,
                status=stops.status_at(problem, params0, k.cap), steps=count0,
                rejected=count0, switches=count0, slides=count0,
                # FSAL's first stage, and the two of the automatic initial step
                evals=count0 + (1 if k.fsal else 0) + (2 if dt0 is None else 0))


def kink_advance(dyn, problem, state, until) -> dict:
    """Integrate until the step that reaches save ``until - 1`` (``t1`` when ``until`` is
    the number of saves), or a stop."""
    k = _Setup(dyn, problem)
    solver, term, ctrl, err_order, t1 = k.solver, k.term, k.ctrl, k.err_order, k.t1
    s_pts, vinv, pat, dtype, fsal, evals_per_step = (k.s_pts, k.vinv, k.pat, k.dtype, k.fsal,
                                                     k.evals_per_step)
    S = k.ts.shape[0]
    target = jnp.where(until < S, k.ts[jnp.clip(until - 1, 0, S - 1)], jnp.inf)

    def cond(c):
        return (c["t"] < t1) & (c["status"] == _status.COMPLETED) & (c["t"] <= target)

    def body(c):
        t, y, modes = c["t"], c["y"], c["modes"]
        mode = modes.mode
        tn = jnp.minimum(t + c["h"], t1)
        y1, yerr, dense, sstate1, res = solver.step(term, t, tn, y, modes, c["sstate"],
                                                    c["jump"])
        keep, nt0, nt1, _, cstate1, _ = ctrl.adapt_step_size(t, tn, y, y1, modes, yerr,
                                                             err_order, c["cstate"])
        keep = keep & (res == diffrax.RESULTS.successful)
        interp = solver.interpolation_cls(t0=t, t1=tn, **dense)
        hstep = tn - t

        def at(s):
            return interp.evaluate(t + s * hstep)

        # the state at the deg + 1 sample points (ends exact, interior from the dense output)
        inner = jax.vmap(at)(s_pts[1:-1])
        ys = jax.tree.map(lambda a, b, c_: jnp.concatenate([a[None], b, c_[None]]), y, inner, y1)
        sliding = mode == _SLIDE
        sign = jnp.where(mode == _ON, 1.0, -1.0).astype(dtype)
        Z = jax.vmap(pat.z)(ys) * sign  # positive on the pair's own side
        # rounding level of z_ij = w_j.x_i + b_j near 0: a few ulps of |w_j| |x_i| + |b_j|
        noise = _ULPS * jnp.finfo(dtype).eps * pat.z_scale(y)
        root = _first_root(jnp.einsum("kj,jnm->knm", vinv, Z), ~sliding, noise)

        # sliding pairs: their slope leaves [s-, s+] (alpha < 0: off side, > 1: on side)
        def exits():
            A = jax.vmap(pat.alpha, in_axes=(0, None))(ys, modes)
            coef = jnp.einsum("kj,jnm->knm", vinv, A)
            lo = _first_root(coef, sliding, _ULPS * jnp.finfo(dtype).eps)
            hi = _first_root(-coef.at[0].add(-1.0), sliding, _ULPS * jnp.finfo(dtype).eps)
            return lo, hi

        inf = jnp.full_like(root, jnp.inf)
        ex_lo, ex_hi = jax.lax.cond(jnp.any(sliding), exits, lambda: (inf, inf))
        first = jnp.minimum(root, jnp.minimum(ex_lo, ex_hi))
        s_ev = jnp.min(first)
        event = keep & jnp.isfinite(s_ev)
        # pairs switching together (e.g. duplicated neurons) switch in one event
        tie = 64 * jnp.finfo(dtype).eps
        hit = event & (first <= s_ev + tie)
        t_ev = jnp.where(event, t + s_ev * hstep, tn)
        y_ev = jax.tree.map(lambda a, b: jnp.where(event, a, b), at(s_ev), y1)
        new_mode = jnp.where(hit & (root <= s_ev + tie), 1 - mode, mode)
        new_mode = jnp.where(hit & (ex_lo <= s_ev + tie), _OFF, new_mode)
        new_mode = jnp.where(hit & (ex_hi <= s_ev + tie), _ON, new_mode).astype(jnp.int8)

        # a pair that switched and whose new side's flow pushes it straight back slides
        def transversal():
            F = pat.vector_field(t_ev, y_ev, pat.modes(new_mode))
            zdot = jax.jvp(pat.z, (y_ev,), (F,))[1]
            back = hit & (root <= s_ev + tie) & (jnp.where(new_mode == _ON, zdot, -zdot) < 0)
            return (jnp.where(back, _SLIDE, new_mode).astype(jnp.int8),
                    jnp.sum(back, dtype=jnp.int32))

        switched = jnp.any(hit & (root <= s_ev + tie))
        new_mode, n_slide = jax.lax.cond(
            switched, transversal,
            lambda: (new_mode, jnp.zeros((), jnp.int32)))
        t_new = jnp.where(keep, t_ev, t)
        y_new = jax.tree.map(lambda a, b: jnp.where(keep, a, b), y_ev, y)
        saves = (c["saves"], c["obs"], c["snaps"])
        saves = jax.lax.cond(keep, lambda: k.do_saves(saves, t, t_new, y_new, interp.evaluate),
                             lambda: saves)
        status = jnp.where(keep, stops.status_at(problem, y_new, k.cap), _status.COMPLETED)
        # more pairs held on one neuron's kink than independent constraints fit: a neuron
        # whose (w_j, b_j) is pinned to 0 by degenerate data; not integrated, so fail loudly
        crowded = jnp.any(jnp.sum(new_mode == _SLIDE, axis=0) > pat.k)
        status = jnp.where(keep & crowded & (status == _status.COMPLETED),
                           _status.SOLVER_FAILED, status)
        h_next = nt1 - nt0
        bad = ~(h_next > 10 * jnp.finfo(dtype).eps * jnp.maximum(jnp.abs(t), 1.0))
        status = jnp.where(bad & (status == _status.COMPLETED), _status.SOLVER_FAILED, status)
        status = jnp.where((c["steps"] + 1 >= dyn.max_steps) & (t_new < t1)
                           & (status == _status.COMPLETED), _status.MAX_STEPS, status)
        return dict(
            t=t_new, y=y_new, h=h_next,
            modes=jax.lax.cond(keep & event, lambda: pat.modes(new_mode), lambda: modes),
            sstate=jax.tree.map(lambda a, b: jnp.where(keep, a, b), sstate1, c["sstate"]),
            cstate=cstate1, jump=jnp.where(keep, event, c["jump"]), saves=saves[0],
            obs=saves[1], snaps=saves[2], status=status.astype(jnp.int32), steps=c["steps"] + 1,
            rejected=c["rejected"] + (~keep), switches=c["switches"] + event,
            slides=c["slides"] + n_slide.astype(jnp.int32),
            # + the first stage renewed after a switch, + the check of a switch's new side
            evals=c["evals"] + evals_per_step + event * (1 if fsal else 0) + switched,
            last=jax.tree.map(lambda a, b: jnp.where(keep, a, b), (t, tn, dense), c["last"]))

    # the last accepted step (start, end of its dense output, dense output), where a stop
    # is located
    dense0 = jax.eval_shape(lambda: solver.step(term, state["t"], t1, state["y"],
                                                state["modes"], state["sstate"],
                                                state["jump"])[2])
    last = (state["t"], state["t"], jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), dense0))
    out = jax.lax.while_loop(cond, body, state | {"last": last})
    t_a, tn, dense = out.pop("last")
    status, t_end, y_end = out["status"], out["t"], out["y"]
    stopped = ((status == _status.STOP_LOSS) | (status == _status.STOP_GRAD)
               | (status == _status.DIVERGED)) & (t_a < t_end)

    def locate():
        interp = solver.interpolation_cls(t0=t_a, t1=tn, **dense)
        c = stops.crossing(problem, status, k.cap)
        t_stop = stops.locate(lambda t: c(interp.evaluate(t)), t_a, t_end)
        return t_stop, jax.lax.cond(t_stop < t_end, lambda: interp.evaluate(t_stop),
                                    lambda: y_end)

    t_stop, y_stop = jax.lax.cond(stopped, locate, lambda: (t_end, y_end))
    return out | {"t": t_stop, "y": y_stop}


def kink_finish(dyn, problem, state) -> dict:
    """The output of a kink-aware solve (as :meth:`gflow.GradientFlow.finish`), with the
    extra statistics ``num_switches`` (located sign changes of pre-activations),
    ``num_slides`` (pairs that entered a sliding mode) and ``grad_evals``."""
    ts = jnp.asarray(problem.grid, jnp.result_type(float))
    y_final, t_stop = state["y"], state["t"]
    obs = jax.tree.map(lambda x: jnp.where(bcast(ts <= t_stop, x), x, jnp.nan), state["obs"])
    completed = state["status"] == _status.COMPLETED
    return {
        "obs": obs, "params": state["snaps"], "t_stop": t_stop, "params_final": y_final,
        "obs_final": at_stop(problem.observer, y_final, problem.ctx, completed),
        "status": state["status"],
        "stats": {"num_steps": state["steps"],
                  "num_accepted_steps": state["steps"] - state["rejected"],
                  "num_rejected_steps": state["rejected"], "num_switches": state["switches"],
                  "num_slides": state["slides"], "grad_evals": state["evals"]},
    }
