"""Curvature: Lanczos eigenvalues, SLQ densities and preconditioned sharpness against exact
spectra (closed forms, ``eigh`` of the full Hessian, random-matrix laws)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import RTOL
from jax.flatten_util import ravel_pytree

import gflow
from gflow import curvature as cv
from gflow.nets import MaskedTwoLayer


class LinParams(eqx.Module):
    theta: jax.Array


class Linear(gflow.AbstractNet):
    """``f(x) = x . theta``: with squared loss and y = 0, L = theta^T (X^T X / n) theta / 2."""

    @property
    def prefactor(self):
        return 1.0

    def apply(self, p, X):
        return X @ p.theta

    def trainable(self, p):
        return LinParams(True)

    def check_params(self, p, d=None):
        pass


def _quadratic(eigs, key):
    """A linear net and data whose loss has Hessian Q diag(eigs) Q^T (eigs >= 0)."""
    n = len(eigs)
    Q = np.linalg.qr(np.random.default_rng(key).normal(size=(n, n)))[0]
    X = np.sqrt(n) * (Q * np.sqrt(eigs)).T  # X^T X / n = Q diag(eigs) Q^T
    dtype = jnp.result_type(float)
    obj = gflow.Objective(Linear(), "squared", jnp.asarray(X, dtype), jnp.zeros(n, dtype))
    return obj, LinParams(jnp.ones(n, dtype))


@eqx.filter_jit
def _dense_hessian(obj, params):
    x, unravel = ravel_pytree(params)
    return jax.hessian(lambda x: obj.loss(unravel(x)))(x)


def _full_hessian(obj, params, keep=None):
    """Dense Hessian of the loss over all flattened leaves, restricted to ``keep``."""
    H = np.asarray(_dense_hessian(obj, params))
    return H if keep is None else H[np.ix_(keep, keep)]


def test_lanczos_matrix_spectrum_with_breakdown(dtype):
    # symmetric indefinite matrix with a triple eigenvalue: Lanczos from one vector sees each
    # distinct eigenvalue once, breaks down, and restarts; with iters = n every eigenvalue
    # (with multiplicity) is a Ritz value
    eigs = np.array([5.0, 5.0, 5.0, 2.0, 1.0, 0.5, -1.0, -3.0])
    Q = np.linalg.qr(np.random.default_rng(0).normal(size=(8, 8)))[0]
    A = jnp.asarray(Q @ np.diag(eigs) @ Q.T, dtype)
    res = cv.lanczos(lambda v: A @ v, jnp.ones(8, dtype), 8)
    T = np.diag(res.alpha) + np.diag(res.beta, 1) + np.diag(res.beta, -1)
    tol = 50 * np.finfo(dtype).eps * 5
    np.testing.assert_allclose(np.linalg.eigvalsh(T), np.sort(eigs), atol=tol)
    np.testing.assert_allclose(np.asarray(res.V @ res.V.T), np.eye(8), atol=tol)
    with pytest.raises(ValueError, match="iters"):
        cv.lanczos(lambda v: A @ v, jnp.ones(8, dtype), 9)


def test_quadratic_exact_spectrum(dtype):
    eigs = np.linspace(0.1, 1.0, 12) ** 2 * np.r_[np.ones(11), 4.0]  # top 4.0, gap to 0.84
    obj, p = _quadratic(eigs, 0)
    top = np.sort(eigs)[::-1]
    # Ritz values of 12 = n steps are exact; with 8 steps the isolated top one converges
    # (gap ratio ~4: error ~ 4^-16 relative, far below rounding in float32)
    np.testing.assert_allclose(cv.top_eigs(obj, p, 4, iters=12), top[:4], rtol=RTOL[dtype])
    np.testing.assert_allclose(cv.sharpness(obj, p, iters=8), 4.0, rtol=RTOL[dtype])
    # iters beyond n is capped at n (the Krylov space is then the whole space)
    np.testing.assert_allclose(cv.top_eigs(obj, p, 2, iters=50), top[:2], rtol=RTOL[dtype])


@pytest.mark.parametrize("case", ["tanh_bias", pytest.param("relu", marks=pytest.mark.slow),
                                  pytest.param("mlp", marks=pytest.mark.slow), "fixed_outer",
                                  "masked"])
def test_small_nets_against_eigh(case, x64):
    ds = gflow.data.teacher(jax.random.key(0), 30, 3, 2)
    net = {"tanh_bias": gflow.TwoLayer(6, "tanh", bias=True),
           "relu": gflow.TwoLayer(6, "relu"),
           "mlp": gflow.MLP((5, 4), "tanh"),
           "fixed_outer": gflow.TwoLayer(6, "tanh", train_outer=False),
           "masked": gflow.TwoLayer(6, "tanh")}[case]
    p = gflow.init.gaussian(jax.random.key(1), net, 3)
    keep = None
    if case == "fixed_outer":  # leaves W (18), a (6): only W's coordinates are directions
        keep = np.arange(18)
    if case == "masked":  # neurons 4, 5 off: W rows and a entries of live neurons only
        mask = jnp.array([1.0, 1, 1, 1, 0, 0])
        net = MaskedTwoLayer(net, mask)
        keep = np.r_[np.arange(12), 18 + np.arange(4)]
    obj = gflow.Objective(net, "squared", ds.X, ds.y)
    ev = np.linalg.eigvalsh(_full_hessian(obj, p, keep))[::-1]
    n = ev.size
    assert cv.hessian_operator(obj, p).n == (n if case != "masked" else 24)
    # iters = number of live directions: exact up to rounding of the HVPs (float64)
    np.testing.assert_allclose(cv.top_eigs(obj, p, 3, iters=n), ev[:3], rtol=1e-9,
                               atol=1e-12)
    # a fixed budget of 20 steps: the top eigenvalue (gap >= 20% here) to 1e-6
    np.testing.assert_allclose(cv.sharpness(obj, p, iters=20), ev[0], rtol=1e-6)
    if case == "fixed_outer":  # the restriction matters: the unrestricted top eigenvalue differs
        assert abs(np.linalg.eigvalsh(_full_hessian(obj, p))[-1] - ev[0]) > 1e-3


def _at(params, i):
    """The ``i``-th of saved parameters (leading save axis)."""
    return jax.tree.map(lambda x: jnp.asarray(x[i]), params)


def _cdf_at(nodes, weights, x):
    """Averaged quadrature CDF sum_{l,i} w_li 1{theta_li <= x} / n_v at points x."""
    nodes, weights = np.asarray(nodes).ravel(), np.asarray(weights).ravel() / nodes.shape[0]
    order = np.argsort(nodes)
    c = np.cumsum(weights[order])
    return np.where(np.searchsorted(nodes[order], x, side="right") > 0,
                    c[np.maximum(np.searchsorted(nodes[order], x, side="right") - 1, 0)], 0.0)


def _law_cdf(pdf, lo, hi, x):
    t = np.linspace(lo, hi, 20001)
    c = np.concatenate([[0], np.cumsum((pdf(t[1:]) + pdf(t[:-1])) / 2 * np.diff(t))])
    return np.interp(x, t, c / c[-1])


def test_slq_semicircle(x64):
    # Wigner matrix W = (G + G^T) / sqrt(2N): spectral law -> semicircle on [-2, 2], whose
    # moments are Catalan numbers (m2 = 1, m4 = 2, m6 = 5). SLQ with k nodes matches each
    # probe's moments v^T W^p v up to p = 2k - 1 exactly, so the quadrature moments differ
    # from the law only by probe noise, std <= sqrt(2 m_2p / (N n_v)) (Rademacher
    # Hutchinson), and the finite-N bias, O(1/N).
    N, n_v, k = 1000, 8, 40
    G = jax.random.normal(jax.random.key(0), (N, N))
    W = (G + G.T) / jnp.sqrt(2 * N)
    nodes, weights = cv.slq(lambda v: W @ v, N, n_v=n_v, iters=k, key=jax.random.key(1))
    np.testing.assert_allclose(np.asarray(jnp.sum(weights, 1)), 1.0, rtol=1e-12)
    for p, m in ((2, 1.0), (4, 2.0), (6, 5.0)):
        est = float(jnp.mean(jnp.sum(weights * nodes**p, 1)))
        catalan2p = {2: 2.0, 4: 14.0, 6: 132.0}[p]
        tol = 4 * np.sqrt(2 * catalan2p / (N * n_v)) + 3 * m * p / N
        assert abs(est - m) < tol, (p, est, tol)
    # Kolmogorov distance of the quadrature CDF to the semicircle CDF: each probe's CDF
    # is within its largest Gauss weight (<= 2/(k+1) for the semicircle) of its own
    # spectral CDF (Chebyshev-Markov-Stieltjes), plus probe noise 4 sqrt(2/(N n_v)) = 0.06
    x = np.linspace(-2.2, 2.2, 441)
    F = _law_cdf(lambda t: np.sqrt(np.clip(4 - t**2, 0, None)) / (2 * np.pi), -2, 2, x)
    ks = np.max(np.abs(_cdf_at(nodes, weights, x) - F))
    assert ks < 2 / (k + 1) + 4 * np.sqrt(2 / (N * n_v)), ks
    # the smoothed density integrates to 1 and is close to the semicircle in L1
    grid = np.linspace(-3, 3, 601)
    dens = np.asarray(cv.density(nodes, weights, grid, sigma=0.1))
    np.testing.assert_allclose(np.trapezoid(dens, grid), 1.0, atol=1e-6)
    sc = np.sqrt(np.clip(4 - grid**2, 0, None)) / (2 * np.pi)
    assert np.trapezoid(np.abs(dens - sc), grid) < 0.1  # smoothing at the edges: ~0.05


def test_slq_marchenko_pastur(x64):
    # S = X^T X / n for X (n, N) iid N(0, 1), q = N / n: Marchenko-Pastur law on
    # [(1 - sqrt q)^2, (1 + sqrt q)^2], moments m1 = 1, m2 = 1 + q, m3 = 1 + 3q + q^2
    n, N, n_v, k = 1600, 400, 8, 40
    q = N / n
    X = jax.random.normal(jax.random.key(2), (n, N))
    nodes, weights = cv.slq(lambda v: X.T @ (X @ v) / n, N, n_v=n_v, iters=k,
                            key=jax.random.key(3))
    for p, m in ((1, 1.0), (2, 1 + q), (3, 1 + 3 * q + q**2)):
        est = float(jnp.mean(jnp.sum(weights * nodes**p, 1)))
        # probe noise with ||S^p||_F^2 / N <= m_2p <= 8 here, finite-N bias O(p/N)
        assert abs(est - m) < 4 * np.sqrt(2 * 8 / (N * n_v)) + 3 * p / N, (p, est)
    a, b = (1 - np.sqrt(q)) ** 2, (1 + np.sqrt(q)) ** 2
    x = np.linspace(0, 2.5, 501)
    F = _law_cdf(lambda t: np.sqrt(np.clip((b - t) * (t - a), 0, None)) / (2 * np.pi * q * t),
                 a, b, x)
    ks = np.max(np.abs(_cdf_at(nodes, weights, x) - F))
    # Gauss weights of MP are not bounded by 2/(k+1) (heavier near the lower edge): 3/(k+1)
    assert ks < 3 / (k + 1) + 4 * np.sqrt(2 / (N * n_v)), ks


def test_hessian_density_of_quadratic(x64):
    eigs = np.r_[np.full(10, 1.0), np.full(6, 3.0)]  # density 5/8 at 1, 3/8 at 3
    obj, p = _quadratic(eigs, 4)
    r = cv.hessian_density(obj, p, grid=np.linspace(0, 4, 401), sigma=0.05, n_v=16, iters=8)
    mass1 = np.trapezoid(np.where(r.grid < 2, r.density, 0), r.grid)
    # the weights per probe sum the probe's squared projections: Hutchinson noise
    # std sqrt(2 * 10 * 6 / 16^2 / 16) ~ 0.06 on the mass at 1
    assert abs(mass1 - 10 / 16) < 0.2
    np.testing.assert_allclose(np.sort(np.unique(np.round(np.asarray(r.nodes)[
        np.asarray(r.weights) > 1e-8], 6))), [1.0, 3.0], atol=1e-6)
    r2 = cv.hessian_density(obj, p, grid=50, n_v=2, iters=4)
    assert r2.grid.shape == (50,) and r2.grid[0] < 1 < 3 < r2.grid[-1]


_slow = pytest.mark.slow


@pytest.mark.parametrize(("dyn", "dtype"), [
    ("gd", "float32"), pytest.param("gd", "float64", marks=_slow),
    pytest.param("gf", "float32", marks=_slow), pytest.param("gf", "float64", marks=_slow)])
def test_observables_in_simulate_match_post_hoc(dyn, dtype):
    with jax.enable_x64(dtype == "float64"):
        _simulate_vs_post_hoc(dyn, dtype)


def _simulate_vs_post_hoc(dyn, dtype):
    ds = gflow.data.teacher(jax.random.key(0), 24, 3, 2)
    net = gflow.TwoLayer(6, "tanh", bias=True)
    p0 = gflow.init.gaussian(jax.random.key(1), net, 3)
    dynamics = gflow.GD(0.2) if dyn == "gd" else gflow.GradientFlow(rtol=1e-5)
    slq = ("hessian_slq",) if dyn == "gf" else ()  # SLQ itself: test_slq_*; compile time
    tr = gflow.simulate(net, p0, ds, dynamics=dynamics, t1=2.0, save=gflow.LinTimes(4),
                        observe=("loss", "sharpness", cv.TopEigs(k=2, iters=15)) + slq,
                        save_params=True)
    assert tr["top_eigs"].shape == (4, 2)
    assert tr.to_xarray()["top_eigs"].dims == ("time", "eig")
    obj = gflow.Objective(net, "squared", ds.X, ds.y)
    # same algorithm and start vector post hoc: equal up to rounding (other compiled program)
    post = cv.top_eigs_along(obj, tr.params, 2, iters=15, warm=False)
    np.testing.assert_allclose(tr["top_eigs"], post, rtol=10 * RTOL[dtype])
    post1 = cv.top_eigs_along(obj, tr.params, 1, iters=20, warm=False)[:, 0]
    np.testing.assert_allclose(tr["sharpness"], post1, rtol=10 * RTOL[dtype])
    # and against the exact top eigenvalue at the saved parameters
    for i in (0, 3):
        p = _at(tr.params, i)
        ev = np.linalg.eigvalsh(_full_hessian(obj, p))[::-1]
        np.testing.assert_allclose(tr["top_eigs"][i], ev[:2], rtol=1e-3)
    if slq:
        assert tr["hessian_slq"].shape == (4, 2, 4, 30)
        np.testing.assert_allclose(tr["hessian_slq"][:, 1].sum(-1), 1.0, rtol=1e-5)


def test_warm_start_along_trajectory(x64):
    # with 4 Lanczos steps per save, starting from the previous save's top Ritz vector
    # is far more accurate than a fresh random start (the top eigenvector moves little)
    ds = gflow.data.teacher(jax.random.key(0), 30, 4, 2)
    net = gflow.TwoLayer(10, "tanh")
    p0 = gflow.init.gaussian(jax.random.key(1), net, 4)
    tr = gflow.simulate(net, p0, ds, dynamics=gflow.GD(0.1), t1=5.0, save=gflow.LinTimes(20),
                        observe=("loss",), save_params=True)
    obj = gflow.Objective(net, "squared", ds.X, ds.y)
    exact = np.array([np.linalg.eigvalsh(_full_hessian(
        obj, _at(tr.params, i)))[-1] for i in range(0, 20, 2)])
    warm = np.asarray(cv.top_eigs_along(obj, tr.params, iters=4, every=2))[:, 0]
    cold = np.asarray(cv.top_eigs_along(obj, tr.params, iters=4, every=2, warm=False))[:, 0]
    assert warm.shape == (10,)
    err_w, err_c = np.abs(warm - exact)[3:] / exact[3:], np.abs(cold - exact)[3:] / exact[3:]
    assert np.all(warm <= exact * (1 + 1e-10)) and np.all(cold <= exact * (1 + 1e-10))
    # measured: warm 2e-7 .. 2e-4, cold ~6e-2
    assert np.max(err_w) < 1e-3 and np.max(err_w) < 0.01 * np.min(err_c), (err_w, err_c)


def test_preconditioned_sharpness_and_adam_threshold(x64):
    ds = gflow.data.teacher(jax.random.key(0), 20, 3, 2)
    net = gflow.TwoLayer(5, "tanh", bias=True)
    p = gflow.init.gaussian(jax.random.key(1), net, 3)
    obj = gflow.Objective(net, "squared", ds.X, ds.y)
    # an optax adam state after 3 steps: P from it reproduces optax's update
    opt = optax.adam(0.01)
    state = opt.init(p)
    q = p
    for _ in range(3):
        g = obj.grad(q)
        upd, state = opt.update(g, state, q)
        q = optax.apply_updates(q, upd)
    P = cv.adam_preconditioner(state)
    mu = state[0].mu
    expect = jax.tree.map(lambda m, pp: -0.01 * m / pp, mu, P)
    assert all(np.allclose(a, b, rtol=1e-10) for a, b in
               zip(jax.tree.leaves(expect), jax.tree.leaves(upd), strict=True))
    # lambda_1(P^-1 H) against eigh of the dense P^-1/2 H P^-1/2
    H = _full_hessian(obj, q)
    s = 1 / np.sqrt(ravel_pytree(P)[0])
    ev = np.linalg.eigvalsh(s[:, None] * H * s[None, :])[-1]
    np.testing.assert_allclose(cv.preconditioned_sharpness(obj, q, P, iters=28), ev,
                               rtol=1e-9)
    # the threshold: EMA momentum with a frozen P on L = lam theta^2 / 2 (lam the
    # preconditioned curvature) is stable below (2 + 2 b1) / ((1 - b1) lr), unstable above
    lr, b1 = 0.01, 0.9
    thr = cv.adam_threshold(lr, b1)
    assert thr == pytest.approx(38 / lr)
    for factor, stable in ((0.98, True), (1.02, False)):
        lam, th, m = factor * thr, 1.0, 0.0
        for _ in range(3000):
            m = b1 * m + (1 - b1) * lam * th
            th = th - lr * m
        assert (abs(th) < 1) == stable


def test_bad_arguments():
    with pytest.raises(ValueError, match="k must be"):
        cv.TopEigs(k=0)
    with pytest.raises(ValueError, match="iters >= k"):
        cv.TopEigs(k=5, iters=3)
    with pytest.raises(ValueError, match="grid must be"):
        cv.HessianDensity([1.0, 0.0])
    with pytest.raises(ValueError, match="sigma"):
        cv.HessianDensity([0.0, 1.0], sigma=0)
    obj, p = _quadratic(np.ones(3), 0)
    with pytest.raises(ValueError, match="k must be between"):
        cv.top_eigs(obj, p, 5)
    with pytest.raises(ValueError, match="ScaleByAdamState"):
        cv.adam_preconditioner(optax.sgd(0.1).init(p))
