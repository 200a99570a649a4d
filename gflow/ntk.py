"""Neural tangent kernel (NTK) tools: empirical Gram matrices, the infinite-width ReLU NTK
in closed form, and the NTK separation margin of a dataset.

Conventions (Du, Zhai, Poczos, Singh, ICLR 2019, arXiv 1810.02054; Ji and Telgarsky,
ICLR 2020, arXiv 1909.12292; Munteanu, Omlor, Song, Woodruff, ICML 2022, arXiv 2206.12802):
``f(x) = (1/sqrt m) sum_r a_r relu(w_r . x)`` with ``w_r ~ N(0, I_d)`` and ``a_r in {-1, +1}``
(or any ``a_r`` with ``E a_r^2 = 1``). Then, with ``theta`` the angle between ``x`` and ``x'``,

- training only ``W``:  ``H_inf(x, x') = E_w[x.x' 1{w.x > 0} 1{w.x' > 0}]
  = x.x' (pi - theta) / (2 pi)``  (``= x.x' k0(x, x') / 2``, Cho-Saul arc-cosine kernel of order 0);
- training only ``a``:  ``E_w[relu(w.x) relu(w.x')] = |x||x'| (sin theta + (pi - theta) cos theta)
  / (2 pi)``  (``= k1(x, x') / 2``, arc-cosine kernel of order 1);
- training both: the sum.

**NTK margin** (Ji and Telgarsky 2020, Assumption 2.1): with the feature map
``phi(x)(w) = x 1{w.x > 0}`` into ``L2(N(0, I_d); R^d)``,

    gamma = max_{||v|| <= 1} min_i y_i <v, phi(x_i)>,    <phi(x), phi(x')> = H_inf(x, x').

By the minimax theorem this is a hard-margin SVM without bias in the kernel's feature space,
and equals its dual

    gamma^2 = min_{p in simplex} p^T Q p,    Q_ij = y_i y_j K_ij,

(``gamma = 0`` exactly when the data are not separable). :func:`kernel_margin` solves the dual
QP with scipy (SLSQP) and certifies the answer: any ``p`` gives the upper bound
``sqrt(p^T Q p)``, and the primal direction ``v = sum_i p_i y_i phi(x_i) / |.|`` gives the lower
bound ``min_j (Q p)_j / sqrt(p^T Q p)``; both are returned. A finite-feature (Monte-Carlo)
estimate replaces ``K`` by the empirical Gram of ``M`` random neurons
(:func:`relu_ntk_mc`); since ``gamma^2`` is a minimum of functions linear in ``K``,
``|gamma_M^2 - gamma^2| <= max_ij |K_M - K|_ij``.

**Pointwise margin.** Ji and Telgarsky's Assumption 2.1 (also Munteanu et al.'s) asks more:
``||v(w)||_2 <= 1`` for *every* ``w``, not only ``E ||v(w)||^2 <= 1``. That margin
``gamma_pw`` is at most the one above (a smaller feasible set; by Jensen,
``E|v| <= sqrt(E|v|^2)``) and, by the minimax theorem, equals

    gamma_pw = min_{p in simplex} E_w | sum_i p_i y_i x_i 1{w.x_i > 0} |_2 .

:func:`pointwise_margin` solves it over a sample of ``w`` (the expectation an average over the
sample), certified like :func:`kernel_margin`: the value at ``p`` is an upper bound, the
field ``v(w) = A(w) p / |A(w) p|`` a feasible direction whose worst point is a lower bound.

Data with a controlled margin: :func:`gflow.data.margin_data`. The closed forms are those of
:mod:`gflow.kernels` (with its stable angle). Observables (:data:`OBSERVABLES`, registered in
:mod:`gflow.observe` by ``import gflow``): ``activation_flips`` (fraction of
patterns ``1{w_r.x_i > 0}`` on the training inputs that differ from init) and
``ntk_lambda_min`` (smallest eigenvalue of the empirical NTK Gram on the training inputs),
``ntk_movement`` (``||K_t - K_0||_F / ||K_0||_F`` of that Gram) and ``ntk_alignment`` (its
kernel-target alignment ``y^T K_t y / (||K_t||_F |y|^2)``).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from . import kernels
from .observe import Observable

__all__ = [
    "OBSERVABLES",
    "MarginResult",
    "activation_flips",
    "arccos_kernel",
    "features",
    "gram",
    "kernel_alignment",
    "kernel_movement",
    "kernel_margin",
    "lambda_min",
    "margin",
    "margins_at",
    "symmetric_margins",
    "pad_width",
    "pointwise_margin",
    "relu_ntk",
    "relu_ntk_mc",
]

_LAYERS = ("inner", "outer", "both")


def _flat_trainable(net, params, tree):
    """Concatenate the trainable leaves of ``tree`` (leading axis n) into (n, P)."""
    mask = net.trainable(params)
    leaves = jax.tree.leaves(tree)
    mleaves = jax.tree.leaves(mask)
    if len(leaves) != len(mleaves):
        raise ValueError("net.trainable(params) does not match the parameter structure.")
    cols = [x.reshape(x.shape[0], -1) for x, t in zip(leaves, mleaves, strict=True) if t]
    if not cols:
        raise ValueError("the net has no trainable parameters: its NTK is zero.")
    return jnp.concatenate(cols, axis=1)


def features(net, params, X: Float[Array, "n d"]) -> Float[Array, "n P"]:
    """Jacobian features ``J_i = d f(x_i) / d theta`` of the trainable parameters.

    Works for any net with ``apply(params, X) -> (n,)`` and ``trainable(params)`` (leaves marked
    ``False`` are left out, e.g. ``a`` for ``TwoLayer(train_outer=False)``). Uses
    ``jax.jacrev``; memory is O(n P).

    Returns:
        (n, P) array; ``features(...) @ features(...).T`` is the empirical NTK Gram matrix.
    """
    X = jnp.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must have shape (n, d), got {X.shape}.")
    jac = jax.jacrev(lambda p: net.apply(p, X))(params)
    return _flat_trainable(net, params, jac)


def gram(net, params, X: Float[Array, "n d"], X2: Float[Array, "n2 d"] | None = None
         ) -> Float[Array, "n n2"]:
    """Empirical NTK ``H_ij = <d f(x_i)/d theta, d f(x2_j)/d theta>`` at ``params``.

    Only trainable leaves count (``net.trainable``). ``X2`` defaults to ``X``.
    """
    J = features(net, params, X)
    J2 = J if X2 is None else features(net, params, X2)
    return J @ J2.T


def lambda_min(K: Float[Array, "n n"]) -> Float[Array, ""]:
    """Smallest eigenvalue of a symmetric matrix (symmetrized first)."""
    K = jnp.asarray(K)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"K must be a square (n, n) matrix, got shape {K.shape}.")
    return jnp.linalg.eigvalsh(0.5 * (K + K.T))[0]


def arccos_kernel(X: Float[Array, "n d"], X2: Float[Array, "n2 d"] | None = None, *,
                  order: int = 1) -> Float[Array, "n n2"]:
    """Arc-cosine kernels of Cho and Saul (NeurIPS 2009) over all pairs of rows,
    ``k_q = 2 E_w[relu(w.x)^q relu(w.x')^q]`` for ``w ~ N(0, I)``
    (:func:`gflow.kernels.arccos`, with its stable angle):

    - ``order=0``: ``1 - theta/pi`` (``relu^0`` read as the step ``1{. > 0}``);
    - ``order=1``: ``|x||x'| (sin theta + (pi - theta) cos theta) / pi``.
    """
    if order not in (0, 1):
        raise ValueError(f"order must be 0 or 1, got {order!r}.")
    return _pairwise_arccos(jnp.asarray(X), None if X2 is None else jnp.asarray(X2), order)


@functools.partial(jax.jit, static_argnums=2)
def _pairwise_arccos(X, X2, order):
    return kernels.pairwise(kernels.arccos, X, X2, order=order)


def relu_ntk(X: Float[Array, "n d"], X2: Float[Array, "n2 d"] | None = None, *,
             layers: str = "inner") -> Float[Array, "n n2"]:
    """Infinite-width NTK of ``f = (1/sqrt m) sum_r a_r relu(w_r.x)``, ``w_r ~ N(0, I)``,
    ``E a_r^2 = 1`` (no bias).

    ``layers="inner"`` (only ``W`` trained, the Du et al. / Munteanu et al. convention):
    ``x.x' (pi - theta) / (2 pi)``; for unit inputs ``x_i.x_j (pi - arccos(x_i.x_j)) / (2 pi)``.
    ``layers="outer"``: ``|x||x'| (sin theta + (pi - theta) cos theta) / (2 pi)``;
    ``"both"``: their sum. This is the expectation of :func:`gram` at init for that net.
    The angle is computed stably (:func:`gflow.kernels.angle`): a row and a positive
    multiple of it have angle exactly 0.
    """
    if layers not in _LAYERS:
        raise ValueError(f"layers={layers!r} is unknown; valid values are {list(_LAYERS)}.")
    X = jnp.asarray(X)
    return _relu_ntk(X, X if X2 is None else jnp.asarray(X2), layers)


@functools.partial(jax.jit, static_argnums=2)
def _relu_ntk(X, X2, layers):
    K = 0.0
    if layers in ("inner", "both"):
        K = K + 0.5 * (X @ X2.T) * kernels.pairwise(kernels.arccos, X, X2, order=0)
    if layers in ("outer", "both"):
        K = K + kernels.pairwise(kernels.relu_cross, X, X2)
    return K


def relu_ntk_mc(key, X: Float[Array, "n d"], num_features: int, *, layers: str = "inner",
                X2: Float[Array, "n2 d"] | None = None) -> Float[Array, "n n2"]:
    """Monte-Carlo estimate of :func:`relu_ntk` from ``num_features`` random neurons
    ``w_r ~ N(0, I_d)``: the empirical Gram of a width-``num_features`` net at init (with
    ``a_r^2 = 1``), computed from explicit features. Entry-wise error ~ ``1/sqrt(M)``."""
    if layers not in _LAYERS:
        raise ValueError(f"layers={layers!r} is unknown; valid values are {list(_LAYERS)}.")
    if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
        raise ValueError(f"num_features must be an integer >= 1, got {num_features!r}.")
    X = jnp.asarray(X)
    X2 = X if X2 is None else jnp.asarray(X2)
    W = jax.random.normal(key, (num_features, X.shape[1]), dtype=X.dtype)
    Z, Z2 = X @ W.T, X2 @ W.T
    K = jnp.zeros((X.shape[0], X2.shape[0]), X.dtype)
    if layers in ("inner", "both"):
        K = K + (X @ X2.T) * (((Z > 0).astype(X.dtype) @ (Z2 > 0).astype(X.dtype).T)
                              / num_features)
    if layers in ("outer", "both"):
        K = K + jax.nn.relu(Z) @ jax.nn.relu(Z2).T / num_features
    return K


@dataclasses.dataclass(frozen=True)
class MarginResult:
    """Hard-margin SVM (no bias) in a kernel's feature space.

    Attributes:
        gamma: the margin (``sqrt`` of the dual optimum; an upper bound up to solver accuracy).
        lower: certified lower bound ``min_j (Q p)_j / sqrt(p^T Q p)`` from the primal direction
            built from ``p``; ``gamma - lower`` is the duality gap.
        p: (n,) optimal dual weights on the simplex; support vectors have ``p_i > 0``.
    """

    gamma: float
    lower: float
    p: np.ndarray

    @property
    def gap(self) -> float:
        return self.gamma - self.lower


def _simplex_qp(Q: np.ndarray, tol: float, max_iter: int) -> np.ndarray:
    """``argmin_{p in simplex} p^T Q p`` by SLSQP from the uniform point."""
    from scipy.optimize import minimize

    n = Q.shape[0]
    scale = max(float(np.max(np.abs(np.diag(Q)))), 1e-300)
    Qs = Q / scale
    res = minimize(
        lambda p: float(p @ Qs @ p), np.full(n, 1.0 / n), jac=lambda p: 2.0 * Qs @ p,
        bounds=[(0.0, 1.0)] * n, method="SLSQP", tol=tol,
        constraints=[{"type": "eq", "fun": lambda p: np.sum(p) - 1.0,
                      "jac": lambda p: np.ones_like(p)}],
        options={"maxiter": max_iter},
    )
    p = np.clip(res.x, 0.0, None)
    return p / p.sum()


def kernel_margin(K: Float[Array, "n n"], y: Float[Array, " n"], *, tol: float = 1e-12,
                  max_iter: int = 1000) -> MarginResult:
    """Hard-margin SVM margin (no bias) of labels ``y`` in {-1, +1} under kernel ``K``:
    ``gamma = max_{||v||<=1} min_i y_i <v, phi_i> = sqrt(min_{p in simplex} p^T Q p)``,
    ``Q = (y y^T) * K``, solved in float64 with scipy (see the module docstring).

    Arguments:
        K: (n, n) positive semi-definite kernel matrix (e.g. :func:`relu_ntk` or :func:`gram`).
        y: (n,) labels in {-1, +1}.

    Returns:
        :class:`MarginResult` with ``gamma``, a certified lower bound and the dual weights.
    """
    K = np.asarray(K, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"K must be a square (n, n) matrix, got shape {K.shape}.")
    if y.shape != (K.shape[0],):
        raise ValueError(f"y must have shape ({K.shape[0]},), got {y.shape}.")
    if not np.all(np.abs(y) == 1.0):
        raise ValueError("y must contain labels in {-1, +1}.")
    if not np.all(np.isfinite(K)):
        raise ValueError("K contains NaN or inf.")
    K = 0.5 * (K + K.T)
    Q = (y[:, None] * y[None, :]) * K
    return _kernel_at(Q, _simplex_qp(Q, tol, max_iter))


def _kernel_at(Q: np.ndarray, p: np.ndarray) -> MarginResult:
    """The kernel margin's bounds at the dual point ``p`` (on the simplex): ``sqrt(p^T Q p)``
    above, the primal direction built from ``p`` below."""
    Qp = Q @ p
    gamma = math.sqrt(max(float(p @ Qp), 0.0))
    lower = float(np.min(Qp)) / gamma if gamma > 0 else 0.0
    return MarginResult(gamma=gamma, lower=min(max(lower, 0.0), gamma), p=p)


def _pointwise_at(B: np.ndarray, Z: np.ndarray, p: np.ndarray) -> MarginResult:
    """The pointwise margin's bounds at ``p``: the dual value ``mean_k |A_k p|`` above, the
    feasible field ``v_k = A_k p / |A_k p|`` below. ``B``: (M, n) activation patterns,
    ``Z``: (n, d) the rows ``y_i x_i``."""
    A = (B * p) @ Z  # (M, d): A_k p
    norm = np.linalg.norm(A, axis=1, keepdims=True)
    V = np.divide(A, norm, out=np.zeros_like(A), where=norm > 0)  # (M, d): v(w_k)
    gamma = float(np.mean(norm))
    lower = float(np.min(np.sum(B * (V @ Z.T), axis=0) / B.shape[0]))
    return MarginResult(gamma=gamma, lower=min(max(lower, 0.0), gamma), p=p)


def margin(X: Float[Array, "n d"], y: Float[Array, " n"], *, layers: str = "inner") -> float:
    """NTK separation margin ``gamma`` of Ji and Telgarsky (ICLR 2020, arXiv 1909.12292) for a
    two-layer ReLU net without bias: the hard-margin SVM margin in the feature space of
    :func:`relu_ntk` (``layers="inner"``: ``phi(x)(w) = x 1{w.x > 0}``, their definition).
    ``gamma = 0`` when the data are not separable in that space."""
    return kernel_margin(relu_ntk(X, layers=layers), y).gamma


def pointwise_margin(X: Float[Array, "n d"], y: Float[Array, " n"], W: Float[Array, "M d"],
                     *, tol: float = 1e-12, max_iter: int = 1000) -> MarginResult:
    """Ji-Telgarsky NTK margin with the pointwise constraint (ICLR 2020, Assumption 2.1):
    ``gamma = max_{v: |v(w)|_2 <= 1 for all w} min_i y_i E_w[v(w).x_i 1{w.x_i > 0}]``, the
    expectation taken over the sample ``W`` of ``w ~ N(0, I_d)`` (only directions matter).

    Solved as its dual ``min_{p in simplex} mean_k |A_k p|_2``, ``A_k p = sum_i p_i y_i x_i
    1{w_k.x_i > 0}`` (a convex program: scipy SLSQP on ``sqrt(|A_k p|^2 + delta^2)`` with
    ``delta`` a millionth of the scale, which moves the value by at most that), in float64.
    On the same sample it is at most :func:`kernel_margin` of the sample's Gram
    (:func:`relu_ntk_mc`); its sampling error is ``O(1 / sqrt(M))``.

    Arguments:
        X: (n, d) inputs; y: (n,) labels in {-1, +1}; W: (M, d) sample of ``w``.

    Returns:
        :class:`MarginResult`: ``gamma`` (the dual value at ``p``, an upper bound), ``lower``
        (the worst point's margin under ``v_k = A_k p / |A_k p|``, a feasible field) and ``p``.
    """
    from scipy.optimize import minimize

    X, y, W = (np.asarray(a, dtype=np.float64) for a in (X, y, W))
    if X.ndim != 2 or W.ndim != 2 or W.shape[1] != X.shape[1] or W.shape[0] < 1:
        raise ValueError(f"X must be (n, d) and W (M, d) with M >= 1, got {X.shape}, {W.shape}.")
    if y.shape != (X.shape[0],) or not np.all(np.abs(y) == 1.0):
        raise ValueError(f"y must hold ({X.shape[0]},) labels in {{-1, +1}}.")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(W))):
        raise ValueError("X and W must be finite.")
    B = (W @ X.T > 0).astype(np.float64)  # (M, n) activation patterns
    Z = y[:, None] * X  # (n, d)
    n = X.shape[0]
    delta = 1e-6 * float(np.max(np.linalg.norm(X, axis=1)))

    def value(p, smooth):
        A = (B * p) @ Z  # (M, d): A_k p
        r = np.sqrt(np.sum(A * A, axis=1) + smooth**2)
        return float(np.mean(r)), A, r

    def fun(p):
        return value(p, delta)[0]

    def jac(p):
        _, A, r = value(p, delta)
        return np.mean(B * ((A / r[:, None]) @ Z.T), axis=0)

    res = minimize(fun, np.full(n, 1.0 / n), jac=jac, bounds=[(0.0, 1.0)] * n,
                   method="SLSQP", tol=tol, options={"maxiter": max_iter},
                   constraints=[{"type": "eq", "fun": lambda p: np.sum(p) - 1.0,
                                 "jac": lambda p: np.ones_like(p)}])
    p = np.clip(res.x, 0.0, None)
    return _pointwise_at(B, Z, p / p.sum())


def margins_at(X: Float[Array, "n d"], y: Float[Array, " n"], p, W: Float[Array, "M d"]
               ) -> tuple[MarginResult, MarginResult]:
    """Both NTK margins certified at one dual point ``p`` (no optimization): the L2 relaxation
    of :func:`margin` and the pointwise margin of :func:`pointwise_margin` on the sample ``W``.

    Any ``p`` on the simplex gives upper bounds (``sqrt(p^T Q p)``, ``mean_k |A_k p|``) and
    the primal directions built from it lower bounds, as in :func:`kernel_margin` and
    :func:`pointwise_margin`. Where the data are invariant under a group acting transitively
    on the points and preserving ``Q`` (the whole hypercube under a sparse parity: every
    coordinate sign flip maps the cube onto itself and keeps ``y_i y_j`` and ``x_i . x_j``),
    the convex dual has a symmetric minimizer, the uniform ``p``: the kernel bounds then meet
    (the exact population L2 margin of :class:`gflow.distributions.SparseParity` from its
    support, with no QP over ``2^d`` points), and the pointwise value at the uniform ``p`` is
    an unbiased Monte-Carlo estimate of the population pointwise margin (standard error
    ``std_k |A_k p| / sqrt(M)``; a finite sample of ``w`` is not symmetric, so its own
    lower bound stays below).

    Arguments:
        X: (n, d) inputs (n up to a few thousand: the Gram matrix is formed).
        y: (n,) labels in {-1, +1}.
        p: (n,) dual weights (normalized to sum 1), e.g. ``np.full(n, 1 / n)``.
        W: (M, d) sample of ``w ~ N(0, I_d)`` for the pointwise margin.

    Returns:
        ``(kernel, pointwise)`` :class:`MarginResult` at ``p``.
    """
    X, y, W = (np.asarray(a, dtype=np.float64) for a in (X, y, W))
    p = np.asarray(p, dtype=np.float64)
    if X.ndim != 2 or W.ndim != 2 or W.shape[1] != X.shape[1] or W.shape[0] < 1:
        raise ValueError(f"X must be (n, d) and W (M, d) with M >= 1, got {X.shape}, {W.shape}.")
    if y.shape != (X.shape[0],) or not np.all(np.abs(y) == 1.0):
        raise ValueError(f"y must hold ({X.shape[0]},) labels in {{-1, +1}}.")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(W)) and np.all(np.isfinite(p))):
        raise ValueError("X, W and p must be finite.")
    if p.shape != y.shape or np.any(p < 0) or not p.sum() > 0:
        raise ValueError(f"p must be ({X.shape[0]},) non-negative weights with a positive sum.")
    p = p / p.sum()
    Q = (y[:, None] * y[None, :]) * np.asarray(relu_ntk(X), np.float64)
    return _kernel_at(Q, p), _pointwise_at((W @ X.T > 0).astype(np.float64), y[:, None] * X, p)


def symmetric_margins(distribution, W: Float[Array, "M d"]) -> tuple[MarginResult, MarginResult]:
    """:func:`margins_at` the support of a finite ``distribution`` (its ``enumerate()``) with
    the support probabilities as ``p``: the population NTK margins (L2 and pointwise) of a
    distribution whose symmetry makes that ``p`` the dual optimum, e.g.
    :class:`gflow.distributions.SparseParity` (uniform on the hypercube; see
    :func:`margins_at`). Otherwise the results are upper bounds with their certificates."""
    X, y, w = distribution.enumerate()
    return margins_at(X, y, w, W)


def pad_width(net, params, width: int):
    """Embed a width-``m`` net with fixed outer weights into a wider one, exactly.

    For ``TwoLayer(scaling="ntk", train_outer=False)``: the returned width-``width`` net has
    the ``m`` original neurons with outer weights ``a_r sqrt(width / m)`` followed by
    ``width - m`` copies of neuron 0 with outer weight 0. Outputs, the gradient of every
    original ``w_r`` and hence the whole training trajectory of the original rows are
    identical; padded rows get zero gradient and never move. Lets runs of different widths
    share one compiled program (rows ``:m`` of the result are the original net).

    Returns:
        ``(wide_net, wide_params)``.
    """
    from .nets import TwoLayer, TwoLayerParams

    if not isinstance(net, TwoLayer) or net.scaling != "ntk" or net.train_outer or net.bias:
        raise ValueError("pad_width needs a TwoLayer with scaling='ntk', bias=False and "
                         "train_outer=False (fixed outer weights).")
    m = net.width
    if isinstance(width, bool) or not isinstance(width, int) or width < m:
        raise ValueError(f"width must be an integer >= net.width={m}, got {width!r}.")
    wide = TwoLayer(width, net.activation, "ntk", bias=False, train_outer=False)
    pad = width - m
    W = jnp.concatenate([params.W, jnp.repeat(params.W[:1], pad, axis=0)], axis=0)
    a = jnp.concatenate([params.a * math.sqrt(width / m), jnp.zeros((pad,), params.a.dtype)])
    return wide, TwoLayerParams(W=W, b=None, a=a)


def activation_flips(W0: Float[Array, "m d"], W: Float[Array, "m d"],
                     X: Float[Array, "n d"], b0=None, b=None) -> Float[Array, ""]:
    """Fraction of activation patterns ``1{w_r.x_i + b_r > 0}`` (over all ``r, i``) that
    differ between ``W0`` and ``W``."""
    z0 = X @ W0.T + (0.0 if b0 is None else b0)
    z = X @ W.T + (0.0 if b is None else b)
    return jnp.mean(((z0 > 0) != (z > 0)).astype(X.dtype))


def _obs_flips(p, c):
    return activation_flips(c.params0.W, p.W, c.objective.X, c.params0.b, p.b)


def _obs_lambda_min(p, c):
    return lambda_min(gram(c.objective.net, p, c.objective.X))


def kernel_movement(K0: Float[Array, "n n"], K: Float[Array, "n n"]) -> Float[Array, ""]:
    """Relative change ``||K - K0||_F / ||K0||_F`` of a Gram matrix."""
    return jnp.linalg.norm(K - K0) / jnp.linalg.norm(K0)


def kernel_alignment(K: Float[Array, "n n"], y: Float[Array, " n"]) -> Float[Array, ""]:
    """Kernel-target alignment ``<K, y y^T>_F / (||K||_F ||y y^T||_F) = y^T K y /
    (||K||_F |y|^2)`` (Cristianini, Shawe-Taylor, Elisseeff, Kandola, NeurIPS 2001): 1 when
    ``K`` is a positive multiple of ``y y^T``."""
    return (y @ K @ y) / (jnp.linalg.norm(K) * (y @ y))


def _obs_ntk_movement(p, c):
    net, X = c.objective.net, c.objective.X
    return kernel_movement(gram(net, c.params0, X), gram(net, p, X))


def _obs_alignment(p, c):
    return kernel_alignment(gram(c.objective.net, p, c.objective.X), c.objective.y)


#: observables of this module, registered in :mod:`gflow.observe` by ``import gflow``; the
#: kernel ones cost one empirical NTK Gram (``ntk_movement``: two) per save
OBSERVABLES = {
    "activation_flips": Observable(_obs_flips),
    "ntk_lambda_min": Observable(_obs_lambda_min),
    "ntk_movement": Observable(_obs_ntk_movement),
    "ntk_alignment": Observable(_obs_alignment),
}
