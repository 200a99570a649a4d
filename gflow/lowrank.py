r"""Low-rank two-layer nets and their initialization: spectral vs function-space.

Setting of Vodrahalli, Shivanna, Sathiamoorthy, Jain, Chi, "Nonlinear Initialization
Methods for Low-Rank Neural Networks", arXiv 2202.00834 (2022). A low-rank layer
re-parameterizes its hidden weight as ``W = U V^T`` with ``U`` (m, r), ``V`` (d, r);
:class:`LowRankTwoLayer` is the two-layer net

    f(x) = c_m sum_j a_j sigma((U V^T x)_j + b_j),

trained by every gflow dynamics like :class:`gflow.TwoLayer` (all of ``U, V, b, a`` are
trained unless ``train_outer=False`` freezes ``a``); :func:`gflow.init.low_rank` initializes
it with either method below.

Given a full-rank init ``W0`` (m, d) there are two ways to pick a rank-r ``(U, V)``:

* **spectral** (:func:`spectral`): the best rank-r approximation of ``W0`` in Frobenius
  norm, the truncated SVD ``W0 ~ A_r S_r B_r^T``, ``U = A_r S_r^{1/2}``, ``V = B_r S_r^{1/2}``
  (Eckart--Young);
* **function-space** (:func:`function_space`): approximately minimize the layer-function
  error ``E_x |relu(W0 x) - relu(U V^T x)|^2`` over Gaussian inputs ``x ~ N(0, I_d)``.

The paper gives no code, and its own algorithms (a provably efficient one at fixed rank r and a
practical one) are not reproduced here: :func:`function_space` is this module's own practical
algorithm, derived as follows (:mod:`gflow.lowrank_grid` solves the same problem with a
certified error bound at small d and r; :mod:`gflow.lowrank_mlp` holds the deep nets).

**Closed form.** For ``x ~ N(0, I_d)`` (the arc-cosine kernel of degree 1, Cho & Saul 2009)

    k(u, v) = E[relu(u.x) relu(v.x)] = |u||v| kappa(rho),
    kappa(rho) = (sqrt(1 - rho^2) + (pi - arccos rho) rho) / (2 pi),   rho = cos(u, v),

with ``kappa'(rho) = (pi - arccos rho) / (2 pi)``. Its Hermite expansion is
``kappa(rho) = 1/(2 pi) + rho/4 + rho^2/(4 pi) + rho^4/(48 pi) + ...`` (``kappa(1) = 1/2``), so
per neuron ``E(relu(w.x) - relu(w'.x))^2 = |w - w'|^2/4 + (|w| - |w'|)^2/(2 pi) + sum_k c_k
(|w|^2 + |w'|^2 - 2 |w||w'| rho^k)`` (even Hermite degrees ``k >= 2``, ``c_k > 0``): the
Frobenius error is only the degree-1 part of the layer error; the degree-0 part penalizes
the loss of row norm that truncation causes. By homogeneity the same minimizers hold for
inputs uniform on a sphere (the kernel is then ``k / d``).

**Exact reduction to a subspace problem.** The rank-r matrices are closed under
``W -> D W`` for diagonal ``D``, so a rank-r ``W'`` is "pick an r-dim row space ``S``, then
each row ``w'_i in S`` independently". For a fixed ``S`` with projector ``P``, the best row is
``w'_i = s_i P w_i`` (the direction in ``S`` closest in angle to ``w_i``, since ``kappa`` is
increasing) with the optimal norm ``|w'_i| = 2 |w_i| kappa(rho_i)``, ``rho_i = |P w_i| / |w_i|``,
leaving the error ``|w_i|^2 (1/2 - 2 kappa(rho_i)^2)``. The problem is thus

    max_S  F(S) = sum_i |w_i|^2 g(rho_i^2),   g(t) = 2 kappa(sqrt t)^2,

whereas the truncated SVD maximizes ``sum_i |P w_i|^2 = sum_i |w_i|^2 rho_i^2`` and keeps
``s_i = 1``. ``g`` is concave near 0: the ReLU objective prefers spreading the captured
fraction evenly over rows. A stationary ``S`` is an invariant subspace of
``M = W0^T diag(alpha) W0`` with ``alpha_i = g'(rho_i^2) = kappa(rho_i) kappa'(rho_i) / rho_i``
(up to a constant factor), i.e. spanned by the top-r right singular vectors of
``diag(alpha)^{1/2} W0``: a ReLU-kernel-weighted SVD. The practical algorithm starts at the
SVD subspace and iterates this weighted SVD a few times, keeping the best ``S``. The first
candidate, the SVD subspace with optimally rescaled rows, is never worse than the truncated
SVD (same subspace, optimal rows), so the result is never worse than the spectral init.
Each step costs one SVD of an (m, d) matrix.

:func:`reference` is a strong (slow) reference solver for small sizes: Adam on the
closed-form population error over ``(U, V)`` from several starts, keeping the best.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from . import kernels
from .activations import Activation, get_activation
from .kernels import kappa
from .nets import AbstractNet, TwoLayerParams, check_int, check_scaling, output_scale

__all__ = [
    "METHODS",
    "LowRankParams",
    "LowRankTwoLayer",
    "balanced_factors",
    "factorize",
    "function_space",
    "layer_error",
    "population_error",
    "reference",
    "relative_error",
    "rescale_rows",
    "spectral",
    "subspace_error",
]

#: initialization methods understood by :func:`factorize`
METHODS = ("spectral", "function", "reference")


# --------------------------------------------------------------------------- the net
class LowRankParams(eqx.Module):
    """Parameters of a low-rank two-layer net: ``U`` (m, r), ``V`` (d, r),
    ``b`` (m,) or ``None``, ``a`` (m,). The hidden weight is ``W = U V^T``."""

    U: Float[Array, "m r"]
    V: Float[Array, "d r"]
    b: Float[Array, " m"] | None
    a: Float[Array, " m"]


class LowRankTwoLayer(AbstractNet):
    """Two-layer net with a rank-r hidden weight: ``f(x) = c_m sum_j a_j sigma((U V^T x)_j + b_j)``.

    Arguments as :class:`gflow.TwoLayer`, plus ``rank`` (``r >= 1``). ``U``, ``V`` and ``b``
    are always trained; ``a`` unless ``train_outer=False``.
    (Vodrahalli et al., arXiv 2202.00834.)
    """

    width: int = eqx.field(static=True)
    rank: int = eqx.field(static=True)
    activation: Activation = eqx.field(static=True)
    scaling: str = eqx.field(static=True)
    bias: bool = eqx.field(static=True)
    train_outer: bool = eqx.field(static=True)

    def __init__(
        self,
        width: int,
        rank: int,
        activation: str | Callable | Activation = "relu",
        scaling: str = "ntk",
        bias: bool = False,
        train_outer: bool = True,
    ):
        self.width = check_int(width, "width")
        self.rank = check_int(rank, "rank")
        self.activation = get_activation(activation)
        self.scaling = check_scaling(scaling)
        self.bias = bool(bias)
        self.train_outer = bool(train_outer)

    @property
    def prefactor(self) -> float:
        """The output scale c_m."""
        return output_scale(self.scaling, self.width)

    def weight(self, params: LowRankParams) -> Float[Array, "m d"]:
        """The hidden weight ``U V^T``."""
        return params.U @ params.V.T

    def preactivations(self, params: LowRankParams, X: Float[Array, "n d"]) -> Float[Array, "n m"]:
        """``(U V^T x_i)_j + b_j``, computed as ``(X V) U^T`` (cost O(n r (d + m)))."""
        z = (X @ params.V) @ params.U.T
        if params.b is not None:
            z = z + params.b
        return z

    def apply(self, params: LowRankParams, X: Float[Array, "n d"]) -> Float[Array, " n"]:
        """Network output on a batch of inputs."""
        h = self.activation(self.preactivations(params, X))
        return self.prefactor * (h @ params.a)

    def trainable(self, params: LowRankParams) -> Any:
        """A pytree of bools (same structure as ``params``): which leaves are trained."""
        return LowRankParams(U=True, V=True, b=None if params.b is None else True,
                             a=self.train_outer)

    def to_full(self, params: LowRankParams) -> TwoLayerParams:
        """The same function as :class:`gflow.TwoLayer` parameters (``W = U V^T``)."""
        return TwoLayerParams(W=self.weight(params), b=params.b, a=params.a)

    def check_params(self, params: LowRankParams, d: int | None = None) -> None:
        """Raise ``ValueError`` if ``params`` do not fit this net (and input dimension d)."""
        if not isinstance(params, LowRankParams):
            raise ValueError(f"params must be a LowRankParams, got {type(params).__name__}.")
        U, V, a = params.U, params.V, params.a
        if U.shape != (self.width, self.rank):
            raise ValueError(
                f"params.U has shape {U.shape}; this net needs (width={self.width}, "
                f"rank={self.rank})."
            )
        if V.ndim != 2 or V.shape[1] != self.rank:
            raise ValueError(f"params.V has shape {V.shape}; this net needs (d, rank={self.rank}).")
        if a.shape != (self.width,):
            raise ValueError(f"params.a has shape {a.shape}; expected ({self.width},).")
        if self.bias != (params.b is not None):
            raise ValueError(
                f"net has bias={self.bias} but params.b is "
                f"{'None' if params.b is None else 'an array'}; build params with this net."
            )
        if params.b is not None and params.b.shape != (self.width,):
            raise ValueError(f"params.b has shape {params.b.shape}; expected ({self.width},).")
        if d is not None and V.shape[0] != d:
            raise ValueError(
                f"params were built for input dimension d={V.shape[0]} but the data has "
                f"d={d}; initialise params with d={d}."
            )


# ------------------------------------------------- the layer error (gflow.kernels)
def _norm(x, axis=-1):
    # sqrt with a zero-safe gradient (rows of exactly zero norm contribute 0)
    sq = jnp.sum(x * x, axis=axis)
    safe = jnp.where(sq > 0, sq, 1.0)
    return jnp.where(sq > 0, jnp.sqrt(safe), 0.0)


@jax.jit
def population_error(W0: Float[Array, "m d"], W: Float[Array, "m d"]) -> Float[Array, ""]:
    """``E_x |relu(W0 x) - relu(W x)|^2`` for ``x ~ N(0, I_d)`` in closed form
    (sum over the m neurons of ``k(w0,w0) + k(w,w) - 2 k(w0,w)``, ``k(w,w) = |w|^2/2``,
    evaluated without cancellation by :func:`gflow.kernels.relu_distance`)."""
    return jnp.sum(jnp.maximum(kernels.relu_distance(W0, W), 0.0))


@jax.jit
def layer_error(
    W0: Float[Array, "m d"], W: Float[Array, "m d"], X: Float[Array, "n d"]
) -> Float[Array, ""]:
    """Empirical ``mean_i |relu(W0 x_i) - relu(W x_i)|^2`` on the inputs ``X``."""
    diff = jax.nn.relu(X @ W0.T) - jax.nn.relu(X @ W.T)
    return jnp.mean(jnp.sum(diff**2, -1))


def relative_error(
    W0: Float[Array, "m d"], W: Float[Array, "m d"], X: Float[Array, "n d"] | None = None
) -> Float[Array, ""]:
    """Relative layer-function error ``sqrt(E|relu(W0 x) - relu(W x)|^2 / E|relu(W0 x)|^2)``:
    Gaussian population value in closed form if ``X`` is ``None``, else on the samples ``X``."""
    if X is None:
        return jnp.sqrt(population_error(W0, W) / (0.5 * jnp.sum(W0**2)))
    ref = jnp.mean(jnp.sum(jax.nn.relu(X @ W0.T) ** 2, -1))
    return jnp.sqrt(layer_error(W0, W, X) / ref)


# ------------------------------------------------------------ initializations
def _check_rank(W0, rank: int) -> None:
    if W0.ndim != 2:
        raise ValueError(f"W0 must have shape (m, d), got {tuple(W0.shape)}.")
    full = min(W0.shape)
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= full:
        raise ValueError(f"rank must be an integer in [1, min(m, d)={full}], got {rank!r}.")


def _top_right(W, rank):
    """Right singular vectors ``(d, k)``, ``k = min(m, d)``, with the columns past ``rank``
    zeroed: the orthonormal basis of the top-r row space, padded so that compiled shapes do
    not depend on the rank (a traced ``rank`` is fine)."""
    Vt = jnp.linalg.svd(W, full_matrices=False)[2]
    return Vt.T * (jnp.arange(Vt.shape[0]) < rank)


def balanced_factors(W: Float[Array, "m d"], rank: int) -> tuple[Array, Array]:
    """Balanced factors of the best rank-r approximation of ``W``: with the SVD
    ``W = A S B^T``, ``U = A_r S_r^{1/2}`` (m, r) and ``V = B_r S_r^{1/2}`` (d, r), so
    ``U^T U = V^T V = S_r``. Exact (``U V^T = W``) when ``rank(W) <= r``."""
    _check_rank(W, rank)
    A, s, Bt = _svd(jnp.asarray(W))
    if isinstance(s, jax.core.Tracer):  # inside jit / vmap
        root = jnp.sqrt(s[:rank])
        return A[:, :rank] * root, Bt[:rank].T * root
    A, s, Bt = (np.asarray(x) for x in (A, s, Bt))
    root = np.sqrt(s[:rank])  # slicing in numpy: no compilation per rank
    return jnp.asarray(A[:, :rank] * root), jnp.asarray(Bt[:rank].T * root)


@jax.jit
def _svd(W):
    return jnp.linalg.svd(W, full_matrices=False)


def spectral(W0: Float[Array, "m d"], rank: int) -> tuple[Array, Array]:
    """Spectral initialization: the truncated SVD of ``W0`` (best rank-r Frobenius
    approximation, Eckart--Young), as balanced factors ``(U (m, r), V (d, r))``."""
    return balanced_factors(W0, rank)


def rescale_rows(W0: Float[Array, "m d"], Q: Float[Array, "d r"]) -> Float[Array, "m d"]:
    """The best ``W`` (population ReLU error, Gaussian inputs) whose rows lie in the span of
    the orthonormal columns of ``Q`` (zero columns allowed): ``w_i = 2 kappa(rho_i) |w0_i|
    P w0_i / |P w0_i|`` with ``rho_i = |P w0_i| / |w0_i|`` (a row with ``P w0_i = 0`` gets
    the direction ``Q[:, 0]`` and norm ``|w0_i| / pi``)."""
    proj = (W0 @ Q) @ Q.T
    n0, npr = _norm(W0), _norm(proj)
    rho = jnp.where(n0 > 0, npr / jnp.where(n0 > 0, n0, 1.0), 0.0)
    target = 2.0 * kappa(rho) * n0
    direction = jnp.where((npr > 0)[:, None], proj / jnp.where(npr > 0, npr, 1.0)[:, None],
                          Q[:, 0][None, :])
    return target[:, None] * direction


def subspace_error(W0: Float[Array, "m d"], Q: Float[Array, "d r"]) -> Float[Array, ""]:
    """The population error ``E|relu(W0 x) - relu(W x)|^2`` of :func:`rescale_rows`
    ``(W0, Q)`` (the best ``W`` with rows in the span of ``Q``'s orthonormal columns) in
    closed form: ``sum_i |w0_i|^2 (1/2 - 2 kappa(rho_i)^2)``, ``rho_i = |Q^T w0_i| / |w0_i|``."""
    n0sq = jnp.sum(W0**2, -1)
    npsq = jnp.sum((W0 @ Q) ** 2, -1)
    rho = jnp.sqrt(jnp.where(n0sq > 0, npsq / jnp.where(n0sq > 0, n0sq, 1.0), 0.0))
    return jnp.sum(n0sq * (0.5 - 2.0 * kappa(rho) ** 2))


def function_space(
    W0: Float[Array, "m d"], rank: int, *, iters: int = 10, rho_min: float = 1e-3
) -> tuple[Array, Array]:
    """Function-space initialization (practical algorithm; see the module docstring).

    Starts from the top-r right singular subspace of ``W0``, runs ``iters`` steps of the
    ReLU-kernel-weighted SVD ``S <- top-r right singular vectors of diag(alpha)^{1/2} W0``,
    ``alpha_i = kappa(rho_i) kappa'(rho_i) / max(rho_i, rho_min)``, keeps the subspace with
    the smallest population error, rescales each row optimally (:func:`rescale_rows`) and
    returns balanced factors ``(U (m, r), V (d, r))``. ``iters=0`` gives the SVD subspace with
    optimally rescaled rows. Never worse than :func:`spectral` on the population error.
    Cost: ``iters + 2`` SVDs of an (m, d) matrix.
    """
    _check_rank(W0, rank)
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 0:
        raise ValueError(f"iters must be an integer >= 0, got {iters!r}.")
    W = _function_space_weight(jnp.asarray(W0), rank, iters, rho_min)
    return balanced_factors(W, rank)


@jax.jit
def _function_space_weight(W0, rank, iters, rho_min):
    # rank and iters are traced: one compilation per shape of W0
    Q = _top_right(W0, rank)
    best = subspace_error(W0, Q)
    n0 = _norm(W0)

    def step(_, carry):
        Q, best_Q, best = carry
        rho = _norm(W0 @ Q) / jnp.where(n0 > 0, n0, 1.0)
        k, slope = jax.jvp(kappa, (rho,), (jnp.ones_like(rho),))  # kappa, kappa'
        alpha = k * slope / jnp.maximum(rho, rho_min)
        Q = _top_right(jnp.sqrt(alpha)[:, None] * W0, rank)
        val = subspace_error(W0, Q)
        better = val < best
        return Q, jnp.where(better, Q, best_Q), jnp.where(better, val, best)

    _, best_Q, _ = jax.lax.fori_loop(0, iters, step, (Q, Q, best))
    return rescale_rows(W0, best_Q)


def reference(
    W0: Float[Array, "m d"], rank: int, key, *, starts: Sequence[tuple[Array, Array]] = (),
    n_random: int = 4, steps: int = 2000, lr: float = 1e-2,
) -> tuple[Array, Array]:
    """Reference solver for small sizes: Adam (optax, cosine-decayed step ``lr``) on the
    closed-form population error ``E|relu(W0 x) - relu(U V^T x)|^2`` over ``(U, V)``, from
    each of ``starts`` (pairs ``(U (m, r), V (d, r))``) and ``n_random`` Gaussian starts,
    keeping the best iterate seen. Returns balanced factors ``(U (m, r), V (d, r))``.
    Cost: ``steps`` gradient evaluations per start (all starts vectorized)."""
    _check_rank(W0, rank)
    if isinstance(n_random, bool) or not isinstance(n_random, int) or n_random < 0:
        raise ValueError(f"n_random must be an integer >= 0, got {n_random!r}.")
    W0 = jnp.asarray(W0)
    m, d = W0.shape
    k = min(m, d)
    pad = lambda A: jnp.pad(jnp.asarray(A, W0.dtype), ((0, 0), (0, k - A.shape[1])))  # noqa: E731
    for U, V in starts:
        if U.shape != (m, rank) or V.shape != (d, rank):
            raise ValueError(f"starts must be pairs (U ({m}, {rank}), V ({d}, {rank})), got "
                             f"{U.shape} and {V.shape}.")
    U0 = [pad(U) for U, _ in starts]
    V0 = [pad(V) for _, V in starts]
    if n_random:
        # random factors with |U V^T|_F about |W0|_F
        scale = jnp.sqrt(jnp.linalg.norm(W0) / math.sqrt(rank * math.sqrt(m * d)))
        kU, kV = jax.random.split(key)
        U0 += list(scale * jax.random.normal(kU, (n_random, m, k), W0.dtype) / m**0.25)
        V0 += list(scale * jax.random.normal(kV, (n_random, d, k), W0.dtype) / d**0.25)
    if not U0:
        raise ValueError("reference needs at least one start: give starts= or n_random >= 1.")
    W = _reference_weight(W0, rank, jnp.stack(U0), jnp.stack(V0), steps, lr)
    return balanced_factors(W, rank)


@functools.partial(jax.jit, static_argnums=(4, 5))
def _reference_weight(W0, rank, U0, V0, steps: int, lr: float):
    import optax

    # columns past ``rank`` are masked out (zero gradient, so Adam never moves them)
    mask = (jnp.arange(U0.shape[-1]) < rank).astype(W0.dtype)
    norm0 = 0.5 * jnp.sum(W0**2)
    opt = optax.adam(optax.cosine_decay_schedule(lr, steps))

    def loss(p):
        return population_error(W0, (p[0] * mask) @ (p[1] * mask).T) / norm0

    def solve(p):
        def step(carry, _):
            p, state, best_p, best = carry
            val, g = jax.value_and_grad(loss)(p)
            better = val < best
            best_p = jax.tree.map(lambda a, b: jnp.where(better, a, b), p, best_p)
            best = jnp.where(better, val, best)
            upd, state = opt.update(g, state, p)
            return (optax.apply_updates(p, upd), state, best_p, best), None

        init = (p, opt.init(p), p, jnp.asarray(jnp.inf, W0.dtype))
        (p, _, best_p, best), _ = jax.lax.scan(step, init, None, length=steps)
        last = loss(p)
        keep = jax.tree.map(lambda a, b: jnp.where(last < best, a, b), p, best_p)
        return keep, jnp.minimum(last, best)

    (Us, Vs), vals = jax.vmap(solve)((U0 * mask, V0 * mask))
    i = jnp.argmin(vals)
    return (Us[i] * mask) @ (Vs[i] * mask).T


def factorize(
    params: TwoLayerParams, rank: int, method: str = "function", *, key=None, **kwargs
) -> LowRankParams:
    """Low-rank parameters from full-rank ones (e.g. ``gflow.init.gaussian``): ``U, V`` by
    ``method`` in :data:`METHODS` from ``params.W`` (``"reference"`` needs ``key``); ``b`` and
    ``a`` are copied. Use with ``LowRankTwoLayer(width, rank, ...)``. The function-space
    objective is that of a ReLU layer without bias, over Gaussian (or uniform-on-sphere)
    inputs, whatever the net's activation and bias."""
    if not isinstance(params, TwoLayerParams):
        raise ValueError(f"params must be a TwoLayerParams, got {type(params).__name__}.")
    if method == "spectral":
        U, V = spectral(params.W, rank, **kwargs)
    elif method == "function":
        U, V = function_space(params.W, rank, **kwargs)
    elif method == "reference":
        if key is None:
            raise ValueError("method='reference' needs key= (a jax.random key).")
        U, V = reference(params.W, rank, key, **kwargs)
    else:
        raise ValueError(f"method={method!r} is unknown; valid values are {list(METHODS)}.")
    return LowRankParams(U=U, V=V, b=params.b, a=params.a)
