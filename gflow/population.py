"""Teacher-student two-layer nets with Gaussian inputs: the exact population objective.

Setting of Zhou, Ge, Jin, "A Local Convergence Theory for Mildly Over-Parameterized Two-Layer
Neural Network", COLT 2021 (arXiv 2102.02410): teacher ``f*(x) = sum_i a*_i sigma(w*_i . x)``
with ``k`` neurons, ``x ~ N(0, I_d)``, student ``f(x) = c_m sum_j a_j sigma(w_j . x)`` with
``m >= k`` neurons, both layers trained on the square loss ``L = E[(f - f*)^2] / 2``.

With the Gaussian kernels of :mod:`gflow.kernels` (``K(u, v) = E[sigma(u.x) sigma(v.x)]``,
sigma in {relu, abs}), ``L = (a K(W, W) a - 2 a K(W, W*) b + b K(W*, W*) b) / 2`` with
``a = c_m a``, ``b = c* a*`` -- exact, with exact, finite gradients even for parallel neurons
(the duplicates that over-parameterized students form).

- :class:`Population`: the data source "x ~ N(0, I_d) labelled by a teacher"; pass it to
  :func:`gflow.simulate` in place of a :class:`gflow.Dataset`. Its objective
  (:class:`PopulationObjective`) *is* ``L(theta)`` and its gradient the exact population
  gradient -- gradient flow with no sampling noise and no activation-pattern kinks (the
  closed form is C^1), so adaptive solvers take large steps.
- :func:`loss`, :func:`nearest_teacher`, :func:`cluster_weights`, :func:`observables`
  (in-solve observables of a teacher-student run).
- :func:`separated_teacher`: ``k`` unit teacher directions at one common angle ``Delta``;
  :func:`near_teacher_at_loss`: the local init of :func:`gflow.init.near_teacher` scaled
  so that it starts at a given population loss (runs of several widths from one loss).
- :func:`level_crossings`: when a saved gradient-flow loss crosses given levels, and the
  values of other observables there (rates compared at matched loss).
- The ``lojasiewicz_ratio`` observable ``|grad L|^2 / L`` (of any objective) is in
  :data:`OBSERVABLES`.

Data with a finite Gaussian sample: :func:`gflow.data.gaussian_teacher`; a student near the
teacher: :func:`gflow.init.near_teacher`.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from . import kernels
from .data import AbstractData
from .init import near_teacher
from .losses import get_loss, squared
from .nets import TwoLayer, TwoLayerParams
from .objective import ExpectationObjective
from .observe import Observable

__all__ = [
    "OBSERVABLES",
    "Population",
    "PopulationObjective",
    "cluster_weights",
    "level_crossings",
    "level_table",
    "loss",
    "near_teacher_at_loss",
    "nearest_teacher",
    "observables",
    "separated_teacher",
]


def _check_pair(net, params, tnet, tparams):
    for nt, pr, name in ((net, params, "net"), (tnet, tparams, "teacher net")):
        if not isinstance(nt, TwoLayer):
            raise ValueError(f"{name} must be a gflow.TwoLayer, got {type(nt).__name__}.")
        if nt.bias or (pr is not None and pr.b is not None):
            raise ValueError(f"{name} must have bias=False for the closed-form population loss.")
        if nt.activation.name not in kernels.ACTIVATIONS:
            raise ValueError(f"{name} has activation {nt.activation.name!r}; the closed form "
                             f"exists for {list(kernels.ACTIVATIONS)}.")
    if net.activation.name != tnet.activation.name:
        raise ValueError(f"student activation {net.activation.name!r} differs from the "
                         f"teacher's {tnet.activation.name!r}.")


def loss(net: TwoLayer, params: TwoLayerParams, teacher_net: TwoLayer,
         teacher_params: TwoLayerParams) -> Float[Array, ""]:
    """Exact population loss ``E_{x ~ N(0,I)}[(f(x) - f*(x))^2] / 2`` of a student against a
    teacher (both :class:`~gflow.TwoLayer`, no bias, same activation in {relu, abs}; each with
    its own output scale ``c_m``). Differentiable in ``params`` (exact gradient via ``jax.grad``).
    """
    _check_pair(net, params, teacher_net, teacher_params)
    act = net.activation.name
    a = net.prefactor * params.a
    b = teacher_net.prefactor * teacher_params.a
    W, Ws = params.W, teacher_params.W
    K = lambda U, V: kernels.pairwise(kernels.gaussian, U, V, activation=act)  # noqa: E731
    ss = a @ K(W, W) @ a
    st = a @ K(W, Ws) @ b
    tt = b @ K(Ws, Ws) @ b
    return 0.5 * (ss - 2.0 * st + tt)


class PopulationObjective(ExpectationObjective):
    """The exact population loss :func:`loss` of the student ``net`` against a teacher, as an
    objective (:class:`gflow.objective.ExpectationObjective`): an expectation over
    ``x ~ N(0, I_d)``, so it has no finite sample (``n == 0``, ``y`` of shape (0,)); reading
    ``X`` raises. Built by :meth:`Population.objective`."""

    net: TwoLayer
    teacher_net: TwoLayer
    teacher_params: TwoLayerParams

    def __check_init__(self):
        _check_pair(self.net, None, self.teacher_net, self.teacher_params)

    @property
    def X(self):
        raise ValueError(
            "the population objective has no training inputs X: it is an expectation over "
            "x ~ N(0, I_d). GradientFlow(kinks=True) (a two-layer net on a dataset), "
            "simulate_ensemble and observables of the training set need a gflow.Dataset; "
            "observe the net at chosen inputs with probes= and the 'output' observable.")

    @property
    def y(self) -> Float[Array, " 0"]:
        return jnp.zeros((0,), self.teacher_params.W.dtype)

    @property
    def loss_fn(self):
        """The per-sample loss whose expectation this is: the squared loss."""
        return squared

    def loss(self, params) -> Float[Array, ""]:
        return loss(self.net, params, self.teacher_net, self.teacher_params)



class Population(AbstractData):
    """Inputs ``x ~ N(0, I_d)`` labelled by a two-layer teacher, as a data source for
    :func:`gflow.simulate`: the objective is the exact population loss
    (:class:`PopulationObjective`, ``loss="squared"`` only).

    Arguments:
        teacher_net: a :class:`~gflow.TwoLayer` without bias, activation relu or abs.
        teacher_params: its :class:`~gflow.TwoLayerParams` (``d`` = their input dimension).
    """

    teacher_net: TwoLayer
    teacher_params: TwoLayerParams
    X_test: None = None
    y_test: None = None

    def __init__(self, teacher_net: TwoLayer, teacher_params: TwoLayerParams):
        self.teacher_net = teacher_net
        self.teacher_params = TwoLayerParams(
            W=jnp.asarray(teacher_params.W), b=teacher_params.b, a=jnp.asarray(teacher_params.a))
        self.X_test = self.y_test = None

    def __check_init__(self):
        _check_pair(self.teacher_net, None, self.teacher_net, self.teacher_params)
        self.teacher_net.check_params(self.teacher_params)

    @classmethod
    def of(cls, data) -> Population:
        """The population of a dataset whose ``meta["teacher"]`` is ``(net, params)``
        (e.g. :func:`gflow.data.gaussian_teacher`)."""
        return cls(*data.meta["teacher"])

    @property
    def d(self) -> int:
        return int(self.teacher_params.W.shape[-1])

    def is_binary(self) -> bool:
        return False

    def objective(self, net, loss) -> PopulationObjective:
        if get_loss(loss) is not squared:
            raise ValueError(f"the population objective is the squared loss; got loss={loss!r}. "
                             "Use loss='squared' (or a gflow.Dataset for other losses).")
        return PopulationObjective(net, self.teacher_net, self.teacher_params)


def nearest_teacher(W: Float[Array, "m d"], W_star: Float[Array, "k d"], *,
                    symmetric: bool = False) -> tuple[Array, Array]:
    """For each student neuron, its closest teacher neuron by angle and that angle (radians,
    :func:`gflow.kernels.angle`).

    ``symmetric=True`` treats ``w`` and ``-w`` as the same direction (for ``abs``, where
    ``|w.x| = |-w.x|``), so angles lie in ``[0, pi/2]``.

    Returns:
        ``(index (m,), angle (m,))``.
    """
    ang = kernels.pairwise(kernels.angle, W, W_star)
    if symmetric:
        ang = jnp.minimum(ang, jnp.pi - ang)
    idx = jnp.argmin(ang, axis=1)
    return idx, jnp.take_along_axis(ang, idx[:, None], axis=1)[:, 0]


def cluster_weights(net: TwoLayer, params: TwoLayerParams, teacher_params: TwoLayerParams, *,
                    symmetric: bool = False) -> Float[Array, " k"]:
    """Total effective outer weight per teacher cluster: ``sum_{j -> i} c_m a_j |w_j|`` over the
    student neurons whose nearest teacher is ``i`` (compare with ``a*_i |w*_i|`` times the
    teacher's ``c_m``). For ``symmetric`` (abs) neurons are matched up to sign."""
    idx, _ = nearest_teacher(params.W, teacher_params.W, symmetric=symmetric)
    contrib = net.prefactor * params.a * jnp.linalg.norm(params.W, axis=1)
    k = teacher_params.W.shape[0]
    return jnp.zeros((k,), contrib.dtype).at[idx].add(contrib)


def observables(teacher_net: TwoLayer | None = None,
                teacher_params: TwoLayerParams | None = None) -> dict:
    """In-solve observables for a teacher-student run, to pass as ``simulate(observe=...)``:

    - ``population_loss``: exact :func:`loss` against the teacher;
    - ``teacher_angle``: per student neuron, angle (degrees) to its nearest teacher, (m,);
    - ``teacher_index``: per student neuron, index of that teacher, (m,);
    - ``cluster_weight``: :func:`cluster_weights`, (k,).

    With a teacher given, it is captured in the returned functions (any data source; a fresh
    call builds new functions, so reuse one dict across runs to avoid recompiling). Without
    one, each observable reads the teacher of the run's :class:`Population` objective, so one
    dict serves every teacher of the same shape in one compiled program.
    """
    if (teacher_net is None) != (teacher_params is None):
        raise ValueError("give both teacher_net and teacher_params, or neither (then the "
                         "teacher is the one of the run's gflow.population.Population).")

    def teacher(c):
        if teacher_net is not None:
            return teacher_net, TwoLayerParams(W=jnp.asarray(teacher_params.W), b=None,
                                               a=jnp.asarray(teacher_params.a))
        obj = c.objective
        if not isinstance(getattr(obj, "teacher_params", None), TwoLayerParams):
            raise ValueError("population.observables() without a teacher needs a "
                             "gflow.population.Population as the data; pass "
                             "observables(teacher_net, teacher_params) for other data.")
        return obj.teacher_net, obj.teacher_params

    def nearest(p, c):
        tnet, tp = teacher(c)
        return nearest_teacher(p.W, tp.W, symmetric=tnet.activation.name == "abs")

    def population_loss(p, c):
        return loss(c.objective.net, p, *teacher(c))

    def teacher_angle(p, c):
        return jnp.degrees(nearest(p, c)[1])

    def teacher_index(p, c):
        # float, so that saves after an early stop can hold NaN
        return nearest(p, c)[0].astype(p.W.dtype)

    def cluster_weight(p, c):
        tnet, tp = teacher(c)
        return cluster_weights(c.objective.net, p, tp, symmetric=tnet.activation.name == "abs")

    return {
        "population_loss": Observable(population_loss),
        "teacher_angle": Observable(teacher_angle, dims=("neuron",)),
        "teacher_index": Observable(teacher_index, dims=("neuron",)),
        "cluster_weight": Observable(cluster_weight, dims=("teacher",)),
    }


def separated_teacher(key, d: int, k: int, separation_deg: float, *, activation: str = "abs",
                      outer: str = "positive") -> tuple[TwoLayer, TwoLayerParams]:
    """A teacher whose ``k`` unit directions are pairwise at the angle ``separation_deg``
    (``Delta``, in (0, 90]): ``w*_i = Q(sqrt(1 - c) e_i + sqrt(c) e_{k+1})`` with
    ``c = cos Delta`` and ``Q`` a random rotation (from ``key``), so ``w*_i . w*_j = c`` for
    ``i != j`` (needs ``d >= k + 1`` unless ``Delta = 90``). Every pair is at ``Delta``, also up
    to sign (``Delta <= 90``), the separation that matters for ``abs``. ``outer``: ``a*_i = 1``
    (``"positive"``) or alternating ``+1, -1`` (``"signed"``).

    Returns:
        ``(net, params)``: a :class:`~gflow.TwoLayer` of width ``k`` (``scaling="standard"``,
        no bias) and its parameters, ``W`` of shape ``(k, d)``.
    """
    if not (isinstance(separation_deg, int | float) and 0 < separation_deg <= 90):
        raise ValueError(f"separation_deg must be an angle in (0, 90] degrees, got "
                         f"{separation_deg!r}.")
    if k < 1 or d < k + (separation_deg < 90):
        raise ValueError(f"separated_teacher needs k >= 1 and d >= k + 1 (d >= k at 90 "
                         f"degrees), got k={k}, d={d}.")
    if outer not in ("positive", "signed"):
        raise ValueError(f"outer={outer!r}; valid values are ['positive', 'signed'].")
    if activation not in kernels.ACTIVATIONS:
        raise ValueError(f"activation={activation!r} has no closed-form population loss; valid "
                         f"values are {list(kernels.ACTIVATIONS)}.")
    dt = jnp.result_type(float)
    c = math.cos(math.radians(separation_deg)) if separation_deg < 90 else 0.0
    E = np.zeros((k, d))
    E[:, :k] = math.sqrt(1.0 - c) * np.eye(k)
    if c > 0:
        E[:, k] = math.sqrt(c)
    Q = jnp.linalg.qr(jax.random.normal(key, (d, d), dt))[0]
    a = jnp.where(jnp.arange(k) % 2 == 0, 1.0, -1.0 if outer == "signed" else 1.0).astype(dt)
    net = TwoLayer(k, activation, scaling="standard", bias=False)
    return net, TwoLayerParams(W=jnp.asarray(E, dt) @ Q.T, b=None, a=a)


_compiled_loss = eqx.filter_jit(loss)  # one program per shape for the root search's evaluations


def near_teacher_at_loss(key, net: TwoLayer, teacher_net: TwoLayer,
                         teacher_params: TwoLayerParams, loss0: float, *,
                         angle_deg: float = 10.0, weight_noise: float = 0.1
                         ) -> tuple[TwoLayerParams, float]:
    """The local init :func:`gflow.init.near_teacher` with its perturbation scaled to start at
    population loss ``loss0``: with the draws of ``key`` fixed, rotation ``s * angle_deg`` and
    weight noise ``s * weight_noise``, ``s`` found by Brent's method
    (:func:`scipy.optimize.brentq`) on ``L(s) = loss0``. At ``s = 0`` the student is the
    teacher split into duplicates (``L = 0``); the largest ``s`` tried keeps the rotation under
    89.9 degrees. Every neuron stays balanced (``|a_j| = |w_j|``).

    Returns:
        ``(params, s)``; ``L(params) = loss0`` to rounding of the closed form (``s`` is
        located to machine precision; float32 resolves ``loss0`` only down to about ``1e-6``
        of the teacher's own loss ``E f*^2 / 2``, from cancellation).
    """
    from scipy.optimize import brentq  # here, not at import (slow to import)

    if not (isinstance(loss0, int | float) and loss0 > 0 and math.isfinite(loss0)):
        raise ValueError(f"loss0 must be a positive number, got {loss0!r}.")

    def params(s):
        return near_teacher(key, net, teacher_net, teacher_params, angle_deg=s * angle_deg,
                            weight_noise=s * weight_noise)

    def excess(s):
        return float(_compiled_loss(net, params(s), teacher_net, teacher_params)) / loss0 - 1.0

    s_max = 89.9 / angle_deg if angle_deg > 0 else 1e3
    s_hi = min(1.0, s_max)
    while excess(s_hi) < 0:
        if s_hi >= s_max:
            raise ValueError(f"loss0={loss0:g} is out of reach of this init: rotating by up to "
                             f"89.9 degrees with weight_noise={weight_noise * s_hi:g} gives "
                             f"L={(excess(s_hi) + 1) * loss0:.3g}; lower loss0.")
        s_hi = min(2.0 * s_hi, s_max)
    s = brentq(excess, 0.0, s_hi, xtol=1e-15, rtol=4 * np.finfo(float).eps)
    return params(s), float(s)


def level_crossings(t, loss_values, ratio, levels, values=None) -> tuple[np.ndarray, dict]:
    """When a gradient-flow loss, saved at times ``t`` with its Lojasiewicz ratio
    ``ratio = |grad L|^2 / L = -d log L / dt``, first falls to each of ``levels``.

    Read off the cubic Hermite interpolant of ``log L(t)`` with the exact slopes ``-ratio``
    at the nodes (:class:`scipy.interpolate.CubicHermiteSpline`; its error is fourth order in
    the node spacing); ``values`` (``{name: (n,)}``, positive, e.g. the local rate or the
    largest angle) are interpolated linearly in ``log`` against ``log L`` between the nodes.

    Arguments:
        t: ``(n,)`` increasing times; loss_values, ratio: ``(n,)`` positive, finite (drop
            the saves after a stop first; a located stop may be the last node).
        levels: ``(l,)`` loss levels.

    Returns:
        ``(times (l,), {name: (l,)})``, NaN where a level is not reached.
    """
    from scipy.interpolate import CubicHermiteSpline

    t = np.asarray(t, float)
    y = np.log(np.asarray(loss_values, float))
    spl = CubicHermiteSpline(t, y, -np.asarray(ratio, float))
    lv = np.log(np.asarray(levels, float))
    times = np.full(lv.shape, np.nan)
    at = {name: np.full(lv.shape, np.nan) for name in (values or {})}
    for j, level in enumerate(lv):
        roots = spl.solve(level, extrapolate=False)
        if y.min() <= level and roots.size:
            times[j] = roots.min()
            for name, v in (values or {}).items():
                at[name][j] = np.exp(np.interp(level, y[::-1], np.log(np.asarray(v)[::-1])))
    return times, at


def _lojasiewicz_ratio(p, c):
    val, g = c.objective.value_and_grad(p)
    return sum(jnp.sum(x**2) for x in jax.tree.leaves(g)) / val


#: observables of this module, registered in :mod:`gflow.observe` by ``import gflow``
OBSERVABLES = {"lojasiewicz_ratio": Observable(_lojasiewicz_ratio)}


def level_table(ds, levels) -> dict:
    """``{time, rate, angle, cluster}`` of each run of a runs dataset (``run`` dim; the
    variables of :func:`observables`, ``lojasiewicz_ratio`` and ``teacher_weight``) at each
    level ``10^-k``, each ``(run, level)``: time from the start, ``|grad L|^2/L``, largest
    angle (degrees) and largest cluster weight error there; NaN where not reached. A stopped
    run's last save is its located stop, at the stop level to the solver's tolerance (taken
    as the level)."""
    lv = 10.0 ** -np.asarray(levels, float)
    out = {key: np.full((ds.sizes["run"], len(lv)), np.nan)
           for key in ("time", "rate", "angle", "cluster")}
    for i, r in enumerate(ds.run.values):
        sub = ds.sel(run=r)
        t, L, q = (np.asarray(sub[v].values, float) for v in ("t", "loss", "lojasiewicz_ratio"))
        ok = np.isfinite(L)
        ang = np.nanmax(np.asarray(sub["teacher_angle"].values, float)[ok], axis=-1)
        cw = np.max(np.abs(np.asarray(sub["cluster_weight"].values, float)[ok]
                           - sub["teacher_weight"].values), axis=-1)
        t, L, q = t[ok], L[ok], q[ok]
        if str(sub["status"].values) == "stop_loss":
            L[-1] = min(L[-1], lv.min())
        out["time"][i], at = level_crossings(t, L, q, lv, dict(rate=q, angle=ang, cluster=cw))
        for key, v in at.items():
            out[key][i] = v
    return out
