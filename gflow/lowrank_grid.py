r"""A certified solver of the ReLU low-rank approximation problem at small ``d`` and ``r``.

The problem (Vodrahalli et al., arXiv 2202.00834): given ``W0`` (m, d), minimize
``e(W) = E_x |relu(W0 x) - relu(W x)|^2`` over rank-r ``W``, ``x ~ N(0, I_d)``.

This is **not** the paper's provable fixed-rank algorithm (its statement is not reproduced
here); it is an exhaustive search that plays the same role at small sizes, built on the exact
reduction of :mod:`gflow.lowrank`: the best rank-r ``W`` is the best r-dimensional row space
``S`` with every row rescaled optimally, so ``min_W e(W) = min_S e(S)``,
``e(S) = sum_i |w0_i|^2 (1/2 - 2 kappa(rho_i)^2)``, ``rho_i = |P_S w0_i| / |w0_i|``
(:func:`gflow.lowrank.subspace_error`). The search covers the Grassmannian ``Gr(r, d)``
with charts: for each set ``I`` of r pivot coordinates, ``S = span [I_r; B]`` (rows of ``I``
first) with ``B`` ((d - r), r) on the grid ``linspace(-1, 1, points)`` in every entry.

**Certificate.** (1) Every ``S`` has a chart with all ``|B_ij| <= 1`` (pivot rows of maximal
volume, Cramer's rule). (2) Its nearest grid point ``B'`` has ``|B - B'|_F <= delta =
sqrt(r (d - r)) / (points - 1)``, and ``|P_B - P_B'|_2 <= |B - B'|_2`` (graph charts;
checked numerically in the tests). (3) ``|rho_i(S) - rho_i(S')| <= |P - P'|_2`` and
``d(2 kappa^2)/d rho = 4 kappa kappa' <= 1`` on [0, 1]. Hence the best grid subspace has
``e <= e* + |W0|_F^2 min(delta, 1)`` (:func:`grid_bound`). Cost: ``C(d, r) points^(r (d - r))``
evaluations of ``O(m d r)``: polynomial in ``m`` for fixed ``d`` and ``r``, exponential in
``r (d - r)``; meant for ``d <= 5``. An optional polish (Adam on the closed-form error from the
best grid point, :func:`gflow.lowrank.reference`) can only lower the error further.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from . import lowrank
from .kernels import kappa

__all__ = ["all_methods", "grid_bound", "grid_search", "grid_size", "grid_subspace"]

#: default cap on the number of subspaces evaluated
MAX_SUBSPACES = 2_000_000


def grid_size(d: int, rank: int, points: int) -> int:
    """Number of subspaces the grid evaluates: ``C(d, r) points^(r (d - r))``."""
    return math.comb(d, rank) * points ** (rank * (d - rank))


def grid_bound(W0: Float[Array, "m d"], rank: int, points: int) -> float:
    """Certified additive bound on ``e(grid) - min e``: ``|W0|_F^2 min(1, sqrt(r (d - r)) /
    (points - 1))`` (population error, Gaussian inputs; see the module docstring)."""
    d = W0.shape[1]
    delta = math.sqrt(rank * (d - rank)) / (points - 1)
    return float(jnp.sum(jnp.asarray(W0) ** 2)) * min(1.0, delta)


@jax.jit
def _chart_errors(A, C, Bs):
    """``e(S)`` for ``S = span [I; B]``: ``A = W0[:, I]`` (m, r), ``C = W0[:, I^c]``
    (m, d - r), ``Bs`` (k, d - r, r)."""
    n0sq = jnp.sum(A**2, -1) + jnp.sum(C**2, -1)
    safe = jnp.where(n0sq > 0, n0sq, 1.0)
    eye = jnp.eye(A.shape[1], dtype=A.dtype)

    def one(B):
        WY = A + C @ B  # W0 Y, Y = [I; B]
        G = eye + B.T @ B  # Y^T Y
        npsq = jnp.sum(WY * jnp.linalg.solve(G, WY.T).T, -1)  # |P w0_i|^2
        rho = jnp.sqrt(jnp.clip(npsq / safe, 0.0, 1.0))
        return jnp.sum(n0sq * (0.5 - 2.0 * kappa(rho) ** 2))

    return jax.lax.map(one, Bs, batch_size=2048)


def _check(W0, rank, points, max_subspaces):
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ValueError(f"points must be an integer >= 2 (grid points per entry), got "
                         f"{points!r}.")
    d = W0.shape[1]
    n = grid_size(d, rank, points)
    if n > max_subspaces:
        raise ValueError(
            f"the grid has C({d}, {rank}) * {points}^{rank * (d - rank)} = {n} subspaces, over "
            f"max_subspaces={max_subspaces}; lower points, or use lowrank.function_space / "
            "lowrank.reference at this size.")


def grid_subspace(
    W0: Float[Array, "m d"], rank: int, *, points: int = 21, max_subspaces: int = MAX_SUBSPACES
) -> tuple[Array, float]:
    """The best grid subspace: its orthonormal basis ``Q`` (d, r) and population error
    ``e(S)`` (within :func:`grid_bound` of the global minimum over rank-r weights)."""
    W0 = jnp.asarray(W0)
    if W0.ndim != 2:
        raise ValueError(f"W0 must have shape (m, d), got {tuple(W0.shape)}.")
    m, d = W0.shape
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= min(m, d):
        raise ValueError(f"rank must be an integer in [1, min(m, d)={min(m, d)}], got {rank!r}.")
    _check(W0, rank, points, max_subspaces)
    k = rank * (d - rank)
    axis = np.linspace(-1.0, 1.0, points)
    grid = np.array(list(itertools.product(axis, repeat=k)), float).reshape(
        points**k, d - rank, rank)
    grid = jnp.asarray(grid, W0.dtype)
    best = (np.inf, None)
    for piv in itertools.combinations(range(d), rank):
        rest = [j for j in range(d) if j not in piv]
        errs = np.asarray(_chart_errors(W0[:, list(piv)], W0[:, rest], grid))
        j = int(np.argmin(errs))
        if errs[j] < best[0]:
            Y = np.zeros((d, rank))
            Y[list(piv)] = np.eye(rank)
            Y[rest] = np.asarray(grid[j])
            best = (float(errs[j]), Y)
    Q = jnp.asarray(np.linalg.qr(best[1])[0], W0.dtype)
    return Q, best[0]


def grid_search(
    W0: Float[Array, "m d"], rank: int, *, points: int = 21, polish_steps: int = 0,
    max_subspaces: int = MAX_SUBSPACES,
) -> tuple[Array, Array]:
    """Certified grid solver (see the module docstring): the best grid subspace, rows
    rescaled optimally, then (``polish_steps > 0``) Adam on the closed-form error from there,
    keeping the best. Returns balanced factors ``(U (m, r), V (d, r))``; their population error
    is within :func:`grid_bound` of the minimum over rank-r weights."""
    Q, _ = grid_subspace(W0, rank, points=points, max_subspaces=max_subspaces)
    W = lowrank.rescale_rows(jnp.asarray(W0), Q)
    start = lowrank.balanced_factors(W, rank)
    if polish_steps:
        return lowrank.reference(W0, rank, jax.random.key(0), starts=[start], n_random=0,
                                 steps=polish_steps)
    return start


def all_methods(
    W0: Float[Array, "m d"], rank: int, key, *, iters: int = 10, ref_max_d: int = 4,
    ref_starts: int = 2, ref_steps: int = 1000, grid_max_d: int = 4, grid_points: int = 11,
) -> dict:
    """Rank-r factors ``(U, V)`` of ``W0`` by every method, keyed by name: ``spectral``,
    ``function`` (:func:`gflow.lowrank.function_space` with ``iters``),
    ``function_svd_subspace`` (``iters=0``), ``reference`` (Adam from the spectral, the
    function-space and ``ref_starts`` random starts; only if ``d <= ref_max_d``) and ``grid``
    (:func:`grid_search`, polished with ``ref_steps`` Adam steps; only if ``d <= grid_max_d``)."""
    d = W0.shape[1]
    fac = {"spectral": lowrank.spectral(W0, rank),
           "function": lowrank.function_space(W0, rank, iters=iters),
           "function_svd_subspace": lowrank.function_space(W0, rank, iters=0)}
    if d <= ref_max_d:
        fac["reference"] = lowrank.reference(
            W0, rank, key, starts=[fac["spectral"], fac["function"]], n_random=ref_starts,
            steps=ref_steps)
    if d <= grid_max_d:
        fac["grid"] = grid_search(W0, rank, points=grid_points, polish_steps=ref_steps)
    return fac
