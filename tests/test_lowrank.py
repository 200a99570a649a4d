"""Low-rank nets and spectral / function-space initialization (gflow.lowrank).

Setting: Vodrahalli et al., "Nonlinear Initialization Methods for Low-Rank Neural
Networks", arXiv 2202.00834.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import RTOL

import gflow
from gflow import lowrank


def _W0(seed, m, d):
    return jax.random.normal(jax.random.key(seed), (m, d), dtype=jnp.result_type(float))


# ----------------------------------------------------------------------------- the net
@pytest.mark.parametrize("scaling,bias", [("ntk", False), ("mean_field", True),
                                          ("standard", True)])
def test_lowrank_equals_twolayer_with_product_weight(dtype, bias, scaling):
    m, d, r = 7, 5, 2
    ks = jax.random.split(jax.random.key(0), 5)
    f = jnp.result_type(float)
    p = lowrank.LowRankParams(
        U=jax.random.normal(ks[0], (m, r), f), V=jax.random.normal(ks[1], (d, r), f),
        b=jax.random.normal(ks[2], (m,), f) if bias else None, a=jax.random.normal(ks[3], (m,), f))
    X = jax.random.normal(ks[4], (11, d), f)
    net = gflow.LowRankTwoLayer(m, r, "relu", scaling=scaling, bias=bias)
    full = gflow.TwoLayer(m, "relu", scaling=scaling, bias=bias)
    W = p.U @ p.V.T
    want = full.apply(gflow.TwoLayerParams(W=W, b=p.b, a=p.a), X)
    got = net.apply(p, X)
    assert got.shape == (11,) and got.dtype == f
    np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=RTOL[dtype])
    np.testing.assert_allclose(full.apply(net.to_full(p), X), want, rtol=RTOL[dtype])
    net.check_params(p, d=d)


def test_lowrank_validation():
    with pytest.raises(ValueError, match="rank"):
        gflow.LowRankTwoLayer(4, 0)
    with pytest.raises(ValueError, match="width"):
        gflow.LowRankTwoLayer(True, 1)
    with pytest.raises(ValueError, match="scaling"):
        gflow.LowRankTwoLayer(4, 1, scaling="xavier")
    net = gflow.LowRankTwoLayer(4, 2)
    good = lowrank.LowRankParams(U=jnp.ones((4, 2)), V=jnp.ones((3, 2)), b=None, a=jnp.ones(4))
    net.check_params(good, d=3)
    with pytest.raises(ValueError, match="d=3"):
        net.check_params(good, d=5)
    with pytest.raises(ValueError, match="params.U"):
        net.check_params(lowrank.LowRankParams(U=jnp.ones((4, 3)), V=jnp.ones((3, 2)), b=None,
                                               a=jnp.ones(4)))
    with pytest.raises(ValueError, match="bias"):
        net.check_params(lowrank.LowRankParams(U=jnp.ones((4, 2)), V=jnp.ones((3, 2)),
                                               b=jnp.ones(4), a=jnp.ones(4)))
    with pytest.raises(ValueError, match="LowRankParams"):
        net.check_params(gflow.TwoLayerParams(W=jnp.ones((4, 3)), b=None, a=jnp.ones(4)))
    with pytest.raises(ValueError, match="rank"):
        lowrank.spectral(jnp.ones((4, 3)), 4)
    with pytest.raises(ValueError, match="method"):
        lowrank.factorize(gflow.TwoLayerParams(W=jnp.ones((4, 3)), b=None, a=jnp.ones(4)), 1,
                          "svd")


def test_simulate_trains_lowrank_net_and_respects_train_outer():
    """gflow.simulate trains the net unchanged: GD lowers the loss; a frozen ``a`` stays."""
    k_data, k_init = jax.random.split(jax.random.key(3))
    data = gflow.data.teacher(k_data, 40, 6, 2)
    net = gflow.LowRankTwoLayer(16, 2, train_outer=False)
    p0 = lowrank.factorize(gflow.init.gaussian(k_init, gflow.TwoLayer(16), 6), 2, "function")
    tr = gflow.simulate(net, p0, data, dynamics=gflow.GD(lr=0.2), t1=20.0,
                        save=gflow.LinTimes(3))
    assert tr["loss"][-1] < 0.9 * tr["loss"][0]
    pf = tr.params_final
    assert not np.allclose(pf.U, p0.U) and not np.allclose(pf.V, p0.V)
    assert np.array_equal(np.asarray(pf.a), np.asarray(p0.a))
    assert gflow.LowRankTwoLayer(16, 2).trainable(p0) == lowrank.LowRankParams(
        U=True, V=True, b=None, a=True)


# --------------------------------------------------------------------- the ReLU kernel
def test_kappa_special_values_and_derivative(x64):
    np.testing.assert_allclose(gflow.kernels.kappa(jnp.array([1.0, 0.0, -1.0])),
                               [0.5, 1 / (2 * math.pi), 0.0], atol=1e-15)
    # Hermite expansion 1/(2 pi) + rho/4 + rho^2/(4 pi) + rho^4/(48 pi) + O(rho^6)
    rho = 0.05
    series = 1 / (2 * math.pi) + rho / 4 + rho**2 / (4 * math.pi) + rho**4 / (48 * math.pi)
    assert abs(float(gflow.kernels.kappa(rho)) - series) < rho**6  # next coefficient is < 1
    # custom derivative vs central finite differences (h = 1e-6: error O(h^2) ~ 1e-12)
    for r in (-0.7, 0.0, 0.3, 0.99):
        fd = (gflow.kernels.kappa(r + 1e-6) - gflow.kernels.kappa(r - 1e-6)) / 2e-6
        np.testing.assert_allclose(jax.grad(gflow.kernels.kappa)(r), fd, rtol=1e-7)
    assert np.isfinite(jax.grad(gflow.kernels.kappa)(1.0))  # 1.0 where arccos' would be infinite


def test_relu_kernel_matches_monte_carlo(x64):
    """Closed form vs a Monte-Carlo mean over 2e5 Gaussian inputs: |diff| < 5 standard errors."""
    d, n = 6, 200_000
    ks = jax.random.split(jax.random.key(11), 3)
    U = jax.random.normal(ks[0], (5, d))
    V = jnp.concatenate([jax.random.normal(ks[1], (3, d)), -U[3:4], 2.0 * U[4:5]])  # incl. +-
    X = jax.random.normal(ks[2], (n, d))
    prod = jax.nn.relu(X @ U.T) * jax.nn.relu(X @ V.T)  # (n, 5)
    mc, se = prod.mean(0), prod.std(0) / math.sqrt(n)
    exact = gflow.kernels.relu_cross(U, V)
    assert np.all(np.abs(exact - mc) < 5 * se + 1e-12)
    np.testing.assert_allclose(exact[3], 0.0, atol=1e-12)  # opposite directions
    np.testing.assert_allclose(exact[4], jnp.sum(U[4] ** 2), rtol=1e-12)  # k(u, 2u) = |u|^2
    # the same kernel as gflow.ntk's arc-cosine kernel of order 1 (which is 2 E[...])
    np.testing.assert_allclose(exact, 0.5 * jnp.diag(gflow.ntk.arccos_kernel(U, V)), rtol=1e-10)


def test_population_error_matches_monte_carlo(dtype):
    m, d, n = 9, 5, 100_000
    W0, W = _W0(0, m, d), _W0(1, m, d)
    X = jax.random.normal(jax.random.key(2), (n, d), dtype=W0.dtype)
    per = jnp.sum((jax.nn.relu(X @ W0.T) - jax.nn.relu(X @ W.T)) ** 2, -1)
    se = float(per.std() / math.sqrt(n))
    exact = float(lowrank.population_error(W0, W))
    assert abs(exact - float(lowrank.layer_error(W0, W, X))) < 5 * se
    assert float(lowrank.population_error(W0, W0)) < 10 * RTOL[dtype] * float(jnp.sum(W0**2))
    # relative error: exact 0 for W = W0, 1 for W = 0
    np.testing.assert_allclose(lowrank.relative_error(W0, 0 * W0), 1.0, rtol=RTOL[dtype])
    np.testing.assert_allclose(lowrank.relative_error(W0, 0 * W0, X), 1.0, rtol=RTOL[dtype])


# ------------------------------------------------------------------- initializations
@pytest.mark.parametrize("m,d", [(20, 8), (5, 9)])
def test_spectral_is_eckart_young(dtype, m, d):
    W0 = _W0(4, m, d)
    s = np.linalg.svd(np.asarray(W0, np.float64), compute_uv=False)
    for r in (1, 3, min(m, d)):
        U, V = lowrank.spectral(W0, r)
        assert U.shape == (m, r) and V.shape == (d, r)
        err = float(jnp.linalg.norm(W0 - U @ V.T))
        want = math.sqrt(float(np.sum(s[r:] ** 2)))
        assert abs(err - want) < 10 * RTOL[dtype] * s[0]
        # balanced: U^T U = V^T V = diag(top-r singular values)
        np.testing.assert_allclose(U.T @ U, np.diag(s[:r]), atol=10 * RTOL[dtype] * s[0])
        np.testing.assert_allclose(V.T @ V, np.diag(s[:r]), atol=10 * RTOL[dtype] * s[0])


@pytest.mark.parametrize("m,d", [(30, 6), (4, 7)])
def test_full_rank_recovers_W0(dtype, m, d):
    W0 = _W0(5, m, d)
    r = min(m, d)
    scale = float(jnp.max(jnp.abs(W0)))
    for method in ("spectral", "function"):
        U, V = getattr(lowrank, "spectral" if method == "spectral" else "function_space")(W0, r)
        np.testing.assert_allclose(U @ V.T, W0, atol=100 * RTOL[dtype] * scale)


def test_function_space_beats_spectral(dtype):
    """Population (closed form) and fresh-sample ReLU errors: function-space < spectral for
    every r < d, and the gap widens as r decreases (the paper's claim, here for one seed)."""
    m, d = 64, 16  # width super-linear in d: m = d^1.5
    W0 = _W0(6, m, d)
    X = jax.random.normal(jax.random.key(7), (20_000, d), dtype=W0.dtype)
    gaps = []
    for r in (1, 4):
        Us, Vs = lowrank.spectral(W0, r)
        Ws = Us @ Vs.T
        Uf, Vf = lowrank.function_space(W0, r)
        Wf = Uf @ Vf.T
        es, ef = lowrank.relative_error(W0, Ws), lowrank.relative_error(W0, Wf)
        assert ef < es
        # on a fixed sample of 2e4 fresh inputs the ordering holds too (population gaps
        # here are >= 0.005 in relative error; the sampling error is ~ 1e-3)
        assert lowrank.relative_error(W0, Wf, X) < lowrank.relative_error(W0, Ws, X)
        gaps.append(float(es - ef))
    assert gaps[0] > gaps[1] > 0


def test_function_space_compiles_once_per_shape():
    W0 = _W0(12, 10, 5)
    lowrank.function_space(W0, 1)
    before = lowrank._function_space_weight._cache_size()
    for r in (2, 3, 5):
        lowrank.function_space(W0, r, iters=r)  # rank and iters are traced
    assert lowrank._function_space_weight._cache_size() == before


def test_rescale_rows_is_optimal_within_the_subspace(x64):
    """The gradient of the population error w.r.t. W, restricted to rows in span(Q), vanishes
    at rescale_rows(W0, Q)."""
    W0 = _W0(8, 12, 6)
    Q = jnp.linalg.qr(jax.random.normal(jax.random.key(9), (6, 2)))[0]
    W = lowrank.rescale_rows(W0, Q)
    np.testing.assert_allclose(W @ Q @ Q.T, W, atol=1e-12)  # rows lie in span(Q)
    G = jax.grad(lambda W: lowrank.population_error(W0, W))(W)
    assert float(jnp.max(jnp.abs(G @ Q))) < 1e-10
    # and the closed-form error of the subspace problem matches the general one
    np.testing.assert_allclose(lowrank.subspace_error(W0, Q),
                               lowrank.population_error(W0, W), rtol=1e-12)


def test_reference_solver_at_least_as_good_on_tiny_case():
    """Adam from the spectral start and one random start (not from the practical solution)
    reaches an error <= the practical algorithm's, which is itself within 1% of it.
    (Same shapes and settings as the reference runs of tests/test_lowrank_init.py, so the
    compiled solver is shared.)"""
    for seed in (1, 3):
        W0 = _W0(seed, 8, 4)
        Us, Vs = lowrank.spectral(W0, 1)
        Uf, Vf = lowrank.function_space(W0, 1)
        Ur, Vr = lowrank.reference(W0, 1, jax.random.key(1), starts=[(Us, Vs)], n_random=1,
                                   steps=300)
        ef = float(lowrank.relative_error(W0, Uf @ Vf.T))
        er = float(lowrank.relative_error(W0, Ur @ Vr.T))
        es = float(lowrank.relative_error(W0, Us @ Vs.T))
        # float32 rounding of errors ~0.7: slack 1e-5
        assert er <= ef + 1e-5 and ef < es
        assert ef <= 1.01 * er


def test_factorize_keeps_outer_and_bias():
    net = gflow.TwoLayer(10, bias=True)
    p = gflow.init.gaussian(jax.random.key(0), net, 5)
    for method in ("spectral", "function"):
        q = lowrank.factorize(p, 2, method)
        assert q.U.shape == (10, 2) and q.V.shape == (5, 2)
        assert q.a is p.a and q.b is p.b
    with pytest.raises(ValueError, match="key"):
        lowrank.factorize(p, 2, "reference")
