"""The certified grid solver of the ReLU low-rank approximation problem (gflow.lowrank_grid)
against cases with a known optimum and against the other methods of gflow.lowrank.

Setting: Vodrahalli et al., "Nonlinear Initialization Methods for Low-Rank Neural
Networks", arXiv 2202.00834.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gflow import lowrank
from gflow import lowrank_grid as G


def _err(W0, UV):
    return float(lowrank.population_error(W0, UV[0] @ UV[1].T))


def test_graph_chart_projector_is_1_lipschitz():
    """Step (2) of the certificate: |P_B - P_B'|_2 <= |B - B'|_2 for S = span [I; B], on 3000
    random pairs of every shape d <= 6 (B at three scales, perturbations at three sizes)."""
    rng = np.random.default_rng(0)

    def proj(B):
        Y = np.vstack([np.eye(B.shape[1]), B])
        return Y @ np.linalg.solve(Y.T @ Y, Y.T)

    worst = 0.0
    for _ in range(3000):
        d = int(rng.integers(2, 7))
        r = int(rng.integers(1, d))
        B = rng.uniform(-1, 1, (d - r, r)) * rng.choice([0.1, 1.0, 3.0])
        E = rng.normal(size=B.shape) * rng.choice([1e-3, 0.1, 1.0])
        worst = max(worst, np.linalg.norm(proj(B) - proj(B + E), 2) / np.linalg.norm(E, 2))
    assert worst <= 1.0 + 1e-9


M, D = 6, 3  # one shape for every solver call below: one compilation each


def test_known_optima(x64):
    """W0 of rank r: error 0 (on the grid: exactly; off the grid: within the certificate,
    and 0 after the polish); r = full rank: every method gives W0; d = 1 likewise."""
    ks = jax.random.split(jax.random.key(0), 3)
    # row space span(1, 0.4, -0.6)^T: a grid point of the chart I = {0} (grid step 0.2)
    on_grid = jax.random.normal(ks[0], (M, 1)) @ jnp.array([[1.0, 0.4, -0.6]])
    Q, e = G.grid_subspace(on_grid, 1, points=11)
    assert abs(e) < 1e-12 * float(jnp.sum(on_grid**2))
    np.testing.assert_allclose(lowrank.rescale_rows(on_grid, Q), on_grid, atol=1e-12)
    off = jax.random.normal(ks[1], (M, 2)) @ jax.random.normal(ks[2], (2, D))  # rank 2
    scale = float(jnp.sum(off**2))
    assert _err(off, G.grid_search(off, 2, points=11)) <= G.grid_bound(off, 2, 11)
    assert _err(off, G.grid_search(off, 2, points=11, polish_steps=500)) < 1e-6 * scale
    W0 = jax.random.normal(ks[0], (M, D))
    for fac in (G.grid_search(W0, D, points=11), lowrank.spectral(W0, D),
                lowrank.function_space(W0, D),
                lowrank.reference(W0, D, ks[1], starts=[lowrank.spectral(W0, D)], n_random=0,
                                  steps=500)):
        np.testing.assert_allclose(fac[0] @ fac[1].T, W0, atol=1e-8)
    w = jax.random.normal(ks[2], (4, 1))
    for fac in (G.grid_search(w, 1), lowrank.spectral(w, 1), lowrank.function_space(w, 1)):
        np.testing.assert_allclose(fac[0] @ fac[1].T, w, atol=1e-12)


def _kappa(rho):  # the arc-cosine kernel of degree 1, written out again (numpy)
    return (np.sqrt(1 - rho**2) + (np.pi - np.arccos(rho)) * rho) / (2 * np.pi)


def test_certificate_against_a_fine_search(x64):
    """d = 2, r = 1: the global minimum over 200001 angles (numpy, its own mesh error below
    |W0|_F^2 * pi / 200000) lies within the certificate below the 21-point grid, and at or
    below every method."""
    W0 = np.asarray(jax.random.normal(jax.random.key(5), (7, 2)))
    th = np.linspace(0.0, np.pi, 200001)
    n0sq = np.sum(W0**2, 1)
    rho = np.abs(W0 @ np.stack([np.cos(th), np.sin(th)])) / np.sqrt(n0sq)[:, None]
    e_star = float(np.min(np.sum(n0sq[:, None] * (0.5 - 2 * _kappa(np.minimum(rho, 1)) ** 2), 0)))
    W0 = jnp.asarray(W0)
    e_grid = _err(W0, G.grid_search(W0, 1, points=21))
    slack = float(jnp.sum(W0**2)) * (math.pi / 200000)
    assert e_star - slack <= e_grid <= e_star + G.grid_bound(W0, 1, 21)
    for fac in (lowrank.spectral(W0, 1), lowrank.function_space(W0, 1)):
        assert _err(W0, fac) >= e_star - slack


@pytest.mark.parametrize("r", [1, 2])
def test_methods_against_each_other(x64, r):
    """Random Gaussian W0 (6, 3): function-space <= spectral; the unpolished grid within its
    certificate of every method; the polished grid at or below all of them (1e-9 relative:
    Adam keeps its best iterate, which starts at the grid point)."""
    for seed in range(3):
        W0 = jax.random.normal(jax.random.key(seed), (M, D))
        scale = float(jnp.sum(W0**2))
        sp, fs = _err(W0, lowrank.spectral(W0, r)), _err(W0, lowrank.function_space(W0, r))
        ref = _err(W0, lowrank.reference(W0, r, jax.random.key(seed),
                                         starts=[lowrank.spectral(W0, r)], n_random=0,
                                         steps=500))
        grid = _err(W0, G.grid_search(W0, r, points=11))
        polished = _err(W0, G.grid_search(W0, r, points=11, polish_steps=500))
        assert fs <= sp + 1e-12 * scale
        assert grid <= min(sp, fs, ref) + G.grid_bound(W0, r, 11)
        assert polished <= min(grid, sp, fs, ref) + 1e-9 * scale


def test_grid_validation():
    W0 = jnp.ones((4, 3))
    with pytest.raises(ValueError, match="points"):
        G.grid_search(W0, 1, points=1)
    with pytest.raises(ValueError, match="rank"):
        G.grid_search(W0, 4)
    with pytest.raises(ValueError, match="max_subspaces"):
        G.grid_search(jnp.ones((12, 10)), 3, points=21)
    assert G.grid_size(4, 2, 11) == 6 * 11**4
