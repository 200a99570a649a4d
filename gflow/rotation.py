"""Low-rotation tools: neuron rotation angles, movement in units of sqrt(m), normalized
margins, the norm-only parameterization and its maximal margin.

Setting: Matus Telgarsky, "Feature selection and low test error in shallow low-rotation ReLU
networks", ICLR 2023 (arXiv 2208.02789). Two-layer ReLU nets
``f(x) = (1/sqrt m) sum_j a_j relu(w_j . x)``, ``w_j(0) ~ N(0, I_d)``, ``a_j ~ Unif{+-1}``,
``|x| <= 1``, ``y in {-1, +1}``, logistic loss. Three regimes where weights rotate little:
near initialization (weights move ``O(sqrt m)``), neural collapse (well-separated groups),
and norm-only training ``w_j = r_j u_j`` with ``u_j = w_j(0)/|w_j(0)|`` frozen.

- :func:`rotation_angles`: ``angle(w_j(t), w_j(0))`` per neuron (:func:`gflow.kernels.angle`:
  Kahan's ``2 atan2(|u - v|, |u + v|)`` for unit ``u, v``, accurate near 0, unlike ``arccos``).
- :func:`normalized_margin`: ``min_i y_i f(x_i) / |theta|^L`` over the trained parameters,
  ``L`` the homogeneity degree (1: inner layer only, 2: both layers).
- :class:`NormOnlyTwoLayer`: the norm-only net with parameters ``(r, a)``; trained by
  :func:`gflow.simulate` like :class:`gflow.TwoLayer` (init: :func:`gflow.init.norm_only`).
- :func:`max_margin_fixed_features`: ``max_{|c|_1 <= 1} min_i y_i (Phi c)_i`` by a linear
  program (scipy HiGHS), with a dual certificate. For the norm-only net with both layers
  trained, ``|r|^2 + |a|^2 >= 2 sum_j |r_j a_j|`` (AM-GM, equality when ``|r_j| = |a_j|``),
  so the globally maximal 2-homogeneous normalized margin over the fixed directions is
  ``LP / (2 sqrt m)`` with ``Phi_ij = relu(u_j . x_i)`` (:func:`norm_only_max_margin`).
- Data of the regimes: :func:`gflow.data.sparse_parity` (the paper's running example, NTK
  margin ``Theta(1/d)``) and :func:`gflow.data.groups` (the neural-collapse regime).

Observables (:data:`OBSERVABLES`, registered in :mod:`gflow.observe` by ``import gflow``):
``rotation_deg`` (per neuron, degrees), ``max_rotation_deg``, ``rotation_weighted_deg``
(mean weighted by ``|a_j|``), ``movement_over_sqrt_m`` (``|W_t - W_0|_F / sqrt m``),
``margin_homogeneous`` (:func:`normalized_margin`), ``margin_per_movement``
(``min_i y_i f(x_i) / |W_t - W_0|``, the quantity the NTK margin bounds in the linearized
regime: a linear predictor moved by ``R`` in the NTK feature space has margin at most
``gamma_ntk R``).
"""

from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from . import kernels
from .nets import AbstractNet
from .observe import Observable

__all__ = [
    "OBSERVABLES",
    "LogRateFit",
    "approach",
    "approach_verdict",
    "NormOnlyParams",
    "NormOnlyTwoLayer",
    "homogeneity",
    "inner_weights",
    "log_rate_fit",
    "log_rate_limits",
    "max_margin_fixed_features",
    "movement_over_sqrt_m",
    "near_init_radius",
    "radius_exit_time",
    "norm_only_max_margin",
    "normalized_margin",
    "rotation_angles",
]


# -- the norm-only net --------------------------------------------------------------------


class NormOnlyParams(eqx.Module):
    """Parameters of :class:`NormOnlyTwoLayer`: norms ``r`` (m,) and outer weights ``a`` (m,)."""

    r: Float[Array, " m"]
    a: Float[Array, " m"]


