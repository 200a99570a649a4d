"""Curvature of the training loss, matrix-free: sharpness, top eigenvalues, spectral density.

Everything here sees the Hessian ``H = d^2 L / d theta^2`` of ``objective.loss`` only
through Hessian-vector products (HVPs), forward-over-reverse: ``jax.linearize`` of
``jax.grad`` on the flattened *trainable* parameters, so the gradient's forward pass is
computed once per call and each HVP costs one linearised pass (about two gradients).
Fixed leaves (``net.trainable(params)`` False, e.g. ``train_outer=False``) are not
directions of ``H``; 0/1 array masks (masked neurons) restrict it to their support.

Eigenvalues come from Lanczos with full reorthogonalisation (a fixed number of
iterations, ``lax.fori_loop``, jittable and vmappable; Golub & Van Loan, *Matrix
Computations*, 4th ed., 10.1), started from a vector drawn from a seed or warm-started
from a given one. JAX's ``lobpcg_standard`` was not chosen: it needs ``5 k < n``, stops on
a tolerance (a variable number of block HVPs per call, which under ``vmap`` runs to the
slowest member), and cannot produce the quadrature nodes that the spectral density needs.

============================  ==================================  =====================
function / observable         returns                             HVPs per call
============================  ==================================  =====================
``top_eigs`` / ``TopEigs``    k largest eigenvalues (descending)  ``iters``
``sharpness`` / ``Sharpness`` largest eigenvalue lambda_1(H)      ``iters``
``hessian_density`` /         stochastic Lanczos quadrature       ``n_v * iters``
``HessianDensity``            (Ritz values and weights; smoothed
                              density on a grid)
``preconditioned_sharpness``  lambda_1(P^-1 H), P diagonal        ``iters``
============================  ==================================  =====================

Registered observables (usable in ``observe=`` of :func:`gflow.simulate`): ``sharpness``
(``Sharpness()``), ``top_eigs`` (``TopEigs()``, 3 eigenvalues, dims ``("eig",)``) and
``hessian_slq`` (``SLQ()``: nodes and weights, shape (2, n_v, iters)); parameterised versions
are the classes themselves, e.g. ``observe=("loss", gflow.curvature.TopEigs(k=5, iters=40))``.

Every k-th save, warm starts: observables are functions of the parameters alone (the
solve passes no save index), so they cannot skip saves inside a solve, and a ``lax.cond``
on a counter would run both branches under ``vmap`` (ensembles) anyway. To evaluate
curvature on a coarser grid, save parameters (``save_params=True``, or a second call on the
coarse grid) and call :func:`top_eigs_along`, which also warm-starts each save's Lanczos
from the previous save's top Ritz vectors, as an in-solve observable cannot.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from . import observe

__all__ = ["SLQ", "HessianDensity", "HessianOperator", "LanczosResult", "Sharpness", "SlqResult",
           "TopEigs", "adam_preconditioner",
           "adam_threshold", "density", "hessian_density", "hessian_operator", "lanczos",
           "preconditioned_sharpness", "sharpness", "slq", "top_eigpairs", "top_eigs",
           "top_eigs_along"]


# -- the operator --------------------------------------------------------------------------


class HessianOperator(NamedTuple):
    """``matvec(v) = H v`` on the ``n`` flattened trainable coordinates; ``mask`` (n,) is
    the 0/1 support of an array trainable mask (``None`` if every coordinate is live)."""

    matvec: object
    n: int
    mask: Float[Array, " n"] | None
    dtype: object


def hessian_operator(objective, params, precond=None) -> HessianOperator:
    """The Hessian of ``objective.loss`` at ``params`` as an HVP on trainable coordinates.

    ``precond``: a pytree like ``params`` holding the positive diagonal of P; then the
    operator is the symmetric ``P^-1/2 H P^-1/2``, which has the eigenvalues of ``P^-1 H``.
    Building it linearises the gradient (one forward and backward pass); each ``matvec``
    is one HVP.
    """
    leaves, treedef = jax.tree.flatten(params)
    masks = treedef.flatten_up_to(objective.net.trainable(params))
    live = [i for i, m in enumerate(masks) if not (isinstance(m, bool) and not m)]
    if not live:
        raise ValueError("the net has no trainable parameters: its Hessian has no directions.")
    shapes = [leaves[i].shape for i in live]
    sizes = [int(np.prod(s)) for s in shapes]
    dtype = jnp.result_type(*[leaves[i] for i in live])

    def flatten(tree_leaves):
        return jnp.concatenate([jnp.ravel(tree_leaves[i]).astype(dtype) for i in live])

    def unravel(x):
        out, parts = list(leaves), jnp.split(x, np.cumsum(sizes)[:-1])
        for i, p, s in zip(live, parts, shapes, strict=True):
            out[i] = p.reshape(s).astype(leaves[i].dtype)
        return jax.tree.unflatten(treedef, out)

    mask = None
    if any(not isinstance(masks[i], bool) for i in live):
        mask = flatten([jnp.broadcast_to(jnp.asarray(m, dtype), x.shape)
                        for m, x in zip(masks, leaves, strict=True)])
        mask = (mask != 0).astype(dtype)
    scale = mask
    if precond is not None:
        scale = jax.lax.rsqrt(flatten(treedef.flatten_up_to(precond)))
        scale = scale if mask is None else scale * mask
    _, lin = jax.linearize(jax.grad(lambda x: objective.loss(unravel(x))), flatten(leaves))

    def matvec(v):
        return lin(v) if scale is None else scale * lin(scale * v)

    return HessianOperator(matvec, sum(sizes), mask, dtype)


# -- Lanczos -------------------------------------------------------------------------------


class LanczosResult(NamedTuple):
    """Tridiagonal ``T`` (``alpha`` (k,), ``beta`` (k - 1,)) and basis ``V`` (k, n)."""

    alpha: Float[Array, " k"]
    beta: Float[Array, " km1"]
    V: Float[Array, "k n"]


def _orth(w, V):
    """``w`` minus its projection on the rows of ``V``, twice ("twice is enough")."""
    w = w - V.T @ (V @ w)
    return w - V.T @ (V @ w)


def lanczos(matvec, v0: Float[Array, " n"], iters: int, *, key=None,
            mask=None) -> LanczosResult:
    """``iters`` Lanczos steps with full reorthogonalisation: ``iters`` calls of ``matvec``.

    ``v0`` need not be normalised. On breakdown (an invariant subspace found, ``beta`` at
    rounding level) the next vector is a fresh random one (from ``key``, restricted to
    ``mask``) orthogonal to the basis, with ``beta = 0``, so ``T`` splits into blocks whose
    eigenvalues are still eigenvalues of the operator (and get zero quadrature weight).
    ``iters`` must be at most ``n``; once the basis spans the space (fewer live directions
    than ``iters`` under a mask) the remaining rows of ``V`` are zero, as are their entries
    of ``T``.
    """
    n = v0.shape[0]
    if not 1 <= iters <= n:
        raise ValueError(f"iters must be between 1 and the number of directions n={n}, "
                         f"got {iters}.")
    key = jax.random.key(0) if key is None else key
    eps = jnp.finfo(v0.dtype).eps
    V = jnp.zeros((iters, n), v0.dtype).at[0].set(v0 / jnp.linalg.norm(v0))
    alpha, beta = jnp.zeros(iters, v0.dtype), jnp.zeros(iters, v0.dtype)

    def body(j, c):
        V, alpha, beta, scale = c
        v = V[j]
        w = matvec(v)
        a = jnp.dot(v, w)
        w = _orth(w - a * v, V)
        b = jnp.linalg.norm(w)
        scale = jnp.maximum(scale, jnp.abs(a) + b)
        broke = b <= 100 * eps * scale

        def fresh(_):  # zero once the basis spans the whole (masked) space
            r = jax.random.normal(jax.random.fold_in(key, j), (n,), v0.dtype)
            r = r if mask is None else r * mask
            r0, r = jnp.linalg.norm(r), _orth(r, V)
            rn = jnp.linalg.norm(r)
            return jnp.where(rn > 1e-3 * r0, r / jnp.where(rn > 0, rn, 1.0), 0.0)

        nxt = jax.lax.cond(broke, fresh, lambda _: w / jnp.where(broke, 1.0, b), None)
        V = jnp.where(j + 1 < iters, V.at[jnp.minimum(j + 1, iters - 1)].set(nxt), V)
        return V, alpha.at[j].set(a), beta.at[j].set(jnp.where(broke, 0.0, b)), scale

    V, alpha, beta, _ = jax.lax.fori_loop(0, iters, body,
                                          (V, alpha, beta, jnp.zeros((), v0.dtype)))
    return LanczosResult(alpha, beta[:-1], V)


def _ritz(res: LanczosResult):
    """Eigenvalues (ascending) and eigenvectors of the tridiagonal ``T``."""
    T = jnp.diag(res.alpha) + jnp.diag(res.beta, 1) + jnp.diag(res.beta, -1)
    return jnp.linalg.eigh(T)


def _start(op: HessianOperator, seed, v0=None):
    if v0 is None:
        v0 = jax.random.normal(jax.random.key(seed), (op.n,), op.dtype)
    return v0 if op.mask is None else v0 * op.mask


def top_eigpairs(op: HessianOperator, k: int, iters: int, seed: int = 0, v0=None):
    """``(values (k,), vectors (n, k))``: the ``k`` largest Ritz pairs of ``iters`` Lanczos
    steps on ``op`` (``iters`` HVPs, capped at ``op.n``), descending, vectors unit-norm on
    the flattened trainable coordinates; pairs beyond the live directions have value NaN.
    ``v0``: a start vector (warm start), else one drawn from ``seed``."""
    iters = min(iters, op.n)
    if not 1 <= k <= iters:
        raise ValueError(f"k must be between 1 and iters={iters} (at most the number of "
                         f"trainable directions), got {k}.")
    res = lanczos(op.matvec, _start(op, seed, v0), iters, key=jax.random.key(seed + 1),
                  mask=op.mask)
    evals, evecs = _ritz(res)
    vecs = res.V.T @ evecs
    # Ritz pairs of the zero rows of V (the basis spanned the live space) are not eigenpairs
    real = jnp.linalg.norm(vecs, axis=0) > 0.5
    order = jnp.argsort(jnp.where(real, evals, -jnp.inf))[::-1][:k]
    return jnp.where(real[order], evals[order], jnp.nan), vecs[:, order]


@eqx.filter_jit
def top_eigs(objective, params, k: int = 3, *, iters: int = 30, seed: int = 0,
             v0=None) -> Float[Array, " k"]:
    """The ``k`` largest (algebraic) eigenvalues of the Hessian of the training loss,
    descending, as Ritz values of ``iters`` Lanczos steps: ``iters`` HVPs (plus one
    gradient's linearisation). ``iters`` is capped at the number of trainable directions
    ``n``; at ``iters = n`` the result is exact up to rounding; eigenvalues beyond the number
    of live directions (under a neuron mask) are NaN. ``v0``: a start vector on the
    flattened trainable coordinates (warm start); otherwise one drawn from ``seed``."""
    return top_eigpairs(hessian_operator(objective, params), k, iters, seed, v0)[0]


@eqx.filter_jit
def sharpness(objective, params, *, iters: int = 20, seed: int = 0) -> Float[Array, ""]:
    """The sharpness lambda_1(H), the largest Hessian eigenvalue: ``iters`` HVPs."""
    return top_eigs(objective, params, 1, iters=iters, seed=seed)[0]


@eqx.filter_jit
def preconditioned_sharpness(objective, params, precond, *, iters: int = 20,
                             seed: int = 0) -> Float[Array, ""]:
    """lambda_1(P^-1 H) for the diagonal preconditioner ``P = diag(precond)`` (a pytree
    like ``params``, positive entries), computed as the top eigenvalue of the symmetric
    ``P^-1/2 H P^-1/2``: ``iters`` HVPs. For Adam, ``precond = adam_preconditioner(...)``
    and the stability threshold is :func:`adam_threshold`."""
    return top_eigpairs(hessian_operator(objective, params, precond), 1, iters, seed)[0][0]


def adam_preconditioner(opt_state, *, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
    """Adam's diagonal preconditioner ``P_t = (1 - b1^t) (sqrt(nu_t / (1 - b2^t)) + eps)``
    from an optax state holding a ``ScaleByAdamState`` (count ``t``, second moment
    ``nu_t``), so that the step optax takes is ``theta <- theta - lr P_t^-1 mu_t``:
    Adam as EMA momentum preconditioned by ``P_t``, the form in which Cohen et al.,
    "Adaptive gradient methods at the edge of stability" (2022, arXiv 2207.14484) study
    the preconditioned sharpness lambda_1(P_t^-1 H). Pass the same ``b1, b2, eps`` as to
    ``optax.adam``."""
    import optax

    found = [s for s in jax.tree.leaves(
        opt_state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
        if isinstance(s, optax.ScaleByAdamState)]
    if len(found) != 1:
        raise ValueError("opt_state must hold exactly one optax ScaleByAdamState (the state "
                         f"of optax.adam / adamw), found {len(found)}.")
    t = found[0].count.astype(jnp.result_type(float))
    return jax.tree.map(lambda nu: (1 - b1**t) * (jnp.sqrt(nu / (1 - b2**t)) + eps),
                        found[0].nu)


def adam_threshold(lr: float, b1: float = 0.9) -> float:
    """The stability threshold ``(2 + 2 b1) / ((1 - b1) lr)`` of lambda_1(P^-1 H) for
    EMA momentum with a frozen preconditioner ``P`` (Cohen et al. 2022; 38/lr at
    ``b1 = 0.9``): on a quadratic the iterates diverge above it and converge below."""
    return (2 + 2 * b1) / ((1 - b1) * lr)


# -- stochastic Lanczos quadrature ---------------------------------------------------------


class SlqResult(NamedTuple):
    """Quadrature nodes (Ritz values) and weights (n_v, iters), each probe's weights summing
    to 1, and the smoothed density on ``grid`` (``None`` if no grid was asked for)."""

    nodes: Float[Array, "nv k"]
    weights: Float[Array, "nv k"]
    grid: Float[Array, " g"] | None = None
    density: Float[Array, " g"] | None = None


def slq(matvec, n: int, *, n_v: int, iters: int, key, mask=None,
        dtype=None) -> tuple[Array, Array]:
    """Nodes and weights of stochastic Lanczos quadrature (Ubaru, Chen & Saad, SIMAX 2017;
    Ghorbani, Krishnan & Xiao, ICML 2019) for the spectral measure ``(1/n) sum_j
    delta(lambda_j)`` of a symmetric operator: Lanczos from ``n_v`` Rademacher probes (on
    ``mask``'s support), ``iters`` steps each; node ``theta_i`` has weight ``(e_1^T y_i)^2``,
    ``y_i`` the i-th eigenvector of ``T``. ``n_v * iters`` calls of ``matvec``. Every
    probe's quadrature matches the moments ``v^T A^p v`` for ``p <= 2 iters - 1``."""
    iters = min(iters, n)
    keys = jax.random.split(key, 2 * n_v)

    def one(kp, kr):
        v = jax.random.rademacher(kp, (n,), dtype or jnp.result_type(float))
        v = v if mask is None else v * mask
        evals, evecs = _ritz(lanczos(matvec, v, iters, key=kr, mask=mask))
        return evals, evecs[0] ** 2

    return jax.lax.map(lambda k: one(k[0], k[1]), keys.reshape(n_v, 2))


def density(nodes, weights, grid, sigma=None) -> Float[Array, "... g"]:
    """The Gaussian-smoothed density ``(1/n_v) sum_{l,i} w_li N(t; theta_li, sigma^2)`` on
    ``grid`` (g,), from nodes and weights (..., n_v, k) (leading axes, e.g. time, kept).
    ``sigma`` defaults to two grid spacings."""
    grid = jnp.asarray(grid)
    sigma = 2 * (grid[-1] - grid[0]) / (grid.shape[0] - 1) if sigma is None else sigma
    z = (grid - nodes[..., None]) / sigma
    g = jnp.exp(-0.5 * z**2) / (sigma * jnp.sqrt(2 * jnp.pi))
    return jnp.mean(jnp.sum(weights[..., None] * g, axis=-2), axis=-2)


@eqx.filter_jit
def hessian_density(objective, params, *, grid=None, sigma=None, n_v: int = 4,
                    iters: int = 30, seed: int = 0) -> SlqResult:
    """The Hessian's spectral density by stochastic Lanczos quadrature: ``n_v * iters``
    HVPs. ``grid``: points (g,) at which to smooth it, or an int (that many points spanning
    the nodes with 3 sigma to spare; sigma then defaults to 1/100 of the node range), or
    ``None`` (nodes and weights only)."""
    op = hessian_operator(objective, params)
    nodes, weights = slq(op.matvec, op.n, n_v=n_v, iters=iters, key=jax.random.key(seed),
                         mask=op.mask, dtype=op.dtype)
    if grid is None:
        return SlqResult(nodes, weights)
    if isinstance(grid, int):
        lo, hi = jnp.min(nodes), jnp.max(nodes)
        sigma = 0.01 * jnp.maximum(hi - lo, 1e-12) if sigma is None else sigma
        grid = jnp.linspace(lo - 3 * sigma, hi + 3 * sigma, grid)
    return SlqResult(nodes, weights, grid, density(nodes, weights, grid, sigma))


# -- along a trajectory --------------------------------------------------------------------


@eqx.filter_jit
def top_eigs_along(objective, params, k: int = 1, *, iters: int = 20, every: int = 1,
                   warm: bool = True, seed: int = 0) -> Float[Array, "s k"]:
    """Top ``k`` Hessian eigenvalues at every ``every``-th of the saved parameters
    (``traj.params`` of a run with ``save_params=True``: leaves with a leading save axis).
    With ``warm=True`` each save's Lanczos starts from the sum of the previous save's top
    ``k`` Ritz vectors, so fewer iterations reach a given accuracy when the parameters move
    little between saves. ``iters`` HVPs per evaluated save (``lax.scan``, one program)."""
    params = jax.tree.map(lambda x: jnp.asarray(x)[::every], params)
    op0 = hessian_operator(objective, jax.tree.map(lambda x: x[0], params))

    def step(v, p):
        op = hessian_operator(objective, p)
        vals, vecs = top_eigpairs(op, k, iters, seed, v if warm else None)
        return jnp.sum(vecs, axis=1), vals

    v0 = _start(op0, seed)
    return jax.lax.scan(step, v0, params)[1]


# -- observables ---------------------------------------------------------------------------


def _check(name, v, lo=1):
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < lo:
        raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}.")
    return int(v)


class _TopEigsFn(eqx.Module):
    k: int = eqx.field(static=True)
    iters: int = eqx.field(static=True)
    seed: int = eqx.field(static=True)
    single: bool = eqx.field(static=True)

    @property
    def __name__(self):  # the observable's default name in observe=
        return "sharpness" if self.single else "top_eigs"

    def __call__(self, params, ctx):
        vals = top_eigs(ctx.objective, params, self.k, iters=self.iters, seed=self.seed)
        return vals[0] if self.single else vals


class _SlqFn(eqx.Module):
    n_v: int = eqx.field(static=True)
    iters: int = eqx.field(static=True)
    seed: int = eqx.field(static=True)
    grid: tuple | None = eqx.field(static=True)
    sigma: float | None = eqx.field(static=True)

    @property
    def __name__(self):
        return "hessian_slq" if self.grid is None else "hessian_density"

    def __call__(self, params, ctx):
        r = hessian_density(ctx.objective, params, n_v=self.n_v, iters=self.iters,
                            seed=self.seed,
                            grid=None if self.grid is None else jnp.asarray(self.grid),
                            sigma=self.sigma)
        return jnp.stack([r.nodes, r.weights]) if self.grid is None else r.density


def TopEigs(k: int = 3, iters: int = 30, seed: int = 0) -> observe.Observable:
    """Observable: the ``k`` largest Hessian eigenvalues, shape (k,), dims ``("eig",)``;
    ``iters`` HVPs per save."""
    k, iters = _check("k", k), _check("iters", iters)
    if k > iters:
        raise ValueError(f"k={k} needs iters >= k, got iters={iters}.")
    return observe.Observable(_TopEigsFn(k, iters, _check("seed", seed, 0), False),
                              dims=("eig",))


def Sharpness(iters: int = 20, seed: int = 0) -> observe.Observable:
    """Observable: the sharpness lambda_1(H), a scalar; ``iters`` HVPs per save."""
    return observe.Observable(_TopEigsFn(1, _check("iters", iters), _check("seed", seed, 0),
                                         True))


def SLQ(n_v: int = 4, iters: int = 30, seed: int = 0) -> observe.Observable:
    """Observable: SLQ nodes and weights stacked, shape (2, n_v, iters), dims
    ``("slq", "probe", "node")`` (``[0]`` nodes, ``[1]`` weights; smooth them on any grid
    afterwards with :func:`density`); ``n_v * iters`` HVPs per save."""
    return observe.Observable(_SlqFn(_check("n_v", n_v), _check("iters", iters),
                                     _check("seed", seed, 0), None, None),
                              dims=("slq", "probe", "node"))


def HessianDensity(grid, sigma: float | None = None, n_v: int = 4, iters: int = 30,
                   seed: int = 0) -> observe.Observable:
    """Observable: the smoothed Hessian density on a fixed ``grid`` (g,), dims
    ``("eigenvalue",)``; ``n_v * iters`` HVPs per save. ``sigma``: see :func:`density`."""
    grid = np.asarray(grid, dtype=float)
    if grid.ndim != 1 or grid.size < 2 or not np.all(np.diff(grid) > 0):
        raise ValueError("grid must be an increasing 1-d array of at least 2 points, "
                         f"got shape {grid.shape}.")
    if sigma is not None and not float(sigma) > 0:
        raise ValueError(f"sigma must be > 0, got {sigma!r}.")
    return observe.Observable(
        _SlqFn(_check("n_v", n_v), _check("iters", iters), _check("seed", seed, 0),
               tuple(grid.tolist()), None if sigma is None else float(sigma)),
        dims=("eigenvalue",))


#: the observables by name, registered by ``import gflow`` (:func:`gflow.observe.register_table`)
OBSERVABLES = {"sharpness": Sharpness(), "top_eigs": TopEigs(), "hessian_slq": SLQ()}