class NormOnlyTwoLayer(AbstractNet):
    """Norm-only two-layer ReLU net ``f(x) = (1/sqrt m) sum_j a_j relu(r_j u_j . x)``.

    The unit directions ``U`` (m, d) are fixed (not parameters); only the norms ``r`` and,
    with ``train_outer=True``, the outer weights ``a`` are trained. With ``r_j > 0`` the
    inner weight ``w_j = r_j u_j`` never rotates. Gradient flow conserves ``r_j^2 - a_j^2``
    (2-homogeneity per neuron), so a neuron with ``r_j(0) > |a_j(0)|`` keeps ``r_j > 0``
    forever; one with ``r_j(0) < |a_j(0)|`` may reach ``r_j < 0``, i.e. ``w_j`` turns to
    ``-u_j`` (a rotation by 180 degrees, reported as such by :func:`rotation_angles`).
    :func:`gflow.init.norm_only` draws a standard init conditioned on ``|w_j(0)| > 1``.

    Arguments:
        U: (m, d) directions; rows are normalized.
        train_outer: whether ``a`` is trained.
    """

    U: Float[Array, "m d"]
    train_outer: bool = eqx.field(static=True)

    def __init__(self, U, train_outer: bool = True):
        U = jnp.asarray(U)
        if U.ndim != 2 or U.shape[0] < 1:
            raise ValueError(f"U must have shape (m, d) with m >= 1, got {U.shape}.")
        norms = jnp.linalg.norm(U, axis=1, keepdims=True)
        if not bool(jnp.all(norms > 0)):
            raise ValueError("U has a zero row: every neuron needs a direction.")
        self.U = U / norms
        self.train_outer = bool(train_outer)

    @classmethod
    def from_params(cls, params, train_outer: bool = True):
        """Norm-only net and its parameters from a :class:`gflow.TwoLayerParams` (no bias):
        ``u_j = w_j/|w_j|``, ``r_j = |w_j|``, ``a`` unchanged; both give the same outputs."""
        if getattr(params, "b", None) is not None:
            raise ValueError("from_params needs params without bias (b=None).")
        r = jnp.linalg.norm(params.W, axis=1)
        return cls(params.W, train_outer), NormOnlyParams(r=r, a=params.a)

    @property
    def width(self) -> int:
        return int(self.U.shape[0])

    @property
    def prefactor(self) -> float:
        return 1.0 / math.sqrt(self.width)

    def inner_weights(self, params: NormOnlyParams) -> Float[Array, "m d"]:
        """``w_j = r_j u_j``."""
        return params.r[:, None] * self.U

    def apply(self, params: NormOnlyParams, X: Float[Array, "n d"]) -> Float[Array, " n"]:
        h = jax.nn.relu((X @ self.U.T) * params.r)
        return self.prefactor * (h @ params.a)

    def trainable(self, params: NormOnlyParams):
        return NormOnlyParams(r=True, a=self.train_outer)

    def check_params(self, params, d: int | None = None) -> None:
        if not isinstance(params, NormOnlyParams):
            raise ValueError(f"params must be a NormOnlyParams, got {type(params).__name__}.")
        m = self.width
        for name in ("r", "a"):
            shape = getattr(params, name).shape
            if shape != (m,):
                raise ValueError(f"params.{name} has shape {shape}; expected (width={m},).")
        if d is not None and self.U.shape[1] != d:
            raise ValueError(f"the net's directions have d={self.U.shape[1]} but the data has "
                             f"d={d}.")


# -- observables as functions -------------------------------------------------------------


def inner_weights(net, params) -> Float[Array, "m d"]:
    """Inner weights ``W`` of a two-layer net (``r_j u_j`` for :class:`NormOnlyTwoLayer`)."""
    if hasattr(net, "inner_weights"):
        return net.inner_weights(params)
    return params.W


def _live_width(net):
    """Number of live neurons (ensembles pad with masked neurons)."""
    mask = getattr(net, "mask", None)
    return net.width if mask is None else jnp.sum(mask)


def rotation_angles(W0: Float[Array, "m d"], W: Float[Array, "m d"]) -> Float[Array, " m"]:
    """Angle (radians, in [0, pi]) between ``w_j`` and ``w_j(0)`` per neuron.

    Kahan's formula ``2 atan2(|u - v|, |u + v|)`` on the unit vectors
    (:func:`gflow.kernels.angle`): relative accuracy near 0 (``arccos`` of a cosine near 1
    loses half the digits). A zero row gives 0.
    """
    W0, W = jnp.asarray(W0), jnp.asarray(W)
    live = jnp.any(W0 != 0, axis=-1) & jnp.any(W != 0, axis=-1)
    return jnp.where(live, kernels.angle(W0, W), 0.0)


def movement_over_sqrt_m(W0: Float[Array, "m d"], W: Float[Array, "m d"],
                         width=None) -> Float[Array, ""]:
    """``|W - W0|_F / sqrt(m)``; ``width`` defaults to ``W.shape[0]``."""
    m = W.shape[0] if width is None else width
    return jnp.linalg.norm(W - W0) / jnp.sqrt(m)


def homogeneity(net) -> int:
    """Degree ``L`` with ``f(c theta) = c^L f(theta)`` for the trained parameters of a ReLU
    two-layer net without bias: 1 (inner layer only) or 2 (both layers)."""
    inner = getattr(net, "net", net)  # an ensemble's masked wrapper
    return 2 if inner.train_outer else 1


def _trained_norm_sq(net, params):
    mask = net.trainable(params)
    leaves = jax.tree.leaves(params)
    mleaves = jax.tree.leaves(mask)
    return sum(jnp.sum(jnp.asarray(t, x.dtype) * x**2) for x, t in zip(leaves, mleaves,
                                                                      strict=True))


def normalized_margin(net, params, X: Float[Array, "n d"], y: Float[Array, " n"]
                      ) -> Float[Array, ""]:
    """``min_i y_i f(x_i) / |theta|^L``: ``theta`` the trained parameters, ``L`` =
    :func:`homogeneity` (scale-invariant for a ReLU net without bias). With ``|x| <= 1`` and
    NTK scaling it is at most 1 (``L = 1``) or ``1/(2 sqrt m)`` times an L1 margin (``L = 2``)."""
    L = homogeneity(net)
    sq = _trained_norm_sq(net, params)
    scale = jnp.sqrt(sq) if L == 1 else sq
    return jnp.min(y * net.apply(params, X)) / scale


def near_init_radius(gamma: float, width: int, c: float = 1.0) -> float:
    """The movement scale ``c gamma sqrt(m)`` of Telgarsky's near-initialization regime
    (ICLR 2023, Section 2: weights may move ``O(sqrt m)``, far beyond the NTK's ``O(1)``).

    Why ``gamma sqrt(m)``: moving ``W`` by ``R`` (Frobenius) along the NTK's unit direction
    ``theta_bar`` moves each ``w_j`` by at most ``R / sqrt m``, so a neuron's activation at
    ``x`` can flip only where ``|w_j(0) . x| <= R / sqrt m`` (probability ``O(R / sqrt m)``
    for Gaussian ``w_j(0)``, ``|x| <= 1``); the flips change ``f`` by ``O(R^2 / sqrt m)``,
    below the linear part's margin ``gamma R`` while ``R <= gamma sqrt(m) / c``. ``c``: the
    theorem's absolute constant (default 1: the scale itself).
    """
    if not (isinstance(gamma, int | float) and gamma > 0):
        raise ValueError(f"gamma must be a number > 0 (an NTK margin), got {gamma!r}.")
    if isinstance(width, bool) or not isinstance(width, int | np.integer) or width < 1:
        raise ValueError(f"width must be an integer >= 1, got {width!r}.")
    if not (isinstance(c, int | float) and c > 0):
        raise ValueError(f"c must be a number > 0, got {c!r}.")
    return c * float(gamma) * math.sqrt(int(width))


def radius_exit_time(t, movement, radius) -> np.ndarray:
    """The first save time at which ``movement`` exceeds ``radius`` (NaN where it never does).

    Arguments:
        t: (T,) save times.
        movement: (..., T) e.g. ``movement_over_sqrt_m`` of a sweep.
        radius: scalar or broadcastable to ``movement.shape[:-1]``, in the same units.
    """
    t, mv = np.asarray(t, float), np.asarray(movement, float)
    out = mv > np.asarray(radius, float)[..., None]
    return np.where(out.any(-1), t[np.argmax(out, axis=-1)], np.nan)


def approach_verdict(final, lo, hi, target: float = 1.0) -> dict:
    """A verdict on "the quantity reaches ``target`` (as ``t -> infinity``)" from its values at
    the end of the runs ``final`` and the interval ``[lo, hi]`` of each run's extrapolated
    limit (:func:`log_rate_fit`); arrays of one shape, one entry per run.

    Returns:
        ``{"verdict": "holds" | "does not hold" | "inconclusive", "why": text}``: holds if
        every run ends at or above ``target``; does not hold if every run ends below it with
        its extrapolation's upper end below it too; else inconclusive.
    """
    final, lo, hi = (np.asarray(v, float).ravel() for v in (final, lo, hi))
    ends = f"end values {np.min(final):.3g}..{np.max(final):.3g}"
    lims = f"extrapolated limits' intervals [{np.nanmin(lo):.3g}, {np.nanmax(hi):.3g}]"
    if np.all(final >= target):
        return {"verdict": "holds", "why": f"at or above {target:g} at the end in every run "
                f"({ends})"}
    if np.all(hi < target):
        return {"verdict": "does not hold", "why": f"below {target:g} at the end and the "
                f"log-rate extrapolation's upper end below it in every run ({ends}; {lims})"}
    return {"verdict": "inconclusive", "why": f"below {target:g} at the end in some run "
            f"({ends}); the {lims} reach {target:g}, and the claim is asymptotic"}


def approach(t, values, final=None, target: float = 1.0):
    """Whether a quantity rising at the log rate (e.g. a margin over its maximum) reaches
    ``target``: every row's :func:`log_rate_limits` and the :func:`approach_verdict` on the
    rows' values at the end of their runs (``final``; default the last save).

    Arguments:
        t: (T,) save times.
        values: (..., T) the quantity per run (NaN after a run stopped).
        final: (...) each run's value at its stop.

    Returns:
        ``(limits, verdict)``: (..., 3) ``[limit, lo, hi]`` and the verdict dict.
    """
    values = np.asarray(values, float)
    lim = log_rate_limits(t, values)
    final = values[..., -1] if final is None else final
    return lim, approach_verdict(final, lim[..., 1], lim[..., 2], target)


@dataclasses.dataclass(frozen=True)
class LogRateFit:
    """``margin(t) ~ limit - slope / ln t``, fitted by least squares in ``1 / ln t``.

    Attributes:
        limit: the extrapolated ``t -> infinity`` value; ``[lo, hi]`` its OLS t interval at
            ``confidence`` (infinite with fewer than 3 points).
        lo: lower end of the interval of ``limit``.
        hi: upper end of the interval of ``limit``.
        slope: the coefficient of ``-1 / ln t``.
        confidence: level of the interval.
        t_from: the earliest time used.
        n_points: points fitted.
    """

    limit: float
    lo: float
    hi: float
    slope: float
    confidence: float
    t_from: float
    n_points: int

    def time_to(self, level: float) -> float:
        """The time at which the fitted law reaches ``level``: ``exp(slope / (limit -
        level))``; ``inf`` if ``level >= limit`` (never, on this law)."""
        if level >= self.limit or not self.slope > 0:
            return math.inf if level >= self.limit else 1.0
        return math.exp(min(self.slope / (self.limit - level), 700.0))


def log_rate_fit(t, margin, *, t_from: float | None = None, confidence: float = 0.95
                 ) -> LogRateFit:
    """Extrapolate a normalized margin that rises at the logarithmic rate of the logistic
    loss (``margin(t) = limit - slope / ln t + o(1 / ln t)``, as for gradient flow on
    separable data) to ``t -> infinity``: OLS of ``margin`` on ``1 / ln t`` over the
    finite points with ``t >= t_from`` (default: the later half of the finite points at
    ``t > 1``), with the t interval of the intercept. The model, not the data, says the
    approach is logarithmic: the residuals are the check.

    Arguments:
        t: (T,) save times.
        margin: (T,) the margin at those times (NaN where not reached).
    """
    t, v = np.asarray(t, np.float64), np.asarray(margin, np.float64)
    if t.shape != v.shape or t.ndim != 1:
        raise ValueError(f"t and margin must be 1-d of one shape, got {t.shape}, {v.shape}.")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}.")
    ok = np.isfinite(v) & np.isfinite(t) & (t > 1)
    if t_from is None and ok.any():
        t_from = float(np.sort(t[ok])[ok.sum() // 2])
    ok &= t >= (t_from or 1.0)
    if ok.sum() < 2 or np.ptp(1.0 / np.log(t[ok])) == 0:
        raise ValueError(f"log_rate_fit needs at least 2 finite points at distinct t > 1 from "
                         f"t_from={t_from}, got {int(ok.sum())}.")
    import scipy.stats

    u, y = 1.0 / np.log(t[ok]), v[ok]
    r = scipy.stats.linregress(u, y)
    n = int(ok.sum())
    half = (scipy.stats.t.ppf(0.5 + confidence / 2, n - 2) * r.intercept_stderr if n > 2
            else math.inf)
    return LogRateFit(limit=float(r.intercept), lo=float(r.intercept - half),
                      hi=float(r.intercept + half), slope=float(-r.slope),
                      confidence=float(confidence), t_from=float(t_from), n_points=n)


def log_rate_limits(t, values) -> np.ndarray:
    """:func:`log_rate_fit` of every row of ``values (..., T)``: ``(..., 3)`` of ``[limit,
    lo, hi]``, NaN for a row with fewer than 3 finite points at ``t > 1`` (e.g. a ratio to
    a maximal margin of 0)."""
    t, v = np.asarray(t, float), np.asarray(values, float)
    out = np.full(v.shape[:-1] + (3,), np.nan)
    for i in np.ndindex(v.shape[:-1]):
        if np.isfinite(v[i][t > 1]).sum() >= 3:
            f = log_rate_fit(t, v[i])
            out[i] = f.limit, f.lo, f.hi
    return out


# -- convex programs ----------------------------------------------------------------------


def max_margin_fixed_features(Phi, y) -> tuple[float, np.ndarray, float]:
    """``gamma* = max_{|c|_1 <= 1} min_i y_i (Phi c)_i >= 0``: the L1 hard margin over fixed
    features, solved as a linear program (scipy ``linprog``, HiGHS) in float64.

    Primal LP over ``c = c+ - c-``: maximize ``t`` s.t. ``y_i (Phi (c+ - c-))_i >= t``,
    ``sum(c+ + c-) = 1``, ``c+-  >= 0``. Its LP dual is
    ``min_{p in simplex} max_j |sum_i p_i y_i Phi_ij|``, solved separately as a certificate.

    Arguments:
        Phi: (n, m) features ``phi_j(x_i)``.
        y: (n,) labels in {-1, +1}.

    Returns:
        ``(gamma, c, dual)``: the margin (0 if not separable: ``c = 0`` is feasible), the
        optimal (m,) coefficients (``|c|_1 = 1`` when ``gamma > 0``) and the dual optimum
        (equal to ``gamma`` by LP duality, up to solver tolerance).
    """
    from scipy.optimize import linprog

    Phi = np.asarray(Phi, np.float64)
    y = np.asarray(y, np.float64)
    if Phi.ndim != 2:
        raise ValueError(f"Phi must have shape (n, m), got {Phi.shape}.")
    n, m = Phi.shape
    if y.shape != (n,) or not np.all(np.abs(y) == 1.0):
        raise ValueError(f"y must have shape ({n},) with labels in {{-1, +1}}.")
    A = y[:, None] * Phi  # (n, m)
    # variables (c+ (m), c- (m), t); minimize -t
    cost = np.zeros(2 * m + 1)
    cost[-1] = -1.0
    A_ub = np.hstack([-A, A, np.ones((n, 1))])  # t - y_i (Phi c)_i <= 0
    A_eq = np.hstack([np.ones((1, 2 * m)), np.zeros((1, 1))])
    bounds = [(0, None)] * (2 * m) + [(None, None)]
    res = linprog(cost, A_ub=A_ub, b_ub=np.zeros(n), A_eq=A_eq, b_eq=[1.0], bounds=bounds,
                  method="highs")
    if res.status != 0:
        raise RuntimeError(f"linprog failed: {res.message}")
    c = res.x[:m] - res.x[m:2 * m]
    # dual: minimize s over (p (n), s) s.t. -s <= (A^T p)_j <= s, sum p = 1, p >= 0
    cost_d = np.zeros(n + 1)
    cost_d[-1] = 1.0
    A_ub_d = np.vstack([np.hstack([A.T, -np.ones((m, 1))]), np.hstack([-A.T, -np.ones((m, 1))])])
    A_eq_d = np.hstack([np.ones((1, n)), np.zeros((1, 1))])
    res_d = linprog(cost_d, A_ub=A_ub_d, b_ub=np.zeros(2 * m), A_eq=A_eq_d, b_eq=[1.0],
                    bounds=[(0, None)] * n + [(None, None)], method="highs")
    if res_d.status != 0:
        raise RuntimeError(f"linprog (dual) failed: {res_d.message}")
    return float(res.x[-1]), c, float(res_d.x[-1])


def norm_only_max_margin(net: NormOnlyTwoLayer, X: Float[Array, "n d"], y: Float[Array, " n"]
                         ) -> float:
    """Globally maximal :func:`normalized_margin` of a :class:`NormOnlyTwoLayer` with both
    layers trained, over all ``(r, a)`` with ``r >= 0``: ``LP / (2 sqrt m)`` with ``LP`` =
    :func:`max_margin_fixed_features` of ``Phi_ij = relu(u_j . x_i)`` (see module docstring)."""
    if not net.train_outer:
        raise ValueError("norm_only_max_margin needs train_outer=True (both layers trained).")
    Phi = np.maximum(np.asarray(X, np.float64) @ np.asarray(net.U, np.float64).T, 0.0)
    gamma, _, _ = max_margin_fixed_features(Phi, y)
    return gamma / (2.0 * math.sqrt(net.width))


# -- registered observables ---------------------------------------------------------------


def _angles(p, c):
    net = c.objective.net
    return rotation_angles(inner_weights(net, c.params0), inner_weights(net, p))


def _abs_a(p, c):
    return jnp.abs(p.a)


def _obs_rotation_deg(p, c):
    return jnp.rad2deg(_angles(p, c))


def _obs_max_rotation_deg(p, c):
    return jnp.rad2deg(jnp.max(_angles(p, c)))


def _obs_rotation_weighted_deg(p, c):
    w = _abs_a(p, c)
    return jnp.rad2deg(jnp.sum(w * _angles(p, c)) / jnp.sum(w))


def _obs_movement(p, c):
    net = c.objective.net
    return movement_over_sqrt_m(inner_weights(net, c.params0), inner_weights(net, p),
                                _live_width(net))


def _obs_margin_homogeneous(p, c):
    o = c.objective
    return normalized_margin(o.net, p, o.X, o.y)


def _obs_margin_per_movement(p, c):
    o = c.objective
    moved = jnp.linalg.norm(inner_weights(o.net, p) - inner_weights(o.net, c.params0))
    return jnp.min(o.y * o.output(p)) / moved


#: observables of this module, registered in :mod:`gflow.observe` by ``import gflow``
OBSERVABLES = {
    "rotation_deg": Observable(_obs_rotation_deg, dims=("neuron",)),
    "max_rotation_deg": Observable(_obs_max_rotation_deg),
    "rotation_weighted_deg": Observable(_obs_rotation_weighted_deg),
    "movement_over_sqrt_m": Observable(_obs_movement),
    "margin_homogeneous": Observable(_obs_margin_homogeneous),
    "margin_per_movement": Observable(_obs_margin_per_movement),
}
